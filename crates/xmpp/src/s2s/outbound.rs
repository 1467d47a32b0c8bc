//! Streams the gateway opens to a peer server: the gateway is the initiating server (STARTTLS,
//! then SASL EXTERNAL if offered, else dialback per domain pair), writes stanzas for authorised
//! pairs from canonical events, and carries `db:verify` requests for inbound streams.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use entente_model::{ErrorCode, Event};
use minidom::Element;

use super::{rng, CloseReason, Config, Core, DialbackRequest, DomainPair, Output, Security};
use crate::dialback::{dialback_key, parse_domain, DbResult, DbVerify, DialbackType};
use crate::error::StreamCondition;
use crate::ns;
use crate::reader::{ReadEvent, StreamHeader};
use crate::sasl::Auth;
use crate::translate::{self, Reply, TranslateError};
use crate::writer::{self, Features};

/// Why [`Outbound::send`] refused an event at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the sender's domain {0} is not served by this gateway")]
    NotServed(String),
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error("too many events queued for {0:?}")]
    QueueFull(DomainPair),
    #[error("the stream is closed")]
    Closed,
}

/// A stream to a peer server. See the crate documentation for the driving loop.
pub struct Outbound {
    core: Core,
    state: State,
    /// The served domain in the first stream header.
    local: String,
    /// The peer domain the stream was opened to.
    remote: String,
    /// Stanzas waiting for their pair, with when the wait began.
    queue: BTreeMap<DomainPair, Pending>,
    /// `db:verify` requests waiting for the stream to be ready.
    verify_queue: Vec<DialbackRequest>,
}

struct Pending {
    since: Instant,
    items: Vec<Queued>,
    key_sent: bool,
}

enum Queued {
    Event(Event, Element),
    Reply(Reply),
}

/// How far the stream has come when a stream header is awaited.
enum Phase {
    Plain,
    Secured(Security),
    Authenticated(Security, DomainPair),
}

enum State {
    AwaitHeader(AwaitHeader),
    AwaitFeatures(AwaitFeatures),
    StartTlsSent(StartTlsSent),
    TlsPending(TlsPending),
    SaslSent(SaslSent),
    Open(Open),
    Closed,
}

/// Our header is out; the peer's is awaited.
struct AwaitHeader {
    phase: Phase,
}

/// The peer's header arrived; its features are awaited.
struct AwaitFeatures {
    phase: Phase,
    stream_id: Option<String>,
}

/// `<starttls/>` sent; `<proceed/>` awaited.
struct StartTlsSent;

/// `<proceed/>` received; the driver runs the handshake.
struct TlsPending;

/// `<auth mechanism='EXTERNAL'/>` sent.
struct SaslSent {
    security: Security,
    stream_id: Option<String>,
    pair: DomainPair,
}

/// The stream may carry dialback and stanzas for authorised pairs.
struct Open {
    /// Kept as the proof the stream is secured (or allowed plaintext).
    #[allow(dead_code)]
    security: Security,
    /// The peer's stream id, the input to our dialback keys.
    stream_id: Option<String>,
    /// The pair SASL EXTERNAL authenticated, if any; the others are authorised by dialback.
    sasl: Option<DomainPair>,
    authorised: BTreeSet<DomainPair>,
    /// `db:verify` requests sent, by (peer-facing from, to, id).
    verifies: Vec<DialbackRequest>,
}

impl AwaitHeader {
    fn on_header(self, core: &mut Core, header: StreamHeader, remote: &str) -> State {
        if let Some(from) = &header.from {
            if parse_domain(from).as_deref() != Some(remote) {
                core.fail(StreamCondition::InvalidFrom);
                return State::Closed;
            }
        }
        let modern = header
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("1."));
        if !modern {
            // An old dialback-only server sends no features.
            return match (self.phase, Security::plaintext(&core.cfg)) {
                (Phase::Plain, Some(security)) => {
                    State::Open(Open::new(security, header.id, None, core))
                }
                _ => {
                    core.fail(StreamCondition::UnsupportedVersion);
                    State::Closed
                }
            };
        }
        State::AwaitFeatures(AwaitFeatures {
            phase: self.phase,
            stream_id: header.id,
        })
    }
}

impl AwaitFeatures {
    fn on_features(self, core: &mut Core, el: &Element, local: &str, remote: &str) -> State {
        let features = Features::parse(el);
        match self.phase {
            Phase::Plain => {
                let can_tls = core.cfg.offer_tls || core.cfg.require_tls;
                if features.starttls.is_some() && can_tls {
                    core.write(format!("<starttls xmlns='{}'/>", ns::TLS).as_bytes());
                    return State::StartTlsSent(StartTlsSent);
                }
                if features.starttls == Some(true) {
                    // The peer requires TLS and this driver cannot do it.
                    core.fail(StreamCondition::PolicyViolation);
                    return State::Closed;
                }
                match Security::plaintext(&core.cfg) {
                    Some(security) => State::Open(Open::new(security, self.stream_id, None, core)),
                    None => {
                        // The peer cannot secure the stream and the policy requires it.
                        core.fail(StreamCondition::PolicyViolation);
                        State::Closed
                    }
                }
            }
            Phase::Secured(security) => {
                if features.sasl_external {
                    core.write(
                        &Auth {
                            authzid: Some(local.to_string()),
                        }
                        .to_bytes(),
                    );
                    State::SaslSent(SaslSent {
                        security,
                        stream_id: self.stream_id,
                        pair: DomainPair {
                            local: local.to_string(),
                            remote: remote.to_string(),
                        },
                    })
                } else {
                    State::Open(Open::new(security, self.stream_id, None, core))
                }
            }
            Phase::Authenticated(security, pair) => {
                State::Open(Open::new(security, self.stream_id, Some(pair), core))
            }
        }
    }
}

impl StartTlsSent {
    fn on_element(self, core: &mut Core, el: &Element) -> State {
        if el.is("proceed", ns::TLS) {
            core.output(Output::StartTls);
            return State::TlsPending(TlsPending);
        }
        core.fail(StreamCondition::PolicyViolation);
        State::Closed
    }
}

impl TlsPending {
    fn established(
        self,
        core: &mut Core,
        peer_identities: Vec<String>,
        local: &str,
        remote: &str,
    ) -> State {
        core.restart_reader();
        core.write_header(local, remote, None);
        State::AwaitHeader(AwaitHeader {
            phase: Phase::Secured(Security::tls(peer_identities)),
        })
    }
}

impl SaslSent {
    fn on_element(self, core: &mut Core, el: &Element, local: &str, remote: &str) -> State {
        if el.is("success", ns::SASL) {
            core.restart_reader();
            core.write_header(local, remote, None);
            return State::AwaitHeader(AwaitHeader {
                phase: Phase::Authenticated(self.security, self.pair),
            });
        }
        if el.is("failure", ns::SASL) {
            // Our certificate did not convince the peer: dialback per pair instead.
            return State::Open(Open::new(self.security, self.stream_id, None, core));
        }
        core.fail(StreamCondition::UnsupportedStanzaType);
        State::Closed
    }
}

impl Open {
    fn new(
        security: Security,
        stream_id: Option<String>,
        sasl: Option<DomainPair>,
        core: &mut Core,
    ) -> Open {
        let mut authorised = BTreeSet::new();
        if let Some(pair) = &sasl {
            core.output(Output::Authorised(pair.clone()));
            authorised.insert(pair.clone());
        }
        Open {
            security,
            stream_id,
            sasl,
            authorised,
            verifies: Vec::new(),
        }
    }

    /// Writes one stanza. Only an open stream has this method: nothing is written before TLS.
    fn write_stanza(&self, core: &mut Core, el: &Element) {
        core.write(&writer::stanza(el));
    }

    /// Sends what waits: dialback keys for new pairs, stanzas of authorised pairs, verifies.
    fn flush(
        &mut self,
        core: &mut Core,
        queue: &mut BTreeMap<DomainPair, Pending>,
        verify_queue: &mut Vec<DialbackRequest>,
    ) {
        let mut refused = Vec::new();
        for (pair, pending) in queue.iter_mut() {
            if self.authorised.contains(pair) {
                for item in pending.items.drain(..) {
                    match item {
                        Queued::Event(_, el) => self.write_stanza(core, &el),
                        Queued::Reply(r) => self.write_stanza(core, r.element()),
                    }
                }
            } else if !pending.key_sent {
                match &self.stream_id {
                    Some(id) => {
                        let key =
                            dialback_key(&core.cfg.dialback_secret, &pair.remote, &pair.local, id);
                        core.write(
                            &DbResult {
                                from: pair.local.clone(),
                                to: pair.remote.clone(),
                                key: Some(key),
                                type_: None,
                            }
                            .to_bytes(),
                        );
                        pending.key_sent = true;
                    }
                    // Without a stream id no dialback key can be made.
                    None => refused.push(pair.clone()),
                }
            }
        }
        queue.retain(|pair, p| !(self.authorised.contains(pair) && p.items.is_empty()));
        for pair in refused {
            refuse(core, queue, &pair, ErrorCode::RemoteServerNotFound);
        }
        for request in verify_queue.drain(..) {
            core.write(
                &DbVerify {
                    from: request.receiving.clone(),
                    to: request.originating.clone(),
                    id: request.stream_id.clone(),
                    key: Some(request.key.clone()),
                    type_: None,
                }
                .to_bytes(),
            );
            self.verifies.push(request);
        }
    }

    fn on_element(
        mut self,
        core: &mut Core,
        el: &Element,
        queue: &mut BTreeMap<DomainPair, Pending>,
        verify_queue: &mut Vec<DialbackRequest>,
    ) -> State {
        match (el.ns().as_str(), el.name()) {
            (ns::DIALBACK, "result") => {
                let Ok(answer) = DbResult::try_from(el) else {
                    core.fail(StreamCondition::BadFormat);
                    return State::Closed;
                };
                let pair = DomainPair {
                    local: answer.to,
                    remote: answer.from,
                };
                let key_sent = queue.get(&pair).is_some_and(|p| p.key_sent);
                match answer.type_ {
                    Some(DialbackType::Valid) if key_sent => {
                        self.authorised.insert(pair.clone());
                        core.output(Output::Authorised(pair));
                        self.flush(core, queue, verify_queue);
                    }
                    Some(DialbackType::Invalid) if key_sent => {
                        refuse(core, queue, &pair, ErrorCode::NotAuthorized)
                    }
                    Some(DialbackType::Error) if key_sent => {
                        refuse(core, queue, &pair, ErrorCode::RemoteServerNotFound)
                    }
                    // An answer nobody asked for authorises nothing.
                    _ => {}
                }
                State::Open(self)
            }
            (ns::DIALBACK, "verify") => {
                let Ok(answer) = DbVerify::try_from(el) else {
                    core.fail(StreamCondition::BadFormat);
                    return State::Closed;
                };
                let position = self.verifies.iter().position(|r| {
                    r.originating == answer.from
                        && r.receiving == answer.to
                        && r.stream_id == answer.id
                });
                if let (Some(i), Some(type_)) = (position, answer.type_) {
                    let request = self.verifies.remove(i);
                    core.output(Output::DialbackVerified {
                        request,
                        valid: type_ == DialbackType::Valid,
                    });
                }
                State::Open(self)
            }
            (ns::STREAM, "error") => {
                let condition = super::received_condition(el);
                core.finish(CloseReason::Received(condition), true);
                State::Closed
            }
            // s2s streams are one-way: stanzas on our outbound stream are not for us.
            (ns::CLIENT, "message" | "presence" | "iq") => State::Open(self),
            _ => {
                core.fail(StreamCondition::UnsupportedStanzaType);
                State::Closed
            }
        }
    }
}

fn refuse(
    core: &mut Core,
    queue: &mut BTreeMap<DomainPair, Pending>,
    pair: &DomainPair,
    code: ErrorCode,
) {
    if let Some(pending) = queue.remove(pair) {
        let events = pending
            .items
            .into_iter()
            .filter_map(|q| match q {
                Queued::Event(e, _) => Some(e),
                Queued::Reply(_) => None,
            })
            .collect();
        core.output(Output::Refused {
            pair: pair.clone(),
            events,
            code,
        });
    }
}

impl Outbound {
    /// Opens a stream from served domain `local` to peer domain `remote`; the stream header is
    /// ready in [`Outbound::poll_transmit`] at once.
    pub fn new(cfg: Arc<Config>, local: &str, remote: &str, now: Instant) -> Outbound {
        Self::with_seed(cfg, local, remote, now, None)
    }

    /// As [`Outbound::new`], with ids drawn from a seeded generator (for reproducible tests).
    pub fn with_seed(
        cfg: Arc<Config>,
        local: &str,
        remote: &str,
        now: Instant,
        seed: Option<u64>,
    ) -> Outbound {
        let local = parse_domain(local).unwrap_or_else(|| local.to_string());
        let remote = parse_domain(remote).unwrap_or_else(|| remote.to_string());
        let mut core = Core::new(cfg, now, rng(seed), true);
        core.write_header(&local, &remote, None);
        Outbound {
            core,
            state: State::AwaitHeader(AwaitHeader {
                phase: Phase::Plain,
            }),
            local,
            remote,
            queue: BTreeMap::new(),
            verify_queue: Vec::new(),
        }
    }

    /// A stream over a connection that is already TLS (XEP-0368 direct TLS, found through
    /// `_xmpps-server._tcp`): no STARTTLS step; `peer_identities` are the domains the peer's
    /// certificate was verified for.
    pub fn new_direct_tls(
        cfg: Arc<Config>,
        local: &str,
        remote: &str,
        peer_identities: Vec<String>,
        now: Instant,
    ) -> Outbound {
        let mut out = Self::with_seed(cfg, local, remote, now, None);
        out.state = State::AwaitHeader(AwaitHeader {
            phase: Phase::Secured(Security::tls(peer_identities)),
        });
        out
    }

    /// The peer domain this stream was opened to.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The pair SASL EXTERNAL authenticated on this stream, if any: every other
    /// [`Output::Authorised`] pair was authorised by dialback.
    pub fn sasl_pair(&self) -> Option<&DomainPair> {
        match &self.state {
            State::Open(open) => open.sasl.as_ref(),
            _ => None,
        }
    }

    /// Queues a canonical event for the peer. It is written once its (sender domain, recipient
    /// domain) pair is authorised on this stream; dialback for a new pair starts at once. If the
    /// pair is refused, the event comes back in [`Output::Refused`].
    pub fn send(&mut self, event: Event, now: Instant) -> Result<(), SendError> {
        self.core.now = now;
        if self.core.closed {
            return Err(SendError::Closed);
        }
        let local = event.from().domain().to_string();
        if !self.core.cfg.serves(&local) {
            return Err(SendError::NotServed(local));
        }
        let remote = event
            .to()
            .map(|a| a.domain().to_string())
            .ok_or(SendError::Translate(TranslateError::NoRecipient))?;
        let core = &mut self.core;
        let mut el = translate::outgoing(&event, &mut || core.new_id())?;
        if let Event::Failure(f) = &event {
            // Address the error to the resource that sent the message, when it is known.
            let full = core
                .cfg
                .senders
                .lock()
                .ok()
                .and_then(|s| s.full_jid(&f.to.to_string(), &f.id).cloned());
            if let (Some(full), Ok(name)) = (full, rxml::NcName::try_from("to")) {
                el.attrs_mut()
                    .insert(rxml::Namespace::none().clone(), name, full);
            }
        }
        self.enqueue(DomainPair { local, remote }, Queued::Event(event, el))
    }

    /// Queues a [`Reply`] produced by an [`super::Inbound`] stream from the same peer.
    pub fn send_reply(&mut self, reply: Reply, now: Instant) -> Result<(), SendError> {
        self.core.now = now;
        if self.core.closed {
            return Err(SendError::Closed);
        }
        let pair = DomainPair {
            local: reply.from_domain().to_string(),
            remote: reply.to_domain().to_string(),
        };
        self.enqueue(pair, Queued::Reply(reply))
    }

    fn enqueue(&mut self, pair: DomainPair, item: Queued) -> Result<(), SendError> {
        let now = self.core.now;
        let max = self.core.cfg.max_queued_per_pair;
        let pending = self.queue.entry(pair.clone()).or_insert_with(|| Pending {
            since: now,
            items: Vec::new(),
            key_sent: false,
        });
        if pending.items.len() >= max {
            return Err(SendError::QueueFull(pair));
        }
        pending.items.push(item);
        self.flush();
        Ok(())
    }

    /// Asks the peer (the authoritative server) whether a key received on an inbound stream is
    /// valid; the answer comes as [`Output::DialbackVerified`].
    pub fn verify_dialback(&mut self, request: DialbackRequest, now: Instant) {
        self.core.now = now;
        if self.core.closed {
            self.core.output(Output::DialbackVerified {
                request,
                valid: false,
            });
            return;
        }
        self.verify_queue.push(request);
        self.flush();
    }

    fn flush(&mut self) {
        if let State::Open(open) = &mut self.state {
            open.flush(&mut self.core, &mut self.queue, &mut self.verify_queue);
        }
    }

    /// Bytes received from the peer (after TLS: the decrypted bytes).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.core.now = now;
        self.core.last_rx = now;
        let mut input = bytes;
        while !self.core.closed {
            if matches!(self.state, State::TlsPending(_) | State::Closed) {
                // Anything behind <proceed/> is plaintext injected before TLS: dropped.
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
            self.flush();
        }
        self.core.note_partial();
        self.after_close();
    }

    fn on_item(&mut self, state: State, item: ReadEvent) -> State {
        let core = &mut self.core;
        match (state, item) {
            (_, ReadEvent::End) => {
                core.finish(CloseReason::Normal, true);
                State::Closed
            }
            (State::AwaitHeader(s), ReadEvent::Header(h)) => s.on_header(core, h, &self.remote),
            (_, ReadEvent::Element(el)) if el.is("error", ns::STREAM) => {
                let condition = super::received_condition(&el);
                core.finish(CloseReason::Received(condition), true);
                State::Closed
            }
            (State::AwaitFeatures(s), ReadEvent::Element(el)) if el.is("features", ns::STREAM) => {
                s.on_features(core, &el, &self.local, &self.remote)
            }
            (State::StartTlsSent(s), ReadEvent::Element(el)) => s.on_element(core, &el),
            (State::SaslSent(s), ReadEvent::Element(el)) => {
                s.on_element(core, &el, &self.local, &self.remote)
            }
            (State::Open(s), ReadEvent::Element(el)) => {
                s.on_element(core, &el, &mut self.queue, &mut self.verify_queue)
            }
            (_, _) => {
                core.fail(StreamCondition::UnsupportedStanzaType);
                State::Closed
            }
        }
    }

    /// The connection ended (EOF or reset).
    pub fn handle_eof(&mut self, now: Instant) {
        self.core.now = now;
        self.core.finish(CloseReason::Eof, false);
        self.after_close();
    }

    /// The TLS handshake requested by [`Output::StartTls`] succeeded; `peer_identities` are the
    /// domains the peer's certificate was verified for (informational on this side).
    pub fn tls_established(&mut self, peer_identities: Vec<String>, now: Instant) {
        self.core.now = now;
        self.core.last_rx = now;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::TlsPending(s) => {
                s.established(&mut self.core, peer_identities, &self.local, &self.remote)
            }
            other => other,
        };
    }

    pub fn tls_failed(&mut self, now: Instant) {
        self.core.now = now;
        self.core.finish(CloseReason::TlsFailed, false);
        self.after_close();
    }

    /// Ends the stream gracefully; queued events come back as [`Output::Refused`].
    pub fn close(&mut self, now: Instant) {
        self.core.now = now;
        self.core.finish(CloseReason::Normal, true);
        self.after_close();
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// When [`Outbound::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ready = matches!(self.state, State::Open(_));
        let mut t = self.core.deadline(ready)?;
        for pending in self.queue.values() {
            t = t.min(pending.since + self.core.cfg.negotiation_timeout);
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let ready = matches!(self.state, State::Open(_));
        if matches!(self.state, State::TlsPending(_)) {
            // Mid-handshake no stream error can be written: just give up.
            self.core.now = now;
            if now >= self.core.started + self.core.cfg.negotiation_timeout {
                self.core
                    .finish(CloseReason::Sent(StreamCondition::ConnectionTimeout), false);
            }
            self.after_close();
            return;
        }
        if self.core.on_timeout(now, ready) {
            let deadline = self.core.cfg.negotiation_timeout;
            let expired: Vec<DomainPair> = self
                .queue
                .iter()
                .filter(|(_, p)| now >= p.since + deadline)
                .map(|(pair, _)| pair.clone())
                .collect();
            for pair in expired {
                refuse(
                    &mut self.core,
                    &mut self.queue,
                    &pair,
                    ErrorCode::RemoteServerTimeout,
                );
            }
        }
        self.after_close();
    }

    pub fn is_closed(&self) -> bool {
        self.core.closed
    }

    /// Once closed, every waiting event comes back and every verification fails.
    fn after_close(&mut self) {
        if !self.core.closed {
            return;
        }
        // Closed stays the last output: what is returned here goes before it.
        let closed = match self.core.outputs.back() {
            Some(Output::Closed(_)) => self.core.outputs.pop_back(),
            _ => None,
        };
        if let State::Open(open) = std::mem::replace(&mut self.state, State::Closed) {
            for request in open.verifies {
                self.core.output(Output::DialbackVerified {
                    request,
                    valid: false,
                });
            }
        }
        let pairs: Vec<DomainPair> = self.queue.keys().cloned().collect();
        for pair in pairs {
            refuse(
                &mut self.core,
                &mut self.queue,
                &pair,
                ErrorCode::RemoteServerNotFound,
            );
        }
        for request in self.verify_queue.drain(..) {
            self.core.output(Output::DialbackVerified {
                request,
                valid: false,
            });
        }
        if let Some(closed) = closed {
            self.core.output(closed);
        }
    }
}
