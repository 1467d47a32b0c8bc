//! The SIMPLE endpoint: one sans-IO state machine that owns transactions, subscription dialogs
//! and publications, and turns SIP traffic into canonical events and back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use entente_model::{
    Address, ChatState, ErrorCode, Event, Failure, Message, Presence, PresenceKind, Subscription,
    SubscriptionKind, Typing,
};
use time::OffsetDateTime;

use crate::headers::{
    self, address_to_uri, call_id, content_type, cseq, event_package, expires, name_addr,
    single_line, split_hostport, uri_to_address, HeaderError, NameAddr, SubState,
    SubscriptionState, Via,
};
use crate::message::{BuildError, Method, SipMessage};
use crate::status::{self, reason, status_for};
use crate::transaction::{ClientAction, ClientTransaction, ServerTransaction, Timers};
use crate::wire::{Limits, ParseError, SipParser, SipxParser, StreamDecoder, StreamFramer};
use crate::xml::XmlLimits;
use crate::{cpim, iscomposing, pidf};

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// As written in a Via header.
    pub fn as_via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// A stream connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One UDP datagram to this address.
    Datagram(SocketAddr),
    /// On an open TCP/TLS connection.
    Connection(ConnectionId),
    /// Resolve `host` (RFC 3263; IP literals need no lookup) and send with `transport`, over a
    /// connection the driver opens or reuses. Responses come back through `handle_*`.
    Resolve {
        host: String,
        port: Option<u16>,
        transport: Transport,
    },
}

/// One of our requests that got no answer at all before timer F (see
/// [`Endpoint::poll_unanswered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// Where it was sent.
    pub destination: Destination,
    /// The domain of its To (the remote user's, except for PUBLISH, which names our own user).
    pub to_domain: Option<String>,
    pub method: String,
    /// How long it waited.
    pub after: Duration,
}

/// Unanswered requests kept until the driver polls them.
pub const MAX_UNANSWERED: usize = 1024;

/// Bytes to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Destination,
    pub payload: Bytes,
}

/// Configuration. Defaults are documented on each field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host (name or IP literal) written in our Via and Contact headers. Default `localhost`.
    pub local_host: String,
    /// Port written in Via and Contact; `None` means the transport default.
    pub local_port: Option<u16>,
    /// Domains this gateway answers for (hub and XMPP-partner domains). Requests for any other
    /// domain are answered 404. Empty accepts every domain.
    pub local_domains: Vec<String>,
    /// Transport for new requests to a partner domain not listed below. Default UDP.
    pub default_transport: Transport,
    /// Per partner domain transport.
    pub partner_transports: HashMap<String, Transport>,
    /// T1/T2/T4 (RFC 3261 defaults 500 ms / 4 s / 5 s).
    pub timers: Timers,
    /// Wire limits (64 KiB messages, 128 headers, 8 KiB header lines).
    pub limits: Limits,
    /// Limits for PIDF and isComposing bodies.
    pub xml_limits: XmlLimits,
    /// Largest instant-message body accepted or sent; larger answers 413. Default 16 KiB.
    pub max_body_bytes: usize,
    /// Subscription and publication lifetime we ask for and grant by default (3600 s).
    pub default_expires: u32,
    /// Shortest lifetime accepted (423 below it); default 60 s.
    pub min_expires: u32,
    /// Longest lifetime granted; default 86400 s.
    pub max_expires: u32,
    /// How long an incoming MESSAGE waits for a `Failure` (answered with its error status) or
    /// a `Receipt` (answered 200) before it is answered 200 OK anyway. Default 1 s.
    pub message_answer_delay: Duration,
    /// Written in `User-Agent`/`Server`. Default `Entente`.
    pub user_agent: String,
    /// Unique per process; makes branches, tags and Call-IDs unique (e.g. 8 random hex chars).
    pub instance: String,
    /// Partner domains whose presence servers want local users' presence by PUBLISH
    /// (RFC 3903) rather than by SUBSCRIBE. Default none.
    pub publish_domains: Vec<String>,
    /// Most open transactions of each kind (server, client); beyond it new requests are
    /// answered 503 statelessly and `send` refuses. Default 4096.
    pub max_transactions: usize,
    /// Most subscription dialogs (both roles together); beyond it 503. Default 10000.
    pub max_subscriptions: usize,
    /// Most presence publications held for partners' presence agents; beyond it 503.
    /// Default 10000.
    pub max_publications: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            local_host: "localhost".into(),
            local_port: None,
            local_domains: Vec::new(),
            default_transport: Transport::Udp,
            partner_transports: HashMap::new(),
            timers: Timers::default(),
            limits: Limits::default(),
            xml_limits: XmlLimits::default(),
            max_body_bytes: entente_model::DEFAULT_MAX_BODY_BYTES,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86400,
            message_answer_delay: Duration::from_secs(1),
            user_agent: "Entente".into(),
            instance: "e0".into(),
            publish_domains: Vec::new(),
            max_transactions: 4096,
            max_subscriptions: 10_000,
            max_publications: 10_000,
        }
    }
}

/// Why an event could not be sent as SIP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("this event has no SIP form here")]
    Unsupported,
    #[error("message body larger than the limit")]
    TooLarge,
    #[error("too many open transactions or subscriptions")]
    Busy,
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Why an incoming request is refused: the status we answer with.
#[derive(Debug)]
struct Refuse(u16, Option<String>);

impl From<HeaderError> for Refuse {
    fn from(e: HeaderError) -> Self {
        Refuse(400, Some(e.to_string()))
    }
}

impl From<BuildError> for Refuse {
    fn from(_: BuildError) -> Self {
        Refuse(500, None)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTransaction,
    reply_to: Destination,
}

/// What a client transaction was for, so its outcome can be reported.
#[derive(Debug, Clone)]
enum Purpose {
    Message {
        id: String,
        from: Address,
        to: Address,
    },
    Quiet,
    Subscribe {
        dialog: DialogKey,
        refresh: bool,
    },
    Notify {
        dialog: DialogKey,
    },
    Publish {
        key: OutKey,
        conditional: bool,
        removing: bool,
    },
}

/// A local user's presence published to one partner domain.
type OutKey = (Address, String);

#[derive(Debug)]
struct OutPublication {
    kind: PresenceKind,
    etag: Option<String>,
    refresh_at: Option<Instant>,
    retried: bool,
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTransaction,
    destination: Destination,
    purpose: Purpose,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DialogKey {
    call_id: String,
    local_tag: String,
}

/// The dialog fields both roles share (RFC 3261 §12).
#[derive(Debug, Clone)]
struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    local: Address,
    remote: Address,
    remote_target: String,
    route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    transport: Transport,
    connection: Option<ConnectionId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotifierState {
    Pending,
    Active,
}

/// We are the notifier: a SIP watcher subscribed to a local user's presence.
#[derive(Debug)]
struct Notifier {
    dialog: Dialog,
    state: NotifierState,
    expires_at: Instant,
    /// The presence last notified, so that an unchanged presence is not sent again.
    last_sent: Option<PresenceKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubscriberState {
    /// SUBSCRIBE sent, nothing back yet.
    Sent,
    Pending,
    Active,
    /// Un-SUBSCRIBE sent; waiting for the final NOTIFY.
    Ending,
}

/// We are the subscriber: a local user watches a SIP user's presence.
#[derive(Debug)]
struct Subscriber {
    dialog: Dialog,
    state: SubscriberState,
    expires_at: Instant,
    refresh_at: Option<Instant>,
    reported: bool,
    /// A one-off fetch (probe): no subscription events, just presence.
    fetch: bool,
    retried: bool,
    /// How many times in a row this subscription lapsed and was tried again (0: a fresh one).
    lapses: u32,
}

/// Presence state a SIP presence agent published to us.
#[derive(Debug)]
struct Publication {
    entity: Address,
    kind: PresenceKind,
    expires_at: Instant,
}

#[derive(Debug)]
struct PendingAnswer {
    server: ServerKey,
    request: SipMessage,
    due: Instant,
}

/// The SIP/SIMPLE endpoint. See the crate documentation for the call order.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    parser: SipxParser,
    start: Instant,
    wall_start: OffsetDateTime,
    counter: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Our requests that got no answer in time, for the driver's link state.
    unanswered: VecDeque<Unanswered>,
    framers: HashMap<ConnectionId, (Transport, StreamFramer)>,
    servers: HashMap<ServerKey, ServerEntry>,
    clients: HashMap<String, ClientEntry>,
    /// Client transaction deadlines (timers E, F, K), earliest first, by branch. An entry may
    /// be stale (its transaction gone or rescheduled, which only wakes the driver early);
    /// every live transaction's current deadline is in it. Keeps timers O(log n) per
    /// transaction instead of a scan of every transaction at each poll.
    client_timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Server transaction deadlines (timer J), in the order they were set: J is a fixed time
    /// after the final answer, so with a monotonic clock the front is the earliest.
    server_timers: VecDeque<(Instant, ServerKey)>,
    pending: HashMap<String, PendingAnswer>,
    notifiers: HashMap<DialogKey, Notifier>,
    subscribers: HashMap<DialogKey, Subscriber>,
    publications: HashMap<String, Publication>,
    out_publications: HashMap<OutKey, OutPublication>,
    last_presence: HashMap<Address, PresenceKind>,
    /// (local user, SIP watcher) pairs the router approved (a `Subscribed` we were given, no
    /// `Unsubscribed` since), with the presence last meant for that watcher. A subscription
    /// dialog ending does not end the approval: a new SUBSCRIBE from the watcher is active at
    /// once. At most [`Config::max_subscriptions`] pairs; beyond that a new SUBSCRIBE is
    /// pending until the router answers, as after a restart.
    approved: HashMap<(Address, Address), Option<PresenceKind>>,
    /// Remote users shown as composing, and when that lapses (RFC 3994 §4 refresh).
    composing: HashMap<(Address, Address), Instant>,
    /// Local users composing towards SIP users: next refresh of "active", and when to stop.
    composing_out: HashMap<(Address, Address), (Instant, Instant)>,
    admission: Option<std::sync::Arc<dyn Admission>>,
    /// Our subscriptions that lapsed for want of an answer (the partner down, a refresh that
    /// timed out), to be tried again at the given time: (local user, SIP user) → (when, lapses).
    /// A lapse is not the SIP user withdrawing the hub user's authorisation.
    resubscribe: HashMap<(Address, Address), (Instant, u32)>,
}

/// The gateway's policy, asked before a partner's new SUBSCRIBE or PUBLISH is accepted: what it
/// carries (subscriptions, presence) may be refused for the sender's domain.
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// `None` admits the request; `Some(reason)` answers 403 with the reason in a Warning.
    fn refuse(&self, domain: &str, method: &Method) -> Option<String>;
}

impl Endpoint {
    /// Sets the policy asked about new SUBSCRIBE and PUBLISH requests (none: all admitted).
    pub fn set_admission(&mut self, admission: std::sync::Arc<dyn Admission>) {
        self.admission = Some(admission);
    }

    /// `now` and `wall_now` anchor the clock: event timestamps are `wall_now + (t - now)`.
    pub fn new(config: Config, now: Instant, wall_now: OffsetDateTime) -> Endpoint {
        Endpoint {
            parser: SipxParser::new(config.limits),
            config,
            start: now,
            wall_start: wall_now,
            counter: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            unanswered: VecDeque::new(),
            framers: HashMap::new(),
            servers: HashMap::new(),
            clients: HashMap::new(),
            client_timers: BinaryHeap::new(),
            server_timers: VecDeque::new(),
            pending: HashMap::new(),
            notifiers: HashMap::new(),
            subscribers: HashMap::new(),
            publications: HashMap::new(),
            out_publications: HashMap::new(),
            last_presence: HashMap::new(),
            approved: HashMap::new(),
            composing: HashMap::new(),
            composing_out: HashMap::new(),
            admission: None,
            resubscribe: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `watcher` holds an active presence subscription dialog to `local` (a NOTIFY
    /// goes to it on every change).
    pub fn is_watched_by(&self, local: &Address, watcher: &Address) -> bool {
        self.notifiers.values().any(|n| {
            n.state == NotifierState::Active
                && n.dialog.local == *local
                && n.dialog.remote == *watcher
        })
    }

    /// Sets the transport new requests to `domain` are built for (their Via, Contact and
    /// whether they are retransmitted), e.g. once the driver has found by RFC 3263 what the
    /// partner offers.
    pub fn set_partner_transport(&mut self, domain: &str, transport: Transport) {
        self.config
            .partner_transports
            .insert(domain.to_ascii_lowercase(), transport);
    }

    // ----- driver interface -------------------------------------------------------------

    /// A UDP datagram arrived from `from`. Garbage is dropped (the error says why).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<(), ParseError> {
        // RFC 5626 keep-alives (CRLF CRLF) carry no message.
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return Ok(());
        }
        let msg = self.parser.parse_datagram(data)?;
        self.handle_message(msg, Source::Datagram(from), now);
        Ok(())
    }

    /// Bytes arrived on a TCP/TLS connection. An error means framing is lost: close it.
    pub fn handle_stream_bytes(
        &mut self,
        conn: ConnectionId,
        transport: Transport,
        data: &[u8],
        now: Instant,
    ) -> Result<(), ParseError> {
        let limits = self.config.limits;
        let (_, framer) = self
            .framers
            .entry(conn)
            .or_insert_with(|| (transport, StreamFramer::new(limits)));
        let result = framer.push(data);
        // Each CRLFCRLF ping is answered with a CRLF pong (RFC 5626 §4.4.1).
        let pings = framer.take_keepalives() / 2;
        for _ in 0..pings.min(16) {
            self.transmits.push_back(Transmit {
                destination: Destination::Connection(conn),
                payload: Bytes::from_static(b"\r\n"),
            });
        }
        match result {
            Ok(msgs) => {
                for msg in msgs {
                    self.handle_message(msg, Source::Stream(conn, transport), now);
                }
                Ok(())
            }
            Err(e) => {
                self.framers.remove(&conn);
                Err(e)
            }
        }
    }

    /// The driver closed or lost a connection: later in-dialog requests are resolved afresh.
    pub fn handle_connection_closed(&mut self, conn: ConnectionId) {
        self.framers.remove(&conn);
        for n in self.notifiers.values_mut() {
            if n.dialog.connection == Some(conn) {
                n.dialog.connection = None;
            }
        }
        for s in self.subscribers.values_mut() {
            if s.dialog.connection == Some(conn) {
                s.dialog.connection = None;
            }
        }
    }

    /// The driver could not deliver `transmit` (no DNS answer, connection refused or reset).
    /// A request's transaction ends at once as RFC 3261 §8.1.3.1 says (treated as a 503, here
    /// reported as `remote_server_not_found`); a failed response is forgotten.
    pub fn handle_transport_error(&mut self, transmit: &Transmit, now: Instant) {
        let Ok(msg) = self.parser.parse_datagram(&transmit.payload) else {
            return;
        };
        if !msg.is_request() {
            return;
        }
        let branch = headers::vias(&msg)
            .ok()
            .and_then(|v| v.first().and_then(|v| v.branch().map(str::to_string)));
        if let Some(entry) = branch.and_then(|b| self.clients.remove(&b)) {
            self.client_failed(entry.purpose, 502, "Transport Error", None, now);
        }
        self.tidy_timers();
    }

    /// Drops stale deadlines from the front of the timer queues, so that [`Self::poll_timeout`]
    /// is exact: a transaction that ended or was rescheduled leaves its old entry behind.
    fn tidy_timers(&mut self) {
        while let Some(Reverse((due, branch))) = self.client_timers.peek() {
            if self.clients.get(branch).and_then(|c| c.tx.deadline()) == Some(*due) {
                break;
            }
            self.client_timers.pop();
        }
        while let Some((due, key)) = self.server_timers.front() {
            if self.servers.get(key).and_then(|s| s.tx.deadline()) == Some(*due) {
                break;
            }
            self.server_timers.pop_front();
        }
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next canonical event for the router.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Next request of ours that timed out (timer F) without any answer: the peer is down or
    /// unreachable. The newest [`MAX_UNANSWERED`] are kept until polled.
    pub fn poll_unanswered(&mut self) -> Option<Unanswered> {
        self.unanswered.pop_front()
    }

    fn note_unanswered(&mut self, entry: &ClientEntry) {
        let Ok(req) = self.parser.parse_datagram(entry.tx.request()) else {
            return;
        };
        let to_domain = name_addr(&req, "To")
            .ok()
            .and_then(|n| uri_to_address(&n.uri).ok())
            .map(|a| a.domain().to_string());
        if self.unanswered.len() >= MAX_UNANSWERED {
            self.unanswered.pop_front();
        }
        self.unanswered.push_back(Unanswered {
            destination: entry.destination.clone(),
            to_domain,
            method: req
                .method()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            after: self.config.timers.transaction_timeout(),
        });
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let clients = self
            .client_timers
            .peek()
            .map(|Reverse((t, _))| *t)
            .into_iter();
        let servers = self.server_timers.front().map(|(t, _)| *t).into_iter();
        let pending = self.pending.values().map(|p| p.due);
        let notifiers = self.notifiers.values().map(|n| n.expires_at);
        let subscribers = self
            .subscribers
            .values()
            .flat_map(|s| [Some(s.expires_at), s.refresh_at])
            .flatten();
        let publications = self
            .publications
            .values()
            .map(|p| p.expires_at)
            .chain(self.resubscribe.values().map(|(t, _)| *t));
        let out_publications = self.out_publications.values().filter_map(|p| p.refresh_at);
        let composing = self
            .composing
            .values()
            .copied()
            .chain(self.composing_out.values().map(|(refresh, _)| *refresh));
        clients
            .chain(composing)
            .chain(out_publications)
            .chain(servers)
            .chain(pending)
            .chain(notifiers)
            .chain(subscribers)
            .chain(publications)
            .min()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Client transactions: retransmit (timer E), time out (F), forget (K).
        let mut timed_out = Vec::new();
        while self
            .client_timers
            .peek()
            .is_some_and(|Reverse((due, _))| *due <= now)
        {
            let Some(Reverse((_, branch))) = self.client_timers.pop() else {
                break;
            };
            let Some(entry) = self.clients.get_mut(&branch) else {
                continue; // gone: a stale deadline
            };
            if entry.tx.deadline().is_none_or(|d| d > now) {
                continue; // rescheduled: its current deadline has an entry of its own
            }
            let mut failed = false;
            for action in entry.tx.on_timeout(now) {
                match action {
                    ClientAction::Retransmit(payload) => self.transmits.push_back(Transmit {
                        destination: entry.destination.clone(),
                        payload,
                    }),
                    ClientAction::TimedOut => failed = true,
                }
            }
            if failed {
                timed_out.push(branch);
            } else if entry.tx.is_terminated() {
                self.clients.remove(&branch);
            } else if let Some(next) = entry.tx.deadline().filter(|d| *d > now) {
                self.client_timers.push(Reverse((next, branch)));
            }
        }
        for branch in timed_out {
            if let Some(entry) = self.clients.remove(&branch) {
                self.note_unanswered(&entry);
                self.client_failed(entry.purpose, 408, "Request Timeout", None, now);
            }
        }
        // Server transactions: timer J.
        while self
            .server_timers
            .front()
            .is_some_and(|(due, _)| *due <= now)
        {
            let Some((_, key)) = self.server_timers.pop_front() else {
                break;
            };
            if let Some(s) = self.servers.get_mut(&key) {
                s.tx.on_timeout(now);
                if s.tx.is_terminated() {
                    self.servers.remove(&key);
                }
            }
        }
        // Incoming MESSAGEs nobody refused in time are accepted.
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(p) = self.pending.remove(&id) {
                self.respond(&p.server, &p.request, 200, None, Vec::new(), now);
            }
        }
        // Notifier subscriptions that were not refreshed.
        let expired: Vec<DialogKey> = self
            .notifiers
            .iter()
            .filter(|(_, n)| n.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(mut n) = self.notifiers.remove(&key) {
                let state = SubscriptionState {
                    state: SubState::Terminated,
                    expires: None,
                    reason: Some("timeout".into()),
                    retry_after: None,
                };
                // The dialog ends; the watcher's approval stays (no event for the router).
                self.send_notify(&mut n, state, None, now);
            }
        }
        self.retry_lapsed(now);
        // Subscriber refreshes and expiries.
        let keys: Vec<DialogKey> = self.subscribers.keys().cloned().collect();
        for key in keys {
            let Some(s) = self.subscribers.get_mut(&key) else {
                continue;
            };
            if s.expires_at <= now {
                if let Some(s) = self.subscribers.remove(&key) {
                    if !s.fetch && s.state != SubscriberState::Ending {
                        // Not refreshed in time: the partner is unreachable, not refusing.
                        self.lapse(s.dialog.local, s.dialog.remote, s.lapses, now);
                    }
                }
            } else if s.refresh_at.is_some_and(|t| t <= now) {
                s.refresh_at = None;
                let expires = self.config.default_expires;
                self.send_subscribe(&key, expires, true, now);
            }
        }
        // An "active" isComposing that was not refreshed lapses to idle.
        let lapsed: Vec<(Address, Address)> = self
            .composing
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (from, to) in lapsed {
            self.composing.remove(&(from.clone(), to.clone()));
            self.events.push_back(Event::Typing(Typing {
                from,
                to,
                state: ChatState::Paused,
            }));
        }
        // Local users still composing: refresh "active" before the peer lets it lapse, for
        // at most COMPOSING_REFRESH_LIMIT.
        let due: Vec<((Address, Address), Instant)> = self
            .composing_out
            .iter()
            .filter(|(_, (refresh, _))| *refresh <= now)
            .map(|(k, (_, until))| (k.clone(), *until))
            .collect();
        for ((from, to), until) in due {
            if now >= until {
                self.composing_out.remove(&(from, to));
                continue;
            }
            self.composing_out
                .insert((from.clone(), to.clone()), (now + COMPOSING_REFRESH, until));
            let _ = self.send_is_composing(&from, &to, ChatState::Composing, now);
        }
        // Our own publications due for a refresh (SIP-If-Match, no body).
        let due: Vec<OutKey> = self
            .out_publications
            .iter()
            .filter(|(_, p)| p.refresh_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.out_publications.get_mut(&key) {
                p.refresh_at = None;
            }
            self.send_publish(&key, false, self.config.default_expires, now);
        }
        // Publications that were not refreshed.
        let expired: Vec<String> = self
            .publications
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for etag in expired {
            if let Some(p) = self.publications.remove(&etag) {
                self.publication_gone(p.entity);
            }
        }
        self.tidy_timers();
    }

    /// A canonical event for a SIP user. Returns an error for events with no SIP form.
    pub fn send(&mut self, event: Event, now: Instant) -> Result<(), SendError> {
        let starts_request = match &event {
            Event::Message(_) | Event::Typing(_) | Event::Subscription(_) => true,
            Event::Presence(_) => true,
            Event::Failure(_) | Event::Receipt(_) => false,
        };
        if starts_request && self.clients.len() >= self.config.max_transactions {
            return Err(SendError::Busy);
        }
        match event {
            Event::Message(m) => self.send_message(m, now),
            Event::Typing(t) => self.send_typing(t, now),
            Event::Presence(p) => self.send_presence(p, now),
            Event::Subscription(s) => self.send_subscription(s, now),
            Event::Failure(f) => {
                // The answer to an incoming MESSAGE still waiting for one.
                if let Some(p) = self.pending.remove(&f.id) {
                    let (code, _) = status_for(f.code);
                    let mut extra = Vec::new();
                    if f.code == ErrorCode::PolicyViolation {
                        let text = single_line(&f.text);
                        let text = text.replace('"', "'");
                        extra.push((
                            "Warning",
                            format!(
                                "{} {} \"{}\"",
                                status::POLICY_WARN_CODE,
                                self.config.local_host,
                                text
                            ),
                        ));
                    }
                    if f.code == ErrorCode::RateLimited {
                        extra.push(("Retry-After", "60".to_string()));
                    }
                    self.respond(&p.server, &p.request, code, None, extra, now);
                }
                Ok(())
            }
            Event::Receipt(r) => {
                if let Some(p) = self.pending.remove(&r.id) {
                    self.respond(&p.server, &p.request, 200, None, Vec::new(), now);
                }
                Ok(())
            }
        }
    }

    // ----- incoming -----------------------------------------------------------------------

    fn handle_message(&mut self, msg: SipMessage, source: Source, now: Instant) {
        if msg.is_request() {
            self.handle_request(msg, source, now);
        } else {
            self.handle_response(msg, now);
        }
        self.tidy_timers();
    }

    fn handle_response(&mut self, msg: SipMessage, now: Instant) {
        let Ok(vias) = headers::vias(&msg) else {
            return;
        };
        let Some(branch) = vias.first().and_then(Via::branch) else {
            return;
        };
        let Ok((_, method)) = cseq(&msg) else { return };
        let Some(entry) = self.clients.get_mut(branch) else {
            return;
        };
        if !entry.tx.request_method_is(&method) {
            return;
        }
        let Some(resp) = entry.tx.on_response(msg, now) else {
            return;
        };
        let code = resp.status().unwrap_or(500);
        if code < 200 {
            return;
        }
        let purpose = entry.purpose.clone();
        if entry.tx.is_terminated() {
            self.clients.remove(branch);
        } else if let Some(next) = entry.tx.deadline() {
            self.client_timers.push(Reverse((next, branch.to_string())));
        }
        if code < 300 {
            self.client_succeeded(purpose, &resp, now);
        } else {
            let reason = match resp.start() {
                crate::message::StartLine::Response { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            self.client_failed(purpose, code, &reason, Some(&resp), now);
        }
    }

    fn handle_request(&mut self, msg: SipMessage, source: Source, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        if method == Method::Ack {
            return; // we answer INVITE statelessly with 405; nothing to acknowledge
        }
        // Without a usable top Via there is nowhere to answer.
        let Ok(vias) = headers::vias(&msg) else {
            return;
        };
        let Some(top) = vias.first() else { return };
        let reply_to = match source {
            Source::Datagram(addr) => {
                let port = if top.has_rport() { None } else { top.port };
                Destination::Datagram(match port {
                    Some(p) => SocketAddr::new(addr.ip(), p),
                    None => addr,
                })
            }
            Source::Stream(conn, _) => Destination::Connection(conn),
        };
        let branch = match top.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
            other => format!(
                "rfc2543:{}:{}:{}",
                other.unwrap_or(""),
                msg.header("Call-ID").unwrap_or(""),
                msg.header("CSeq").unwrap_or("")
            ),
        };
        let key = ServerKey {
            branch,
            sent_by: top.sent_by(),
            method: method.as_str().to_string(),
        };
        if let Some(entry) = self.servers.get(&key) {
            if let Some(bytes) = entry.tx.on_retransmission() {
                self.transmits.push_back(Transmit {
                    destination: entry.reply_to.clone(),
                    payload: bytes,
                });
            }
            return;
        }
        // Every response copies these; without them the request cannot be answered.
        if name_addr(&msg, "From").is_err()
            || name_addr(&msg, "To").is_err()
            || call_id(&msg).is_err()
            || cseq(&msg)
                .map(|(_, m)| m != method.as_str())
                .unwrap_or(true)
        {
            return;
        }
        if self.servers.len() >= self.config.max_transactions {
            // Stateless 503: no state is kept for a request we cannot afford.
            let extra = vec![("Retry-After", "5".to_string())];
            if let Some(resp) = self.build_response(&msg, 503, None, extra) {
                self.transmits.push_back(Transmit {
                    destination: reply_to,
                    payload: resp.to_bytes(),
                });
            }
            return;
        }
        let reliable = matches!(source, Source::Stream(..));
        self.servers.insert(
            key.clone(),
            ServerEntry {
                tx: ServerTransaction::new(reliable, self.config.timers),
                reply_to,
            },
        );
        if let Some(code) = self.precheck(&msg) {
            let mut extra = Vec::new();
            if code == 420 {
                let tags = msg.header_values("Require").join(", ");
                extra.push(("Unsupported", tags));
            }
            self.respond(&key, &msg, code, None, extra, now);
            return;
        }
        if let Some(reason) = self.refused_by_policy(&msg, &method) {
            let extra = vec![(
                "Warning",
                format!(
                    "399 {} \"{}\"",
                    self.config.local_host,
                    single_line(&reason).replace('"', "'")
                ),
            )];
            self.respond(&key, &msg, 403, None, extra, now);
            return;
        }
        let result = match method {
            Method::Options => {
                let extra = vec![
                    ("Allow", ALLOW.to_string()),
                    ("Accept", ACCEPT.to_string()),
                    ("Allow-Events", "presence".to_string()),
                ];
                self.respond(&key, &msg, 200, None, extra, now);
                Ok(())
            }
            Method::Message => self.on_message(&key, &msg, now),
            Method::Subscribe => self.on_subscribe(&key, &msg, source, now),
            Method::Notify => self.on_notify(&key, &msg, now),
            Method::Publish => self.on_publish(&key, &msg, now),
            Method::Cancel | Method::Bye => Err(Refuse(481, None)),
            _ => {
                let extra = vec![("Allow", ALLOW.to_string())];
                self.respond(&key, &msg, 405, None, extra, now);
                Ok(())
            }
        };
        if let Err(Refuse(code, text)) = result {
            let mut extra = Vec::new();
            if code == 415 {
                extra.push(("Accept", ACCEPT.to_string()));
            }
            if code == 489 {
                extra.push(("Allow-Events", "presence".to_string()));
            }
            if code == 423 {
                extra.push(("Min-Expires", self.config.min_expires.to_string()));
            }
            if code == 503 {
                extra.push(("Retry-After", "5".to_string()));
            }
            if let Some(t) = text {
                extra.push((
                    "Warning",
                    format!(
                        "399 {} \"{}\"",
                        self.config.local_host,
                        single_line(&t).replace('"', "'")
                    ),
                ));
            }
            self.respond(&key, &msg, code, None, extra, now);
        }
    }

    /// The admission policy's answer for a new (out-of-dialog) SUBSCRIBE or PUBLISH, asked for
    /// the sender's domain. Requests inside a dialog (refreshes, un-SUBSCRIBE) always pass.
    fn refused_by_policy(&self, msg: &SipMessage, method: &Method) -> Option<String> {
        let admission = self.admission.as_ref()?;
        if !matches!(method, Method::Subscribe | Method::Publish) {
            return None;
        }
        if name_addr(msg, "To").ok()?.tag().is_some() {
            return None;
        }
        let from = uri_to_address(&name_addr(msg, "From").ok()?.uri).ok()?;
        if self.is_local_domain(from.domain()) {
            return None;
        }
        admission.refuse(from.domain(), method)
    }

    /// Checks every request gets before its method is looked at (RFC 3261 §8.2.2, §16.3).
    fn precheck(&self, msg: &SipMessage) -> Option<u16> {
        let uri = msg.request_uri().unwrap_or("").to_ascii_lowercase();
        if !(uri.starts_with("sip:") || uri.starts_with("sips:")) {
            return Some(416);
        }
        if msg.header("Max-Forwards").map(str::trim) == Some("0") {
            return Some(483);
        }
        // We support no extensions a request could require of us.
        if !msg.header_values("Require").is_empty() {
            return Some(420);
        }
        None
    }

    fn is_local_domain(&self, domain: &str) -> bool {
        self.config.local_domains.is_empty()
            || self
                .config
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The sender (From) and the recipient (To) of an out-of-dialog request.
    fn parties(&self, msg: &SipMessage) -> Result<(Address, Address), Refuse> {
        let from = uri_to_address(&name_addr(msg, "From")?.uri)?;
        let to = uri_to_address(&name_addr(msg, "To")?.uri)?;
        if !self.is_local_domain(to.domain()) {
            return Err(Refuse(404, None));
        }
        Ok((from, to))
    }

    fn on_message(
        &mut self,
        key: &ServerKey,
        msg: &SipMessage,
        now: Instant,
    ) -> Result<(), Refuse> {
        let (from, to) = self.parties(msg)?;
        if msg.body().len() > self.config.max_body_bytes {
            return Err(Refuse(413, None));
        }
        let ctype = content_type(msg).unwrap_or_else(|| "text/plain".into());
        let (ctype, charset, body) = if ctype == "message/cpim" {
            let c = cpim::parse(msg.body()).map_err(|e| Refuse(400, Some(e.to_string())))?;
            (c.content_type, c.charset, Bytes::copy_from_slice(c.body))
        } else {
            let charset = msg.header("Content-Type").and_then(headers::charset_param);
            (ctype, charset, msg.body().clone())
        };
        match ctype.as_str() {
            "text/plain" => {
                // A message ends the sender's composing indication (RFC 3994 §4).
                self.composing.remove(&(from.clone(), to.clone()));
                let text: String = match charset.as_deref() {
                    None | Some("utf-8" | "utf8" | "us-ascii") => std::str::from_utf8(&body)
                        .map_err(|_| Refuse(400, Some("body is not UTF-8".into())))?
                        .to_string(),
                    // Each ISO-8859-1 byte is the Unicode code point of the same value.
                    Some("iso-8859-1" | "iso_8859-1" | "latin1" | "latin-1") => {
                        body.iter().map(|&b| char::from(b)).collect()
                    }
                    Some(_) => return Err(Refuse(415, Some("unsupported charset".into()))),
                };
                if text.contains('\0') {
                    return Err(Refuse(400, Some("body contains NUL".into())));
                }
                // Some agents send every MESSAGE of a conversation in one Call-ID, so the
                // CSeq number is part of the id.
                let id = format!("{}/{}", call_id(msg)?, cseq(msg)?.0);
                self.events.push_back(Event::Message(Message {
                    id: id.clone(),
                    from,
                    to,
                    body: text,
                    thread: None,
                    ts: self.wall(now),
                }));
                if self.config.message_answer_delay.is_zero() {
                    self.respond(key, msg, 200, None, Vec::new(), now);
                } else {
                    self.pending.insert(
                        id,
                        PendingAnswer {
                            server: key.clone(),
                            request: msg.clone(),
                            due: now + self.config.message_answer_delay,
                        },
                    );
                }
                Ok(())
            }
            iscomposing::CONTENT_TYPE => {
                let doc = iscomposing::parse(&body, &self.config.xml_limits)
                    .map_err(|e| Refuse(400, Some(e.to_string())))?;
                let pair = (from.clone(), to.clone());
                let changed = if doc.active {
                    // RFC 3994 §4: without a refresh within `refresh` seconds (120 by
                    // default) the sender is idle again.
                    let secs = doc.refresh.unwrap_or(120).clamp(1, 3600);
                    self.composing
                        .insert(pair, now + Duration::from_secs(secs.into()))
                        .is_none()
                } else {
                    self.composing.remove(&pair);
                    true
                };
                // A refresh of an indication already shown is not news.
                if changed {
                    self.events.push_back(Event::Typing(Typing {
                        from,
                        to,
                        state: doc.chat_state(),
                    }));
                }
                self.respond(key, msg, 200, None, Vec::new(), now);
                Ok(())
            }
            _ => Err(Refuse(415, None)),
        }
    }

    fn check_presence_event(msg: &SipMessage) -> Result<(), Refuse> {
        match event_package(msg).as_deref() {
            Some("presence") => Ok(()),
            _ => Err(Refuse(489, None)),
        }
    }

    fn granted_expires(&self, msg: &SipMessage) -> Result<u32, Refuse> {
        let asked = expires(msg).unwrap_or(self.config.default_expires);
        if asked != 0 && asked < self.config.min_expires {
            return Err(Refuse(423, None));
        }
        Ok(asked.min(self.config.max_expires))
    }

    fn on_subscribe(
        &mut self,
        key: &ServerKey,
        msg: &SipMessage,
        source: Source,
        now: Instant,
    ) -> Result<(), Refuse> {
        Self::check_presence_event(msg)?;
        let granted = self.granted_expires(msg)?;
        let to = name_addr(msg, "To")?;
        let from = name_addr(msg, "From")?;
        let call = call_id(msg)?.to_string();
        let (remote_cseq, _) = cseq(msg)?;
        if let Some(tag) = to.tag() {
            // A refresh or an un-SUBSCRIBE inside an existing dialog.
            let dkey = DialogKey {
                call_id: call,
                local_tag: tag.to_string(),
            };
            let Some(mut n) = self.notifiers.remove(&dkey) else {
                return Err(Refuse(481, None));
            };
            if n.dialog.remote_cseq.is_some_and(|c| remote_cseq <= c) {
                self.notifiers.insert(dkey, n);
                return Err(Refuse(500, Some("CSeq out of order".into())));
            }
            n.dialog.remote_cseq = Some(remote_cseq);
            if let Some(target) = contact_uri(msg) {
                n.dialog.remote_target = target;
            }
            let extra = vec![
                ("Expires", granted.to_string()),
                ("Contact", self.contact(n.dialog.transport)),
            ];
            self.respond(key, msg, 200, Some(&n.dialog.local_tag.clone()), extra, now);
            if granted == 0 {
                let state = SubscriptionState {
                    state: SubState::Terminated,
                    expires: None,
                    reason: Some("timeout".into()),
                    retry_after: None,
                };
                // The watcher ends the dialog (a logout, say), not its approval: nothing for
                // the router, and a later SUBSCRIBE is active at once.
                self.send_notify(&mut n, state, None, now);
            } else {
                n.expires_at = now + Duration::from_secs(granted.into());
                self.notify_current(&mut n, now);
                self.notifiers.insert(dkey, n);
            }
            return Ok(());
        }
        let watcher = uri_to_address(&from.uri)?;
        let presentity = uri_to_address(&to.uri)?;
        if !self.is_local_domain(presentity.domain()) {
            return Err(Refuse(404, None));
        }
        let remote_target = contact_uri(msg).ok_or(Refuse(400, Some("no Contact".into())))?;
        if self.notifiers.len() + self.subscribers.len() >= self.config.max_subscriptions {
            return Err(Refuse(503, None));
        }
        let local_tag = self.next_id("t");
        let (transport, connection) = match source {
            Source::Datagram(_) => (Transport::Udp, None),
            Source::Stream(c, t) => (t, Some(c)),
        };
        let mut n = Notifier {
            dialog: Dialog {
                call_id: call.clone(),
                local_tag: local_tag.clone(),
                remote_tag: from.tag().map(str::to_string),
                local: presentity.clone(),
                remote: watcher.clone(),
                remote_target,
                route_set: msg
                    .header_values("Record-Route")
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                local_cseq: 0,
                remote_cseq: Some(remote_cseq),
                transport,
                connection,
            },
            // A watcher the router approved before (in an earlier dialog) is active at once.
            state: if self
                .approved
                .contains_key(&(presentity.clone(), watcher.clone()))
            {
                NotifierState::Active
            } else {
                NotifierState::Pending
            },
            expires_at: now + Duration::from_secs(granted.into()),
            last_sent: None,
        };
        let extra = vec![
            ("Expires", granted.to_string()),
            ("Contact", self.contact(transport)),
        ];
        self.respond(key, msg, 200, Some(&local_tag), extra, now);
        if granted == 0 {
            // A fetch: one final NOTIFY and no subscription.
            let state = SubscriptionState {
                state: SubState::Terminated,
                expires: None,
                reason: Some("timeout".into()),
                retry_after: None,
            };
            self.send_notify(&mut n, state, None, now);
            return Ok(());
        }
        self.events.push_back(Event::Subscription(Subscription {
            from: watcher,
            to: presentity,
            kind: SubscriptionKind::Subscribe,
        }));
        self.notify_current(&mut n, now);
        self.notifiers.insert(
            DialogKey {
                call_id: call,
                local_tag,
            },
            n,
        );
        Ok(())
    }

    fn on_notify(&mut self, key: &ServerKey, msg: &SipMessage, now: Instant) -> Result<(), Refuse> {
        let max_expires = self.config.max_expires;
        Self::check_presence_event(msg)?;
        let state = msg
            .header("Subscription-State")
            .ok_or(Refuse(400, Some("no Subscription-State".into())))?;
        let state = SubscriptionState::parse(state)?;
        let to = name_addr(msg, "To")?;
        let from = name_addr(msg, "From")?;
        let dkey = DialogKey {
            call_id: call_id(msg)?.to_string(),
            local_tag: to.tag().unwrap_or("").to_string(),
        };
        let (remote_cseq, _) = cseq(msg)?;
        let Some(s) = self.subscribers.get_mut(&dkey) else {
            return Err(Refuse(481, None));
        };
        if s.dialog.remote_cseq.is_some_and(|c| remote_cseq <= c) {
            return Err(Refuse(500, Some("CSeq out of order".into())));
        }
        s.dialog.remote_cseq = Some(remote_cseq);
        if s.dialog.remote_tag.is_none() {
            s.dialog.remote_tag = from.tag().map(str::to_string);
        }
        if let Some(target) = contact_uri(msg) {
            s.dialog.remote_target = target;
        }
        let remote = s.dialog.remote.clone();
        let local = s.dialog.local.clone();
        let mut presence = None;
        if !msg.body().is_empty() && content_type(msg).as_deref() == Some(pidf::CONTENT_TYPE) {
            // A body we cannot read is ignored, not refused: the subscription stays.
            if let Ok(doc) = pidf::parse(msg.body(), &self.config.xml_limits) {
                presence = Some(doc.presence_kind());
            }
        }
        self.respond(key, msg, 200, None, Vec::new(), now);
        let Some(s) = self.subscribers.get_mut(&dkey) else {
            return Ok(());
        };
        match state.state {
            SubState::Pending | SubState::Active => {
                if state.state == SubState::Active {
                    if s.state != SubscriberState::Ending {
                        s.state = SubscriberState::Active;
                    }
                    if !s.reported && !s.fetch {
                        s.reported = true;
                        self.events.push_back(Event::Subscription(Subscription {
                            from: remote.clone(),
                            to: local.clone(),
                            kind: SubscriptionKind::Subscribed,
                        }));
                    }
                } else if s.state == SubscriberState::Sent {
                    s.state = SubscriberState::Pending;
                }
                if let Some(e) = state.expires.map(|e| e.min(max_expires)) {
                    s.expires_at = now + Duration::from_secs(e.into());
                    if s.state != SubscriberState::Ending && !s.fetch {
                        s.refresh_at = Some(now + refresh_after(e));
                    }
                }
            }
            SubState::Terminated => {
                let s = self.subscribers.remove(&dkey);
                if let Some(s) = s {
                    let resubscribe = matches!(
                        state.reason.as_deref(),
                        Some("deactivated") | Some("timeout")
                    ) && s.state != SubscriberState::Ending
                        && !s.fetch;
                    let later =
                        matches!(state.reason.as_deref(), Some("probation") | Some("giveup"))
                            && s.state != SubscriberState::Ending
                            && !s.fetch;
                    if resubscribe {
                        // RFC 6665 §4.1.3: these reasons invite an immediate new subscription.
                        self.start_subscription(s.dialog.local.clone(), remote.clone(), false, now);
                    } else if later {
                        // …and these one later: the notifier did not refuse.
                        self.lapse(s.dialog.local.clone(), remote.clone(), s.lapses, now);
                    } else if s.state != SubscriberState::Ending && !s.fetch {
                        self.events.push_back(Event::Subscription(Subscription {
                            from: remote.clone(),
                            to: local.clone(),
                            kind: SubscriptionKind::Unsubscribed,
                        }));
                    }
                }
            }
        }
        if let Some(kind) = presence {
            self.events.push_back(Event::Presence(Presence {
                from: remote,
                to: Some(local),
                kind,
            }));
        }
        Ok(())
    }

    fn on_publish(
        &mut self,
        key: &ServerKey,
        msg: &SipMessage,
        now: Instant,
    ) -> Result<(), Refuse> {
        Self::check_presence_event(msg)?;
        let uri = msg.request_uri().unwrap_or("");
        let entity = uri_to_address(uri).or_else(|_| uri_to_address(&name_addr(msg, "To")?.uri))?;
        if !self.config.local_domains.is_empty() && self.is_local_domain(entity.domain()) {
            // Partners publish their own users' presence, never ours.
            return Err(Refuse(
                403,
                Some("presence of local users is not published here".into()),
            ));
        }
        let granted = self.granted_expires(msg)?;
        let body_kind = if msg.body().is_empty() {
            None
        } else {
            if content_type(msg).as_deref() != Some(pidf::CONTENT_TYPE) {
                return Err(Refuse(415, None));
            }
            let doc = pidf::parse(msg.body(), &self.config.xml_limits)
                .map_err(|e| Refuse(400, Some(e.to_string())))?;
            Some(doc.presence_kind())
        };
        let previous = match msg.header("SIP-If-Match") {
            Some(etag) => {
                let etag = etag.trim().to_string();
                match self.publications.get(&etag) {
                    Some(p) if p.entity == entity => self.publications.remove(&etag),
                    _ => return Err(Refuse(412, None)),
                }
            }
            None => None,
        };
        let kind = match (body_kind, &previous) {
            (Some(k), _) => k,
            (None, Some(p)) => p.kind.clone(),
            (None, None) => return Err(Refuse(400, Some("initial PUBLISH without a body".into()))),
        };
        if granted == 0 {
            self.respond(key, msg, 200, None, vec![("Expires", "0".to_string())], now);
            self.publication_gone(entity);
            return Ok(());
        }
        if previous.is_none() && self.publications.len() >= self.config.max_publications {
            return Err(Refuse(503, None));
        }
        let etag = self.next_id("e");
        let changed = previous.as_ref().map(|p| p.kind != kind).unwrap_or(true);
        self.publications.insert(
            etag.clone(),
            Publication {
                entity: entity.clone(),
                kind: kind.clone(),
                expires_at: now + Duration::from_secs(granted.into()),
            },
        );
        let extra = vec![("SIP-ETag", etag), ("Expires", granted.to_string())];
        self.respond(key, msg, 200, None, extra, now);
        if changed {
            self.events.push_back(Event::Presence(Presence {
                from: entity,
                to: None,
                kind,
            }));
        }
        Ok(())
    }

    fn publication_gone(&mut self, entity: Address) {
        if !self.publications.values().any(|p| p.entity == entity) {
            self.events.push_back(Event::Presence(Presence {
                from: entity,
                to: None,
                kind: PresenceKind::Unavailable { status: None },
            }));
        }
    }

    // ----- outcomes of our own requests ---------------------------------------------------

    fn client_succeeded(&mut self, purpose: Purpose, resp: &SipMessage, now: Instant) {
        let max_expires = self.config.max_expires;
        if let Purpose::Publish { key, removing, .. } = &purpose {
            if *removing {
                return;
            }
            let etag = resp.header("SIP-ETag").map(|e| e.trim().to_string());
            let granted = expires(resp).unwrap_or(self.config.default_expires);
            if let Some(p) = self.out_publications.get_mut(key) {
                p.retried = false;
                p.etag = etag;
                p.refresh_at =
                    (granted > 0 && p.etag.is_some()).then(|| now + refresh_after(granted));
            }
            return;
        }
        if let Purpose::Subscribe { dialog, .. } = purpose {
            let granted = expires(resp);
            let to_tag = name_addr(resp, "To")
                .ok()
                .and_then(|n| n.tag().map(str::to_string));
            let target = contact_uri(resp);
            let routes: Vec<String> = resp
                .header_values("Record-Route")
                .into_iter()
                .rev()
                .map(str::to_string)
                .collect();
            let Some(s) = self.subscribers.get_mut(&dialog) else {
                return;
            };
            s.retried = false;
            if s.dialog.remote_tag.is_none() {
                s.dialog.remote_tag = to_tag;
                s.dialog.route_set = routes;
            }
            if let Some(t) = target {
                s.dialog.remote_target = t;
            }
            match granted {
                Some(0) => {
                    // Fetch or un-SUBSCRIBE: wait a little for the final NOTIFY, then forget.
                    s.refresh_at = None;
                    s.expires_at = now + self.config.timers.transaction_timeout();
                }
                Some(e) => {
                    let e = e.min(max_expires);
                    s.expires_at = now + Duration::from_secs(e.into());
                    if !s.fetch && s.state != SubscriberState::Ending {
                        s.refresh_at = Some(now + refresh_after(e));
                    }
                }
                None => {}
            }
        }
    }

    fn client_failed(
        &mut self,
        purpose: Purpose,
        code: u16,
        reason_phrase: &str,
        resp: Option<&SipMessage>,
        now: Instant,
    ) {
        match purpose {
            Purpose::Message { id, from, to } => {
                let err = status::error_for(code).unwrap_or(ErrorCode::Internal);
                let warning = resp
                    .and_then(|r| r.header("Warning"))
                    .map(|w| format!(" ({})", single_line(w)))
                    .unwrap_or_default();
                self.events.push_back(Event::Failure(Failure {
                    from: to,
                    to: from,
                    id,
                    code: err,
                    text: format!("{code} {}{warning}", single_line(reason_phrase)),
                }));
            }
            Purpose::Quiet => {}
            Purpose::Publish {
                key,
                conditional,
                removing,
            } => {
                if removing {
                    return;
                }
                let min = resp
                    .and_then(|r| r.header("Min-Expires"))
                    .and_then(|v| v.trim().parse::<u32>().ok());
                let Some(p) = self.out_publications.get_mut(&key) else {
                    return;
                };
                p.etag = None;
                p.refresh_at = None;
                if p.retried {
                    return;
                }
                p.retried = true;
                match (code, min) {
                    // RFC 3903 §6: the entity tag is unknown there; publish afresh.
                    (412, _) if conditional => {
                        self.send_publish(&key, true, self.config.default_expires, now)
                    }
                    (423, Some(min)) => {
                        self.send_publish(&key, true, min.min(self.config.max_expires), now)
                    }
                    _ => {}
                }
            }
            Purpose::Subscribe { dialog, refresh } => {
                let Some(mut s) = self.subscribers.remove(&dialog) else {
                    return;
                };
                if code == 423 && !s.retried {
                    // Interval too brief: ask again with the notifier's minimum.
                    if let Some(min) = resp
                        .and_then(|r| r.header("Min-Expires"))
                        .and_then(|v| v.trim().parse::<u32>().ok())
                    {
                        s.retried = true;
                        self.subscribers.insert(dialog.clone(), s);
                        self.send_subscribe(
                            &dialog,
                            min.min(self.config.max_expires),
                            refresh,
                            now,
                        );
                        return;
                    }
                }
                if s.fetch || s.state == SubscriberState::Ending {
                    return;
                }
                if refresh && code == 481 && !s.retried {
                    // The notifier forgot the dialog (a restart): start a fresh one.
                    self.start_subscription(s.dialog.local, s.dialog.remote, false, now);
                    return;
                }
                let unreachable = matches!(code, 408 | 480 | 500 | 502 | 503 | 504);
                if unreachable && (refresh || s.lapses > 0) {
                    // A subscription we had could not be kept up: try again later rather than
                    // take the partner's silence for a refusal.
                    self.lapse(s.dialog.local, s.dialog.remote, s.lapses, now);
                    return;
                }
                self.events.push_back(Event::Subscription(Subscription {
                    from: s.dialog.remote,
                    to: s.dialog.local,
                    kind: SubscriptionKind::Unsubscribed,
                }));
            }
            Purpose::Notify { dialog } => {
                // RFC 6665 §4.2.2: a failed NOTIFY ends the subscription dialog (the approval
                // stays: the watcher may subscribe again).
                self.notifiers.remove(&dialog);
            }
        }
    }

    // ----- outgoing -------------------------------------------------------------------------

    fn send_message(&mut self, m: Message, now: Instant) -> Result<(), SendError> {
        if m.body.len() > self.config.max_body_bytes {
            return Err(SendError::TooLarge);
        }
        // A message ends our composing indication at the receiver (RFC 3994 §4).
        self.composing_out.remove(&(m.from.clone(), m.to.clone()));
        let mut req = self.new_request(Method::Message, &m.from, &m.to)?;
        req.set_body("text/plain;charset=UTF-8", m.body.into_bytes())?;
        let purpose = Purpose::Message {
            id: m.id,
            from: m.from,
            to: m.to.clone(),
        };
        let dest = self.destination_for(&m.to);
        self.start_client(req, dest, purpose, now);
        Ok(())
    }

    fn send_typing(&mut self, t: Typing, now: Instant) -> Result<(), SendError> {
        let pair = (t.from.clone(), t.to.clone());
        if t.state == ChatState::Composing {
            let until = now + COMPOSING_REFRESH_LIMIT;
            self.composing_out
                .insert(pair, (now + COMPOSING_REFRESH, until));
        } else {
            self.composing_out.remove(&pair);
        }
        self.send_is_composing(&t.from, &t.to, t.state, now)
    }

    fn send_is_composing(
        &mut self,
        from: &Address,
        to: &Address,
        state: ChatState,
        now: Instant,
    ) -> Result<(), SendError> {
        let t = Typing {
            from: from.clone(),
            to: to.clone(),
            state,
        };
        let doc = iscomposing::IsComposing::from_chat_state(t.state);
        let mut req = self.new_request(Method::Message, &t.from, &t.to)?;
        req.set_body(iscomposing::CONTENT_TYPE, iscomposing::build(doc))?;
        let dest = self.destination_for(&t.to);
        self.start_client(req, dest, Purpose::Quiet, now);
        Ok(())
    }

    fn send_presence(&mut self, p: Presence, now: Instant) -> Result<(), SendError> {
        if p.kind == PresenceKind::Probe {
            let Some(to) = p.to else {
                return Err(SendError::Unsupported);
            };
            self.start_subscription(p.from, to, true, now);
            return Ok(());
        }
        match &p.to {
            None => {
                self.last_presence.insert(p.from.clone(), p.kind.clone());
                for ((local, _), kind) in self.approved.iter_mut() {
                    if *local == p.from {
                        *kind = Some(p.kind.clone());
                    }
                }
                for domain in self.config.publish_domains.clone() {
                    self.publish(p.from.clone(), domain, p.kind.clone(), now);
                }
            }
            Some(to) => {
                // Kept for the watcher's next dialog, even while it has none.
                if let Some(kind) = self.approved.get_mut(&(p.from.clone(), to.clone())) {
                    *kind = Some(p.kind.clone());
                }
            }
        }
        let keys: Vec<DialogKey> = self
            .notifiers
            .iter()
            .filter(|(_, n)| {
                n.state == NotifierState::Active
                    && n.dialog.local == p.from
                    && p.to.as_ref().is_none_or(|to| *to == n.dialog.remote)
                    // Watchers hear of changes only.
                    && n.last_sent.as_ref() != Some(&p.kind)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(mut n) = self.notifiers.remove(&key) {
                let state = self.active_state(&n, now);
                self.send_notify(&mut n, state, Some(&p.kind), now);
                self.notifiers.insert(key, n);
            }
        }
        Ok(())
    }

    fn send_subscription(&mut self, s: Subscription, now: Instant) -> Result<(), SendError> {
        if matches!(
            s.kind,
            SubscriptionKind::Subscribe | SubscriptionKind::Unsubscribe
        ) {
            // A new request or a withdrawal replaces a retry that was waiting.
            self.resubscribe.remove(&(s.from.clone(), s.to.clone()));
        }
        match s.kind {
            SubscriptionKind::Subscribe => {
                let exists = self.subscribers.values().any(|x| {
                    x.dialog.local == s.from
                        && x.dialog.remote == s.to
                        && !x.fetch
                        && x.state != SubscriberState::Ending
                });
                if !exists {
                    if self.notifiers.len() + self.subscribers.len()
                        >= self.config.max_subscriptions
                    {
                        return Err(SendError::Busy);
                    }
                    self.start_subscription(s.from, s.to, false, now);
                }
            }
            SubscriptionKind::Unsubscribe => {
                let keys: Vec<DialogKey> = self
                    .subscribers
                    .iter()
                    .filter(|(_, x)| {
                        x.dialog.local == s.from && x.dialog.remote == s.to && !x.fetch
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    if let Some(x) = self.subscribers.get_mut(&key) {
                        x.state = SubscriberState::Ending;
                        x.refresh_at = None;
                    }
                    self.send_subscribe(&key, 0, true, now);
                }
            }
            SubscriptionKind::Subscribed | SubscriptionKind::Unsubscribed => {
                let pair = (s.from.clone(), s.to.clone());
                if s.kind == SubscriptionKind::Unsubscribed {
                    self.approved.remove(&pair);
                } else if self.approved.contains_key(&pair)
                    || self.approved.len() < self.config.max_subscriptions
                {
                    let kind = self.last_presence.get(&s.from).cloned();
                    let entry = self.approved.entry(pair).or_insert(None);
                    if entry.is_none() {
                        *entry = kind;
                    }
                }
                let keys: Vec<DialogKey> = self
                    .notifiers
                    .iter()
                    .filter(|(_, n)| n.dialog.local == s.from && n.dialog.remote == s.to)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    let Some(mut n) = self.notifiers.remove(&key) else {
                        continue;
                    };
                    if s.kind == SubscriptionKind::Subscribed {
                        let was_pending = n.state == NotifierState::Pending;
                        n.state = NotifierState::Active;
                        if was_pending {
                            self.notify_current(&mut n, now);
                        }
                        self.notifiers.insert(key, n);
                    } else {
                        let state = SubscriptionState {
                            state: SubState::Terminated,
                            expires: None,
                            reason: Some("rejected".into()),
                            retry_after: None,
                        };
                        self.send_notify(&mut n, state, None, now);
                    }
                }
            }
        }
        Ok(())
    }

    /// RFC 3903 for one local user at one partner domain: initial, modify or remove.
    fn publish(&mut self, local: Address, domain: String, kind: PresenceKind, now: Instant) {
        let key = (local, domain);
        if matches!(kind, PresenceKind::Unavailable { .. }) {
            // Removal: Expires 0 with the entity tag; without one there is nothing to remove.
            let Some(p) = self.out_publications.remove(&key) else {
                return;
            };
            if let Some(etag) = p.etag {
                self.send_publish_request(&key, None, Some(etag), 0, true, now);
            }
            return;
        }
        let entry = self
            .out_publications
            .entry(key.clone())
            .or_insert(OutPublication {
                kind: kind.clone(),
                etag: None,
                refresh_at: None,
                retried: false,
            });
        entry.kind = kind;
        entry.retried = false;
        self.send_publish(&key, true, self.config.default_expires, now);
    }

    fn send_publish(&mut self, key: &OutKey, with_body: bool, expires: u32, now: Instant) {
        let Some(p) = self.out_publications.get(key) else {
            return;
        };
        let etag = p.etag.clone();
        // A refresh needs an entity tag; an initial or modifying PUBLISH carries the body.
        let body = if with_body || etag.is_none() {
            Some(p.kind.clone())
        } else {
            None
        };
        self.send_publish_request(key, body, etag, expires, false, now);
    }

    fn send_publish_request(
        &mut self,
        key: &OutKey,
        body: Option<PresenceKind>,
        etag: Option<String>,
        expires: u32,
        removing: bool,
        now: Instant,
    ) {
        let (local, domain) = key;
        let transport = self.transport_for(domain);
        let Ok(mut req) = self.new_request_over(Method::Publish, local, local, transport) else {
            return;
        };
        let mut ok = req.push("Event", "presence").is_ok()
            && req.push("Expires", expires.to_string()).is_ok();
        if let Some(etag) = &etag {
            ok &= req.push("SIP-If-Match", etag.clone()).is_ok();
        }
        if let Some(kind) = &body {
            match pidf::build(&address_to_uri(local), kind) {
                Ok(doc) => ok &= req.set_body(pidf::CONTENT_TYPE, doc).is_ok(),
                Err(_) => return,
            }
        }
        if !ok {
            return;
        }
        let dest = Destination::Resolve {
            host: domain.clone(),
            port: None,
            transport: self.transport_for(domain),
        };
        let purpose = Purpose::Publish {
            key: key.clone(),
            conditional: etag.is_some(),
            removing,
        };
        self.start_client(req, dest, purpose, now);
    }

    /// Our subscription to `remote` ended without the partner saying no: the contact is shown
    /// unavailable (once) and a new subscription is tried later, each time after twice the
    /// pause (30 s up to an hour). With too many waiting, it ends as a refusal would.
    fn lapse(&mut self, local: Address, remote: Address, lapses: u32, now: Instant) {
        let pair = (local, remote);
        if !self.resubscribe.contains_key(&pair)
            && self.resubscribe.len() >= self.config.max_subscriptions
        {
            self.events.push_back(Event::Subscription(Subscription {
                from: pair.1,
                to: pair.0,
                kind: SubscriptionKind::Unsubscribed,
            }));
            return;
        }
        if lapses == 0 {
            self.events.push_back(Event::Presence(Presence {
                from: pair.1.clone(),
                to: Some(pair.0.clone()),
                kind: PresenceKind::Unavailable { status: None },
            }));
        }
        let pause = Duration::from_secs((30u64 << lapses.min(7)).min(3600));
        self.resubscribe.insert(pair, (now + pause, lapses + 1));
    }

    /// Starts the subscriptions whose retry time has come.
    fn retry_lapsed(&mut self, now: Instant) {
        let due: Vec<((Address, Address), u32)> = self
            .resubscribe
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(pair, (_, n))| (pair.clone(), *n))
            .collect();
        for ((local, remote), lapses) in due {
            self.resubscribe.remove(&(local.clone(), remote.clone()));
            let key = self.start_subscription(local, remote, false, now);
            if let Some(s) = self.subscribers.get_mut(&key) {
                s.lapses = lapses;
                // The router knows this subscription already: its renewal is not news.
                s.reported = true;
            }
        }
    }

    fn start_subscription(
        &mut self,
        local: Address,
        remote: Address,
        fetch: bool,
        now: Instant,
    ) -> DialogKey {
        let key = DialogKey {
            call_id: self.new_call_id(),
            local_tag: self.next_id("t"),
        };
        let transport = self.transport_for(remote.domain());
        let s = Subscriber {
            dialog: Dialog {
                call_id: key.call_id.clone(),
                local_tag: key.local_tag.clone(),
                remote_tag: None,
                local,
                remote_target: address_to_uri(&remote),
                remote,
                route_set: Vec::new(),
                local_cseq: 0,
                remote_cseq: None,
                transport,
                connection: None,
            },
            state: SubscriberState::Sent,
            expires_at: now + Duration::from_secs(self.config.default_expires.into()),
            refresh_at: None,
            reported: false,
            fetch,
            retried: false,
            lapses: 0,
        };
        self.subscribers.insert(key.clone(), s);
        let expires = if fetch {
            0
        } else {
            self.config.default_expires
        };
        self.send_subscribe(&key, expires, false, now);
        key
    }

    fn send_subscribe(&mut self, key: &DialogKey, expires: u32, refresh: bool, now: Instant) {
        let Some(transport) = self.subscribers.get(key).map(|s| s.dialog.transport) else {
            return;
        };
        let contact = self.contact(transport);
        let Some(s) = self.subscribers.get_mut(key) else {
            return;
        };
        s.dialog.local_cseq += 1;
        let dialog = s.dialog.clone();
        let Ok(mut req) = self.in_dialog_request(Method::Subscribe, &dialog) else {
            return;
        };
        let ok = req.push("Event", "presence").is_ok()
            && req.push("Accept", pidf::CONTENT_TYPE).is_ok()
            && req.push("Expires", expires.to_string()).is_ok()
            && req.push("Contact", contact).is_ok();
        if !ok {
            return;
        }
        let dest = self.dialog_destination(&dialog);
        self.start_client(
            req,
            dest,
            Purpose::Subscribe {
                dialog: key.clone(),
                refresh,
            },
            now,
        );
    }

    fn active_state(&self, n: &Notifier, now: Instant) -> SubscriptionState {
        SubscriptionState {
            state: SubState::Active,
            expires: Some(
                u32::try_from(n.expires_at.saturating_duration_since(now).as_secs())
                    .unwrap_or(u32::MAX),
            ),
            reason: None,
            retry_after: None,
        }
    }

    /// The NOTIFY RFC 6665 requires after each SUBSCRIBE: pending, or active with the last
    /// presence we know of (no body if we know none).
    fn notify_current(&mut self, n: &mut Notifier, now: Instant) {
        match n.state {
            NotifierState::Pending => {
                let state = SubscriptionState {
                    state: SubState::Pending,
                    expires: Some(
                        u32::try_from(n.expires_at.saturating_duration_since(now).as_secs())
                            .unwrap_or(u32::MAX),
                    ),
                    reason: None,
                    retry_after: None,
                };
                self.send_notify(n, state, None, now);
            }
            NotifierState::Active => {
                let state = self.active_state(n, now);
                let kind = self
                    .approved
                    .get(&(n.dialog.local.clone(), n.dialog.remote.clone()))
                    .cloned()
                    .flatten()
                    .or_else(|| self.last_presence.get(&n.dialog.local).cloned());
                self.send_notify(n, state, kind.as_ref(), now);
            }
        }
    }

    fn send_notify(
        &mut self,
        n: &mut Notifier,
        state: SubscriptionState,
        kind: Option<&PresenceKind>,
        now: Instant,
    ) {
        n.dialog.local_cseq += 1;
        let Ok(mut req) = self.in_dialog_request(Method::Notify, &n.dialog) else {
            return;
        };
        let ok = req.push("Event", "presence").is_ok()
            && req.push("Subscription-State", state.to_value()).is_ok()
            && req
                .push("Contact", self.contact(n.dialog.transport))
                .is_ok();
        if !ok {
            return;
        }
        if let Some(kind) = kind {
            let entity = address_to_uri(&n.dialog.local);
            if let Ok(body) = pidf::build(&entity, kind) {
                if req.set_body(pidf::CONTENT_TYPE, body).is_err() {
                    return;
                }
                n.last_sent = Some(kind.clone());
            }
        }
        let dest = self.dialog_destination(&n.dialog);
        let dialog = DialogKey {
            call_id: n.dialog.call_id.clone(),
            local_tag: n.dialog.local_tag.clone(),
        };
        let purpose = if state.state == SubState::Terminated {
            Purpose::Quiet
        } else {
            Purpose::Notify { dialog }
        };
        self.start_client(req, dest, purpose, now);
    }

    // ----- building blocks -------------------------------------------------------------------

    fn wall(&self, now: Instant) -> OffsetDateTime {
        self.wall_start + now.saturating_duration_since(self.start)
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}{:x}", self.config.instance, self.counter)
    }

    fn new_call_id(&mut self) -> String {
        let id = self.next_id("c");
        format!("{id}@{}", self.config.local_host)
    }

    fn transport_for(&self, domain: &str) -> Transport {
        self.config
            .partner_transports
            .get(domain)
            .copied()
            .unwrap_or(self.config.default_transport)
    }

    fn destination_for(&self, to: &Address) -> Destination {
        Destination::Resolve {
            host: to.domain().to_string(),
            port: None,
            transport: self.transport_for(to.domain()),
        }
    }

    fn dialog_destination(&self, d: &Dialog) -> Destination {
        if let Some(c) = d.connection {
            return Destination::Connection(c);
        }
        let target = match d.route_set.first() {
            Some(route) => match NameAddr::parse(route) {
                Ok(r) if r.uri.contains(";lr") => r.uri,
                _ => d.remote_target.clone(),
            },
            None => d.remote_target.clone(),
        };
        uri_destination(&target, d.transport).unwrap_or(Destination::Resolve {
            host: d.remote.domain().to_string(),
            port: None,
            transport: d.transport,
        })
    }

    fn local_hostport(&self) -> String {
        match self.config.local_port {
            Some(p) => format!("{}:{p}", self.config.local_host),
            None => self.config.local_host.clone(),
        }
    }

    /// Our Contact; it names the transport so that requests inside a dialog made over TCP or
    /// TLS come back over the same transport.
    fn contact(&self, transport: Transport) -> String {
        let param = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        format!("<sip:{}{param}>", self.local_hostport())
    }

    fn via(&mut self, transport: Transport) -> String {
        let branch = self.next_id("z9hG4bK");
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.as_via(),
            self.local_hostport()
        )
    }

    /// An out-of-dialog request from a local user to a SIP user.
    fn new_request(
        &mut self,
        method: Method,
        from: &Address,
        to: &Address,
    ) -> Result<SipMessage, BuildError> {
        let transport = self.transport_for(to.domain());
        self.new_request_over(method, from, to, transport)
    }

    fn new_request_over(
        &mut self,
        method: Method,
        from: &Address,
        to: &Address,
        transport: Transport,
    ) -> Result<SipMessage, BuildError> {
        let via = self.via(transport);
        let tag = self.next_id("t");
        let call = self.new_call_id();
        let to_uri = address_to_uri(to);
        SipMessage::request(method.clone(), &to_uri)?
            .with("Via", via)?
            .with("Max-Forwards", "70")?
            .with("From", format!("<{}>;tag={tag}", address_to_uri(from)))?
            .with("To", format!("<{to_uri}>"))?
            .with("Call-ID", call)?
            .with("CSeq", format!("1 {method}"))?
            .with("User-Agent", self.config.user_agent.clone())
    }

    fn in_dialog_request(&mut self, method: Method, d: &Dialog) -> Result<SipMessage, BuildError> {
        let transport = match d.connection {
            Some(c) => self.framers.get(&c).map(|(t, _)| *t).unwrap_or(d.transport),
            None => d.transport,
        };
        let via = self.via(transport);
        let to = match &d.remote_tag {
            Some(t) => format!("<{}>;tag={t}", address_to_uri(&d.remote)),
            None => format!("<{}>", address_to_uri(&d.remote)),
        };
        let mut req = SipMessage::request(method.clone(), &d.remote_target)?
            .with("Via", via)?
            .with("Max-Forwards", "70")?
            .with(
                "From",
                format!("<{}>;tag={}", address_to_uri(&d.local), d.local_tag),
            )?
            .with("To", to)?
            .with("Call-ID", d.call_id.clone())?
            .with("CSeq", format!("{} {method}", d.local_cseq))?;
        for r in &d.route_set {
            req.push("Route", r.clone())?;
        }
        req.push("User-Agent", self.config.user_agent.clone())?;
        Ok(req)
    }

    fn start_client(
        &mut self,
        req: SipMessage,
        destination: Destination,
        purpose: Purpose,
        now: Instant,
    ) {
        let Some(branch) = headers::vias(&req)
            .ok()
            .and_then(|v| v.first().and_then(|v| v.branch().map(str::to_string)))
        else {
            return;
        };
        let reliable = match &destination {
            Destination::Datagram(_) => false,
            Destination::Connection(_) => true,
            Destination::Resolve { transport, .. } => transport.is_reliable(),
        };
        let method = req.method().cloned().unwrap_or(Method::Options);
        let bytes = req.to_bytes();
        self.transmits.push_back(Transmit {
            destination: destination.clone(),
            payload: bytes.clone(),
        });
        let tx =
            ClientTransaction::new(bytes, reliable, self.config.timers, now).with_method(method);
        if let Some(due) = tx.deadline() {
            self.client_timers.push(Reverse((due, branch.clone())));
        }
        self.clients.insert(
            branch,
            ClientEntry {
                tx,
                destination,
                purpose,
            },
        );
    }

    /// Answers a request through its server transaction (RFC 3261 §8.2.6).
    fn respond(
        &mut self,
        key: &ServerKey,
        req: &SipMessage,
        code: u16,
        to_tag: Option<&str>,
        extra: Vec<(&str, String)>,
        now: Instant,
    ) {
        let Some(resp) = self.build_response(req, code, to_tag, extra) else {
            return;
        };
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        if let Ok(bytes) = entry.tx.respond(&resp, now) {
            self.transmits.push_back(Transmit {
                destination: entry.reply_to.clone(),
                payload: bytes,
            });
            if let Some(due) = entry.tx.deadline() {
                self.server_timers.push_back((due, key.clone()));
            }
        }
        if entry.tx.is_terminated() {
            self.servers.remove(key);
        }
    }

    fn build_response(
        &mut self,
        req: &SipMessage,
        code: u16,
        to_tag: Option<&str>,
        extra: Vec<(&str, String)>,
    ) -> Option<SipMessage> {
        let mut resp = SipMessage::response(code, reason(code)).ok()?;
        for h in req.headers() {
            let copied = h.is("Via") || h.is("From") || h.is("Call-ID") || h.is("CSeq");
            // Record-Route is copied into 2xx only (RFC 3261 §12.1.1).
            if copied || (h.is("Record-Route") && (200..300).contains(&code)) {
                resp.push_header(h.clone());
            }
        }
        let to = req.header("To")?;
        let to = match NameAddr::parse(to) {
            Ok(n) if n.tag().is_none() && code > 100 => {
                let tag = match to_tag {
                    Some(t) => t.to_string(),
                    None => self.next_id("t"),
                };
                format!("{to};tag={tag}")
            }
            _ => to.to_string(),
        };
        resp.push("To", to).ok()?;
        resp.push("Server", self.config.user_agent.clone()).ok()?;
        for (name, value) in extra {
            resp.push(name, value).ok()?;
        }
        Some(resp)
    }
}

/// How often an outgoing "active" isComposing is repeated: before the 60 s refresh we announce.
const COMPOSING_REFRESH: Duration = Duration::from_secs(50);
/// Longest a single canonical "composing" keeps being refreshed without news.
const COMPOSING_REFRESH_LIMIT: Duration = Duration::from_secs(300);

const ALLOW: &str = "MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, OPTIONS";
const ACCEPT: &str =
    "text/plain, message/cpim, application/im-iscomposing+xml, application/pidf+xml";

#[derive(Debug, Clone, Copy)]
enum Source {
    Datagram(SocketAddr),
    Stream(ConnectionId, Transport),
}

/// Refresh a subscription when four fifths of its lifetime have passed.
fn refresh_after(expires: u32) -> Duration {
    Duration::from_secs(u64::from(expires) * 4 / 5)
}

fn contact_uri(msg: &SipMessage) -> Option<String> {
    let v = msg.header_values("Contact").into_iter().next()?;
    NameAddr::parse(v).ok().map(|n| n.uri)
}

/// Host, port and transport of a SIP URI, for sending to it. Without a `transport`
/// parameter (and for a `sip:` URI) the dialog's own transport is kept.
fn uri_destination(uri: &str, default: Transport) -> Option<Destination> {
    let lower = uri.to_ascii_lowercase();
    let (secure, rest) = if lower.starts_with("sips:") {
        (true, uri.get(5..)?)
    } else if lower.starts_with("sip:") {
        (false, uri.get(4..)?)
    } else {
        return None;
    };
    let (hostpart, params) = match rest.find([';', '?']) {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    let hostport = hostpart
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(hostpart);
    let (host, port) = split_hostport(hostport)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let params = params.to_ascii_lowercase();
    let transport = if secure || params.contains("transport=tls") {
        Transport::Tls
    } else if params.contains("transport=tcp") {
        Transport::Tcp
    } else if params.contains("transport=udp") {
        Transport::Udp
    } else {
        default
    };
    Some(Destination::Resolve {
        host,
        port,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_subscription_uses_the_partner_transport() {
        let t0 = Instant::now();
        let config = Config {
            partner_transports: HashMap::from([("corp-b.test".to_string(), Transport::Tls)]),
            ..Config::default()
        };
        let mut ep = Endpoint::new(config, t0, OffsetDateTime::UNIX_EPOCH);
        let bob = Address::parse("bob@hub.test").unwrap();
        let carol = Address::parse("carol@corp-b.test").unwrap();
        ep.send(
            Event::Subscription(Subscription {
                from: bob,
                to: carol,
                kind: SubscriptionKind::Subscribe,
            }),
            t0,
        )
        .unwrap();
        let t = ep.poll_transmit().unwrap();
        assert_eq!(
            t.destination,
            Destination::Resolve {
                host: "corp-b.test".into(),
                port: None,
                transport: Transport::Tls
            }
        );
        assert!(String::from_utf8_lossy(&t.payload).contains("SIP/2.0/TLS "));
        // Reliable transport: no retransmission timer, only timer F.
        assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    }

    #[test]
    fn uri_destinations() {
        assert_eq!(
            uri_destination("sip:carol@127.0.0.1:5072;transport=TCP", Transport::Udp),
            Some(Destination::Resolve {
                host: "127.0.0.1".into(),
                port: Some(5072),
                transport: Transport::Tcp
            })
        );
        assert_eq!(
            uri_destination("sips:[2001:db8::1]", Transport::Udp),
            Some(Destination::Resolve {
                host: "2001:db8::1".into(),
                port: None,
                transport: Transport::Tls
            })
        );
        assert_eq!(uri_destination("tel:+1", Transport::Udp), None);
        assert_eq!(
            uri_destination("sip:corp-b.test", Transport::Tcp),
            Some(Destination::Resolve {
                host: "corp-b.test".into(),
                port: None,
                transport: Transport::Tcp
            })
        );
    }
}
