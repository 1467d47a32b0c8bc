//! Server-to-server stream negotiation (RFC 6120, XEP-0220, XEP-0178) as two sans-IO machines:
//! [`Inbound`] for streams a peer opens to the gateway and [`Outbound`] for streams the gateway
//! opens. What both share (configuration, output queue, timers) lives here.

mod inbound;
mod outbound;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use entente_model::{DomainKind, ErrorCode, Event};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

use crate::error::StreamCondition;
use crate::reader::{Limits, StreamReader};
use crate::translate::Reply;
use crate::writer;

pub use inbound::Inbound;
pub use outbound::{Outbound, SendError};

/// Settings shared by every stream of one gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// Domains the gateway answers for (hub and SIP-partner domains), with their address rules.
    pub served: BTreeMap<String, DomainKind>,
    /// Secret behind every dialback key (XEP-0185). Keep it across restarts of one cluster so that
    /// a `db:verify` arriving on another node still verifies.
    pub dialback_secret: Vec<u8>,
    /// Refuse to exchange anything but STARTTLS before TLS is up (default `true`).
    pub require_tls: bool,
    /// Whether the driver can run TLS at all (default `true`). With `require_tls` off and this
    /// off, STARTTLS is neither offered nor used: plaintext dialback only, for test set-ups.
    pub offer_tls: bool,
    pub limits: Limits,
    /// Longest message body accepted from a peer (default [`entente_model::DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// A stream that receives nothing for this long is closed with `connection-timeout`
    /// (default 10 minutes).
    pub idle_timeout: Duration,
    /// A single space is sent when nothing was sent for this long (default 60 s).
    pub keepalive_interval: Duration,
    /// A stanza that has begun must be complete within this time (default 60 s): a peer that
    /// stalls mid-stanza is closed even if it trickles bytes.
    pub stanza_timeout: Duration,
    /// Time allowed to get a stream ready (TLS and the first stream header afterwards), and for
    /// a domain pair to be authorised (default 60 s).
    pub negotiation_timeout: Duration,
    /// Most events queued for one domain pair while it is being authorised (default 1000).
    pub max_queued_per_pair: usize,
    /// Most domain pairs one stream may authorise or have under verification (default 64); a
    /// peer asking for more is closed with `policy-violation`.
    pub max_pairs_per_stream: usize,
    /// Wall clock stamped on received messages.
    pub wall_clock: fn() -> OffsetDateTime,
    /// Full JIDs of recent message senders, shared by every stream of the gateway, so that an
    /// error about a message reaches the resource that sent it (RFC 6121 §8.5.2.1.1: a server
    /// drops an error message addressed to a bare JID).
    pub(crate) senders: std::sync::Arc<std::sync::Mutex<SenderResources>>,
}

/// A bounded record of (bare sender, message id) → the sender's full JID.
#[derive(Debug, Default)]
pub(crate) struct SenderResources {
    map: std::collections::HashMap<(String, String), String>,
    order: VecDeque<(String, String)>,
}

impl SenderResources {
    const CAPACITY: usize = 4096;

    pub(crate) fn record(&mut self, bare: String, id: String, full: String) {
        let key = (bare, id);
        if self.map.insert(key.clone(), full).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(crate) fn full_jid(&self, bare: &str, id: &str) -> Option<&String> {
        self.map.get(&(bare.to_string(), id.to_string()))
    }
}

impl Config {
    /// A configuration with the documented defaults. Served domain names are normalised
    /// (lower case, no trailing dot); names that are not valid domains are dropped.
    pub fn new(served: BTreeMap<String, DomainKind>, dialback_secret: Vec<u8>) -> Config {
        let served = served
            .into_iter()
            .filter_map(|(d, k)| Some((crate::dialback::parse_domain(d.trim_end_matches('.'))?, k)))
            .collect();
        Config {
            served,
            dialback_secret,
            require_tls: true,
            offer_tls: true,
            limits: Limits::default(),
            max_body_bytes: entente_model::DEFAULT_MAX_BODY_BYTES,
            idle_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(60),
            stanza_timeout: Duration::from_secs(60),
            negotiation_timeout: Duration::from_secs(60),
            max_queued_per_pair: 1000,
            max_pairs_per_stream: 64,
            wall_clock: OffsetDateTime::now_utc,
            senders: Default::default(),
        }
    }

    pub fn serves(&self, domain: &str) -> bool {
        self.served.contains_key(domain)
    }
}

/// A (served domain, peer domain) pair. Stanzas flow for a pair only once it is authorised on the
/// stream that carries them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainPair {
    /// The gateway's side.
    pub local: String,
    /// The peer's side.
    pub remote: String,
}

/// A dialback key a peer presented on an inbound stream, to be checked with the authoritative
/// server of `originating` (send it with [`Outbound::verify_dialback`] on a stream to that domain,
/// then report with [`Inbound::dialback_verified`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialbackRequest {
    /// The peer domain that claims to be sending.
    pub originating: String,
    /// The served domain it wants to send to.
    pub receiving: String,
    /// The id of the inbound stream the key arrived on.
    pub stream_id: String,
    pub key: String,
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// `</stream:stream>` was exchanged, or [`Inbound::close`]/[`Outbound::close`] was called.
    Normal,
    /// The gateway sent this stream error.
    Sent(StreamCondition),
    /// The peer sent this stream error.
    Received(StreamCondition),
    /// The connection ended without a closing tag.
    Eof,
    /// The driver reported a failed TLS handshake.
    TlsFailed,
}

/// What a machine asks of its driver, in order. See the crate documentation for the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write every byte [`Inbound::poll_transmit`]/[`Outbound::poll_transmit`] returned so far,
    /// then run the TLS handshake (server side for [`Inbound`], client side for [`Outbound`]) and
    /// report it with `tls_established` or `tls_failed`. Bytes received until then are dropped.
    StartTls,
    /// A canonical event from an authorised pair, for the router.
    Event(Event),
    /// A stanza the gateway owes the peer: send it with [`Outbound::send_reply`] on a stream to
    /// [`Reply::to_domain`].
    Reply(Reply),
    /// Inbound: a dialback key to verify with the peer's authoritative server.
    VerifyDialback(DialbackRequest),
    /// Outbound: the authoritative server's answer to [`Outbound::verify_dialback`].
    DialbackVerified {
        request: DialbackRequest,
        valid: bool,
    },
    /// A domain pair is now authorised on this stream.
    Authorised(DomainPair),
    /// Outbound: a pair was not authorised; its queued events come back for failure reports.
    Refused {
        pair: DomainPair,
        events: Vec<Event>,
        code: ErrorCode,
    },
    /// The stream is over: write the remaining transmit bytes, then close the connection. Always
    /// the last output of a stream.
    Closed(CloseReason),
}

/// Proof that a stream may carry authentication and stanzas: TLS is up, or the configuration
/// allows plaintext. Only [`Security::tls`] and [`Security::plaintext`] make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Security {
    tls: bool,
    /// Domains the peer's certificate was verified for (RFC 6125), normalised.
    peer_identities: Vec<String>,
}

impl Security {
    fn tls(peer_identities: Vec<String>) -> Security {
        Security {
            tls: true,
            peer_identities: peer_identities
                .into_iter()
                .filter_map(|d| crate::dialback::parse_domain(&d))
                .collect(),
        }
    }

    fn plaintext(cfg: &Config) -> Option<Security> {
        (!cfg.require_tls).then(|| Security {
            tls: false,
            peer_identities: Vec::new(),
        })
    }

    fn certifies(&self, domain: &str) -> bool {
        self.tls && self.peer_identities.iter().any(|d| d == domain)
    }
}

/// State shared by every protocol state of one stream.
pub(crate) struct Core {
    cfg: std::sync::Arc<Config>,
    transmit: Vec<u8>,
    outputs: VecDeque<Output>,
    reader: StreamReader,
    now: Instant,
    started: Instant,
    last_rx: Instant,
    /// Last bytes written, keepalives included.
    last_tx: Instant,
    /// Last bytes written other than keepalives.
    last_activity: Instant,
    /// True for the side that opened the connection ([`Outbound`]).
    initiator: bool,
    partial_since: Option<Instant>,
    rng: StdRng,
    closed: bool,
    /// Whether a stream header went out on the current stream.
    header_sent: bool,
}

impl Core {
    fn new(cfg: std::sync::Arc<Config>, now: Instant, rng: StdRng, initiator: bool) -> Core {
        let reader = StreamReader::new(cfg.limits.clone());
        Core {
            cfg,
            transmit: Vec::new(),
            outputs: VecDeque::new(),
            reader,
            now,
            started: now,
            last_rx: now,
            last_tx: now,
            last_activity: now,
            initiator,
            partial_since: None,
            rng,
            closed: false,
            header_sent: false,
        }
    }

    fn write_header(&mut self, from: &str, to: &str, id: Option<&str>) {
        self.write(&writer::stream_header(from, to, id));
        self.header_sent = true;
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.transmit.extend_from_slice(bytes);
        self.last_tx = self.now;
        self.last_activity = self.now;
    }

    /// Since when the stream counts as idle. The receiving side only hears its peer; the
    /// initiating side mostly talks, so its own stanzas count as activity too.
    fn idle_since(&self) -> Instant {
        if self.initiator {
            self.last_rx.max(self.last_activity)
        } else {
            self.last_rx
        }
    }

    fn output(&mut self, o: Output) {
        self.outputs.push_back(o);
    }

    /// Sends a stream error and the closing tag; nothing is read or written afterwards.
    fn fail(&mut self, condition: StreamCondition) {
        if self.closed {
            return;
        }
        if !self.header_sent {
            // RFC 6120 §4.9.1.1: a stream error is sent inside a stream, so open one first.
            self.write_header("", "", None);
        }
        self.write(&writer::stream_error(condition));
        self.closed = true;
        self.output(Output::Closed(CloseReason::Sent(condition)));
    }

    fn finish(&mut self, reason: CloseReason, send_close: bool) {
        if self.closed {
            return;
        }
        if send_close {
            self.write(writer::STREAM_CLOSE);
        }
        self.closed = true;
        self.output(Output::Closed(reason));
    }

    fn restart_reader(&mut self) {
        self.reader = StreamReader::new(self.cfg.limits.clone());
        self.partial_since = None;
        self.header_sent = false;
    }

    fn new_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..16)
            .map(|_| {
                let i = self.rng.gen_range(0..ALPHABET.len());
                char::from(ALPHABET.get(i).copied().unwrap_or(b'a'))
            })
            .collect()
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }

    /// Deadlines common to both directions; `ready` is true once the stream may carry stanzas.
    fn deadline(&self, ready: bool) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut t = self.idle_since() + self.cfg.idle_timeout;
        if let Some(p) = self.partial_since {
            t = t.min(p + self.cfg.stanza_timeout);
        }
        if ready {
            t = t.min(self.last_tx + self.cfg.keepalive_interval);
        } else {
            t = t.min(self.started + self.cfg.negotiation_timeout);
        }
        Some(t)
    }

    /// Fires expired timers; returns false when the stream was closed.
    fn on_timeout(&mut self, now: Instant, ready: bool) -> bool {
        self.now = now;
        if self.closed {
            return false;
        }
        let idle = now >= self.idle_since() + self.cfg.idle_timeout;
        let stalled = self
            .partial_since
            .is_some_and(|p| now >= p + self.cfg.stanza_timeout);
        let slow = !ready && now >= self.started + self.cfg.negotiation_timeout;
        if idle && ready && self.initiator && !stalled {
            // Nothing left to say on our own stream: close it politely.
            self.finish(CloseReason::Normal, true);
            return false;
        }
        if idle || stalled || slow {
            self.fail(StreamCondition::ConnectionTimeout);
            return false;
        }
        if ready && now >= self.last_tx + self.cfg.keepalive_interval {
            // RFC 6120 §4.6.1: whitespace keeps the connection alive.
            if !self.closed {
                self.transmit.push(b' ');
                self.last_tx = now;
            }
        }
        true
    }

    fn note_partial(&mut self) {
        if self.reader.in_partial_element() {
            self.partial_since.get_or_insert(self.now);
        } else {
            self.partial_since = None;
        }
    }
}

fn rng(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_entropy(),
    }
}

/// The stream error a stream error element carries.
fn received_condition(el: &minidom::Element) -> StreamCondition {
    el.children()
        .find(|c| c.ns() == crate::ns::STREAM_ERRORS && c.name() != "text")
        .map(|c| StreamCondition::parse(c.name()))
        .unwrap_or(StreamCondition::UndefinedCondition)
}
