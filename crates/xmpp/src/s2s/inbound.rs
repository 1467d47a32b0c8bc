//! Streams a peer server opens to the gateway: the gateway is the receiving server (offers
//! STARTTLS, SASL EXTERNAL and dialback), answers `db:verify` for every served domain, and turns
//! stanzas of authorised pairs into canonical events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use jid::Jid;
use minidom::Element;

use super::{rng, CloseReason, Config, Core, DialbackRequest, DomainPair, Output, Security};
use crate::dialback::{key_is_valid, parse_domain, DbResult, DbVerify, DialbackType};
use crate::error::StreamCondition;
use crate::ns;
use crate::reader::{ReadEvent, StreamHeader};
use crate::sasl::{self, Auth, SaslError};
use crate::translate::{self, Incoming};
use crate::writer::Features;

/// A stream opened by a peer server. See the crate documentation for the driving loop.
pub struct Inbound {
    core: Core,
    state: State,
}

enum State {
    PlainHeader(PlainHeader),
    PlainFeatures(PlainFeatures),
    TlsPending(TlsPending),
    SecureHeader(SecureHeader),
    Open(Open),
    Closed,
}

/// What one stream header established.
#[derive(Debug, Clone)]
struct StreamInfo {
    id: String,
    /// The served domain the peer addressed.
    local: String,
    /// The domain the peer claimed in `from`, if any.
    peer: Option<String>,
    /// `version='1.0'` (RFC 6120); without it (a pre-RFC 3920 dialback-only server) there are no
    /// stream features, hence no STARTTLS.
    modern: bool,
}

/// Waiting for the first stream header, before TLS.
struct PlainHeader;

/// Features with a required STARTTLS were sent; only `<starttls/>` is acceptable.
struct PlainFeatures;

/// `<proceed/>` was sent; the driver runs the handshake and nothing is read meanwhile.
struct TlsPending;

/// Waiting for the stream header that restarts the stream after TLS or SASL.
struct SecureHeader {
    security: Security,
    sasl: Option<DomainPair>,
}

/// Features were sent on a stream that may carry authentication and stanzas.
struct Open {
    security: Security,
    stream: StreamInfo,
    /// The pair SASL EXTERNAL authenticated, if any.
    sasl: Option<DomainPair>,
    /// Pairs authorised by dialback.
    pairs: BTreeSet<DomainPair>,
    /// Pairs whose key is with the authoritative server.
    verifying: BTreeSet<DomainPair>,
}

/// The outcome of reading one stream header.
enum Header {
    Accepted(StreamInfo),
    Refused,
}

fn accept_header(core: &mut Core, header: StreamHeader) -> Header {
    let id = core.new_id();
    let local = header.to.as_deref().and_then(parse_domain);
    let peer = header.from.as_deref().map(parse_domain);
    // RFC 6120 §4.9.1.1: a header goes out before any stream error.
    let reply_from = local.clone().unwrap_or_default();
    let reply_to = match &peer {
        Some(Some(p)) => p.clone(),
        _ => String::new(),
    };
    core.write_header(&reply_from, &reply_to, Some(&id));
    let Some(local) = local.filter(|l| core.cfg.serves(l)) else {
        core.fail(StreamCondition::HostUnknown);
        return Header::Refused;
    };
    let peer = match peer {
        None => None,
        Some(Some(p)) => Some(p),
        Some(None) => {
            core.fail(StreamCondition::InvalidFrom);
            return Header::Refused;
        }
    };
    let modern = header
        .version
        .as_deref()
        .is_some_and(|v| v.starts_with("1."));
    Header::Accepted(StreamInfo {
        id,
        local,
        peer,
        modern,
    })
}

impl PlainHeader {
    fn on_header(self, core: &mut Core, header: StreamHeader) -> State {
        let Header::Accepted(stream) = accept_header(core, header) else {
            return State::Closed;
        };
        if !stream.modern {
            return match Security::plaintext(&core.cfg) {
                // An old server: no features, dialback straight away.
                Some(security) => State::Open(Open::new(security, stream, None)),
                None => {
                    core.fail(StreamCondition::UnsupportedVersion);
                    State::Closed
                }
            };
        }
        match Security::plaintext(&core.cfg) {
            None => {
                core.write(
                    &Features {
                        starttls: Some(true),
                        ..Features::default()
                    }
                    .to_bytes(),
                );
                State::PlainFeatures(PlainFeatures)
            }
            Some(security) => {
                core.write(
                    &Features {
                        starttls: core.cfg.offer_tls.then_some(false),
                        sasl_external: false,
                        dialback: true,
                    }
                    .to_bytes(),
                );
                State::Open(Open::new(security, stream, None))
            }
        }
    }
}

impl PlainFeatures {
    fn on_element(self, core: &mut Core, el: Element) -> State {
        if el.is("starttls", ns::TLS) {
            return start_tls(core);
        }
        if el.is("error", ns::STREAM) {
            return on_stream_error(core, &el);
        }
        // Anything before TLS (a dialback key, a stanza) is refused, never kept for later.
        core.fail(StreamCondition::PolicyViolation);
        State::Closed
    }
}

fn start_tls(core: &mut Core) -> State {
    core.write(format!("<proceed xmlns='{}'/>", ns::TLS).as_bytes());
    core.output(Output::StartTls);
    State::TlsPending(TlsPending)
}

fn on_stream_error(core: &mut Core, el: &Element) -> State {
    let condition = super::received_condition(el);
    core.finish(CloseReason::Received(condition), true);
    State::Closed
}

impl TlsPending {
    fn established(self, core: &mut Core, peer_identities: Vec<String>) -> State {
        core.restart_reader();
        State::SecureHeader(SecureHeader {
            security: Security::tls(peer_identities),
            sasl: None,
        })
    }
}

impl SecureHeader {
    fn on_header(self, core: &mut Core, header: StreamHeader) -> State {
        let Header::Accepted(stream) = accept_header(core, header) else {
            return State::Closed;
        };
        if !stream.modern {
            // Only an RFC 6120 peer gets this far (it negotiated TLS or SASL).
            core.fail(StreamCondition::UnsupportedVersion);
            return State::Closed;
        }
        let offer_external = self.sasl.is_none()
            && stream
                .peer
                .as_deref()
                .is_some_and(|p| self.security.certifies(p));
        core.write(
            &Features {
                starttls: None,
                sasl_external: offer_external,
                dialback: true,
            }
            .to_bytes(),
        );
        if let Some(pair) = &self.sasl {
            core.output(Output::Authorised(pair.clone()));
        }
        State::Open(Open::new(self.security, stream, self.sasl))
    }
}

impl Open {
    fn new(security: Security, stream: StreamInfo, sasl: Option<DomainPair>) -> Open {
        Open {
            security,
            stream,
            sasl,
            pairs: BTreeSet::new(),
            verifying: BTreeSet::new(),
        }
    }

    fn authorised(&self, pair: &DomainPair) -> bool {
        self.sasl.as_ref() == Some(pair) || self.pairs.contains(pair)
    }

    fn on_element(self, core: &mut Core, el: Element) -> State {
        match (el.ns().as_str(), el.name()) {
            (ns::CLIENT, "message" | "presence" | "iq") => self.on_stanza(core, el),
            (ns::DIALBACK, "result") => self.on_db_result(core, &el),
            (ns::DIALBACK, "verify") => {
                answer_verify(core, &el);
                State::Open(self)
            }
            (ns::SASL, "auth") => self.on_auth(core, &el),
            (ns::TLS, "starttls") => {
                if !self.security.tls && self.pairs.is_empty() && self.verifying.is_empty() {
                    start_tls(core)
                } else {
                    core.fail(StreamCondition::PolicyViolation);
                    State::Closed
                }
            }
            (ns::STREAM, "error") => on_stream_error(core, &el),
            _ => {
                core.fail(StreamCondition::UnsupportedStanzaType);
                State::Closed
            }
        }
    }

    fn on_auth(self, core: &mut Core, el: &Element) -> State {
        let may_authenticate = self.security.tls
            && self.sasl.is_none()
            && self.pairs.is_empty()
            && self.verifying.is_empty();
        if !may_authenticate {
            core.write(&sasl::failure("not-authorized"));
            return State::Open(self);
        }
        let identity = match Auth::try_from(el) {
            Ok(Auth {
                authzid: Some(domain),
            }) => Some(domain),
            Ok(Auth { authzid: None }) => self.stream.peer.clone(),
            Err(SaslError::InvalidMechanism) => {
                core.write(&sasl::failure("invalid-mechanism"));
                return State::Open(self);
            }
            Err(SaslError::MalformedRequest) => {
                core.write(&sasl::failure("malformed-request"));
                return State::Open(self);
            }
        };
        match identity.filter(|d| self.security.certifies(d)) {
            Some(domain) => {
                core.write(&sasl::success());
                core.restart_reader();
                State::SecureHeader(SecureHeader {
                    security: self.security,
                    sasl: Some(DomainPair {
                        local: self.stream.local,
                        remote: domain,
                    }),
                })
            }
            None => {
                core.write(&sasl::failure("not-authorized"));
                State::Open(self)
            }
        }
    }

    fn on_db_result(mut self, core: &mut Core, el: &Element) -> State {
        let request = match DbResult::try_from(el) {
            Ok(r) => r,
            Err(_) => {
                core.fail(StreamCondition::BadFormat);
                return State::Closed;
            }
        };
        let Some(key) = request.key else {
            // An answer to a request we never make on an inbound stream.
            core.fail(StreamCondition::UnsupportedStanzaType);
            return State::Closed;
        };
        let pair = DomainPair {
            local: request.to.clone(),
            remote: request.from.clone(),
        };
        if !core.cfg.serves(&pair.local) {
            // XEP-0220 §2.4 with dialback errors: the stream stays up.
            core.write(
                &DbResult {
                    from: request.to,
                    to: request.from,
                    key: None,
                    type_: Some(DialbackType::Error),
                }
                .to_bytes(),
            );
            return State::Open(self);
        }
        if self.authorised(&pair) {
            core.write(&answer(&pair, DialbackType::Valid));
            return State::Open(self);
        }
        if self.pairs.len() + self.verifying.len() >= core.cfg.max_pairs_per_stream {
            core.fail(StreamCondition::PolicyViolation);
            return State::Closed;
        }
        if self.security.certifies(&pair.remote) {
            // The certificate already proves the domain (XEP-0344 §2.3): no callback needed.
            core.write(&answer(&pair, DialbackType::Valid));
            self.pairs.insert(pair.clone());
            core.output(Output::Authorised(pair));
            return State::Open(self);
        }
        if self.verifying.insert(pair.clone()) {
            core.output(Output::VerifyDialback(DialbackRequest {
                originating: pair.remote,
                receiving: pair.local,
                stream_id: self.stream.id.clone(),
                key,
            }));
        }
        State::Open(self)
    }

    fn on_verified(mut self, core: &mut Core, request: &DialbackRequest, valid: bool) -> State {
        let pair = DomainPair {
            local: request.receiving.clone(),
            remote: request.originating.clone(),
        };
        if request.stream_id != self.stream.id || !self.verifying.remove(&pair) {
            return State::Open(self);
        }
        if valid {
            core.write(&answer(&pair, DialbackType::Valid));
            self.pairs.insert(pair.clone());
            core.output(Output::Authorised(pair));
            State::Open(self)
        } else {
            // A forged key: say so, then end the stream (XEP-0220 §2.3.3).
            core.write(&answer(&pair, DialbackType::Invalid));
            core.fail(StreamCondition::NotAuthorized);
            State::Closed
        }
    }

    fn on_stanza(self, core: &mut Core, el: Element) -> State {
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            core.fail(StreamCondition::ImproperAddressing);
            return State::Closed;
        };
        let Ok(from) = Jid::new(from) else {
            core.fail(StreamCondition::InvalidFrom);
            return State::Closed;
        };
        let Ok(to) = Jid::new(to) else {
            core.fail(StreamCondition::ImproperAddressing);
            return State::Closed;
        };
        let pair = DomainPair {
            local: to.domain().as_str().to_string(),
            remote: from.domain().as_str().to_string(),
        };
        if !core.cfg.serves(&pair.local) {
            core.fail(StreamCondition::HostUnknown);
            return State::Closed;
        }
        if !self.authorised(&pair) {
            // RFC 6120 §4.9.3.9: never deliver a stanza from a domain not authenticated here.
            core.fail(StreamCondition::InvalidFrom);
            return State::Closed;
        }
        let ctx = translate::Context {
            served: &core.cfg.served,
            max_body_bytes: core.cfg.max_body_bytes,
            now: (core.cfg.wall_clock)(),
        };
        match translate::incoming(el, &from, &to, &ctx) {
            Incoming::Event(e) => {
                if let (entente_model::Event::Message(m), Some(resource)) = (&e, from.resource()) {
                    if !m.id.is_empty() {
                        let full = format!("{}/{}", m.from, resource.as_str());
                        if let Ok(mut senders) = core.cfg.senders.lock() {
                            senders.record(m.from.to_string(), m.id.clone(), full);
                        }
                    }
                }
                core.output(Output::Event(e))
            }
            Incoming::Reply(r) => core.output(Output::Reply(r)),
            Incoming::Ignored(_) => {}
        }
        State::Open(self)
    }
}

fn answer(pair: &DomainPair, type_: DialbackType) -> Vec<u8> {
    DbResult {
        from: pair.local.clone(),
        to: pair.remote.clone(),
        key: None,
        type_: Some(type_),
    }
    .to_bytes()
}

/// Answers a `db:verify` for any served domain; keys are stateless (XEP-0185), so no record of
/// what was sent is needed.
fn answer_verify(core: &mut Core, el: &Element) {
    let Ok(request) = DbVerify::try_from(el) else {
        core.fail(StreamCondition::BadFormat);
        return;
    };
    let Some(key) = &request.key else {
        core.fail(StreamCondition::UnsupportedStanzaType);
        return;
    };
    // `from` is the peer (the receiving server), `to` the served domain that originated the key.
    let type_ = if !core.cfg.serves(&request.to) {
        DialbackType::Error
    } else if key_is_valid(
        &core.cfg.dialback_secret,
        &request.from,
        &request.to,
        &request.id,
        key,
    ) {
        DialbackType::Valid
    } else {
        DialbackType::Invalid
    };
    core.write(
        &DbVerify {
            from: request.to,
            to: request.from,
            id: request.id,
            key: None,
            type_: Some(type_),
        }
        .to_bytes(),
    );
}

impl Inbound {
    /// A stream accepted by the listener at `now`.
    pub fn new(cfg: Arc<Config>, now: Instant) -> Inbound {
        Self::with_seed(cfg, now, None)
    }

    /// As [`Inbound::new`], with stream ids drawn from a seeded generator (for reproducible tests).
    pub fn with_seed(cfg: Arc<Config>, now: Instant, seed: Option<u64>) -> Inbound {
        Inbound {
            core: Core::new(cfg, now, rng(seed), false),
            state: State::PlainHeader(PlainHeader),
        }
    }

    /// Bytes received from the peer (after TLS: the decrypted bytes).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.core.now = now;
        self.core.last_rx = now;
        let mut input = bytes;
        while !self.core.closed {
            if matches!(self.state, State::TlsPending(_) | State::Closed) {
                // Plaintext injected behind <starttls/> is dropped, never read after TLS.
                break;
            }
            let item = match self.core.reader.read(&mut input) {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    self.core.fail(StreamCondition::from(&e));
                    break;
                }
            };
            let state = std::mem::replace(&mut self.state, State::Closed);
            self.state = self.on_item(state, item);
        }
        self.core.note_partial();
        self.sync_closed();
    }

    fn on_item(&mut self, state: State, item: ReadEvent) -> State {
        let core = &mut self.core;
        match (state, item) {
            (_, ReadEvent::End) => {
                core.finish(CloseReason::Normal, true);
                State::Closed
            }
            (State::PlainHeader(s), ReadEvent::Header(h)) => s.on_header(core, h),
            (State::SecureHeader(s), ReadEvent::Header(h)) => s.on_header(core, h),
            (State::PlainFeatures(s), ReadEvent::Element(el)) => s.on_element(core, el),
            (State::Open(s), ReadEvent::Element(el)) => s.on_element(core, el),
            // The reader yields a header first and only once; nothing else can arrive here.
            (_, _) => {
                core.fail(StreamCondition::InternalServerError);
                State::Closed
            }
        }
    }

    /// The connection ended (EOF or reset).
    pub fn handle_eof(&mut self, now: Instant) {
        self.core.now = now;
        self.core.finish(CloseReason::Eof, false);
        self.state = State::Closed;
    }

    /// The TLS handshake requested by [`Output::StartTls`] succeeded. `peer_identities` are the
    /// domains the peer's certificate was verified for (RFC 6125); empty when it presented none
    /// or it did not verify — dialback then authenticates the peer.
    pub fn tls_established(&mut self, peer_identities: Vec<String>, now: Instant) {
        self.core.now = now;
        self.core.last_rx = now;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::TlsPending(s) => s.established(&mut self.core, peer_identities),
            other => other,
        };
    }

    /// The TLS handshake failed: the stream is over.
    pub fn tls_failed(&mut self, now: Instant) {
        self.core.now = now;
        self.core.finish(CloseReason::TlsFailed, false);
        self.state = State::Closed;
    }

    /// The authoritative server's answer for a [`Output::VerifyDialback`] of this stream.
    pub fn dialback_verified(&mut self, request: &DialbackRequest, valid: bool, now: Instant) {
        self.core.now = now;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::Open(s) => s.on_verified(&mut self.core, request, valid),
            other => other,
        };
        self.sync_closed();
    }

    /// Ends the stream gracefully (`</stream:stream>`).
    pub fn close(&mut self, now: Instant) {
        self.core.now = now;
        self.core.finish(CloseReason::Normal, true);
        self.state = State::Closed;
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// When [`Inbound::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::TlsPending(_)) {
            // The driver's handshake has its own timeout; the stream still may not idle forever.
            return Some(self.core.started + self.core.cfg.negotiation_timeout);
        }
        self.core.deadline(self.ready())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let ready = self.ready();
        if matches!(self.state, State::TlsPending(_)) {
            self.core.now = now;
            if now >= self.core.started + self.core.cfg.negotiation_timeout {
                self.core
                    .finish(CloseReason::Sent(StreamCondition::ConnectionTimeout), false);
            }
        } else {
            self.core.on_timeout(now, ready);
        }
        self.sync_closed();
    }

    pub fn is_closed(&self) -> bool {
        self.core.closed
    }

    /// The pair SASL EXTERNAL authenticated on this stream, if any: every other
    /// [`Output::Authorised`] pair was authorised by dialback.
    pub fn sasl_pair(&self) -> Option<&DomainPair> {
        match &self.state {
            State::Open(open) => open.sasl.as_ref(),
            _ => None,
        }
    }

    /// The id of the current stream, once its header was answered.
    pub fn stream_id(&self) -> Option<&str> {
        match &self.state {
            State::Open(o) => Some(&o.stream.id),
            _ => None,
        }
    }

    fn ready(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    fn sync_closed(&mut self) {
        if self.core.closed {
            self.state = State::Closed;
        }
    }
}
