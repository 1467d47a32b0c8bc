//! One driver task per endpoint: it moves datagrams, stream bytes and timers between the sockets
//! and the sans-IO [`Endpoint`], refuses requests from senders that are not partners (or not
//! authenticated as one) before the endpoint sees them, and hands the endpoint's events to the
//! router through a few ordered workers.

use super::reply;
use super::{origin_of, Delivery, Shared, SipAuth};
use crate::Tasks;
use bytes::Bytes;
use entente_model::{
    Address, ErrorCode, Event, Failure, Presence, PresenceKind, Receipt, SubscriptionKind,
};
use entente_policy::{ConnectionLimiter, Origin, Refusal};
use entente_sip::headers::{self, uri_to_address, NameAddr};
use entente_sip::wire::{SipParser, StreamDecoder};
use entente_sip::{
    Config, ConnectionId, Destination, Endpoint, SendError, SipMessage, SipxParser, StreamFramer,
    Transmit, Transport,
};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How long an incoming MESSAGE waits for the hub to commit it before it is answered 500
/// (never 200: a 200 means the hub has it).
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// RFC 3261 §18.1.1: larger requests to a UDP destination go over TCP instead.
const UDP_REQUEST_LIMIT: usize = 1300;
/// How long a connection may stay silent before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Writes that may wait for one connection before its peer is deemed not to read.
const LINK_QUEUE: usize = 4096;
/// Most stream connections per driver, inbound and outbound together.
const MAX_CONNECTIONS: usize = 1024;
/// Requests per second (and burst) one source IP may send before it is answered 503.
const SOURCE_RATE: f64 = 2000.0;
const SOURCE_BURST: u32 = 4000;
/// Responses per second (and burst) one source IP may send over UDP. They answer our own
/// requests, so a partner sends as many as we ask of it: counted apart from its requests, with
/// a bound only against a flood of made-up ones.
const RESPONSE_RATE: f64 = 20_000.0;
const RESPONSE_BURST: u32 = 40_000;
const MAX_SOURCES: usize = 10_000;
/// Router workers; events from one sender always go to the same one, so they stay in order.
const WORKERS: usize = 4;
const WORKER_QUEUE: usize = 1024;
/// Inputs (datagrams, router deliveries, connection bytes) taken at most in one turn of the
/// driver, before its output is flushed and its next deadline read again.
const BATCH: usize = 64;
/// Open transactions of each kind per endpoint (beyond it: 503 statelessly). A completed UDP
/// server transaction keeps its key and answer (under 1 KiB) for 32 s, so this bounds that
/// memory to about 128 MiB at full load.
const MAX_TRANSACTIONS: usize = 131_072;
/// Hub users known to watch a SIP user (for presence a partner PUBLISHes), at most.
const MAX_WATCHED: usize = 100_000;
/// How long an RFC 3263 answer is used before the name is looked up again (the resolver
/// keeps to the records' TTLs below this), and an empty answer.
const RESOLVED_FOR: Duration = Duration::from_secs(60);
const UNRESOLVED_FOR: Duration = Duration::from_secs(10);
/// Most names kept resolved, and longest wait for one lookup.
const MAX_RESOLVED: usize = 10_000;
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests waiting for one connection or one lookup, at most.
const MAX_WAITING: usize = 256;

/// What drivers share with their connection tasks and the edge.
#[derive(Debug)]
pub(crate) enum Input {
    Deliver(Delivery),
    Opened {
        id: u64,
        link: Link,
    },
    Bytes {
        id: u64,
        data: Bytes,
    },
    Closed {
        id: u64,
    },
    ConnectFailed {
        key: (SocketAddr, Transport),
        domain: String,
        error: String,
    },
    /// The answer to an RFC 3263 lookup of `name`.
    Resolved {
        name: String,
        targets: Vec<(SocketAddr, Transport)>,
    },
    /// The router's answer to an incoming MESSAGE.
    Submitted {
        answer: Answer,
        result: Result<(), Refusal>,
    },
}

/// A stream connection as the driver knows it.
#[derive(Debug)]
pub(crate) struct Link {
    tx: mpsc::Sender<Bytes>,
    transport: Transport,
    peer: SocketAddr,
    /// Certificate partner domains the peer's TLS certificate is valid for.
    verified: Vec<String>,
    /// Set for connections we opened, to reuse them.
    outbound: Option<(SocketAddr, Transport)>,
    /// The partner domain the connection speaks for: the one we opened it to, the one its
    /// certificate is valid for, or the one its first accepted request came from.
    domain: Option<String>,
    /// When it opened, seconds since the epoch.
    since: i64,
}

/// Who waits for the answer to an incoming MESSAGE.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    id: String,
    from: Address,
    to: Address,
}

/// Endpoint settings common to both drivers.
pub(crate) struct Settings {
    pub hub_domain: String,
    pub local_domains: Vec<String>,
    pub max_body_bytes: usize,
}

fn endpoint_config(
    settings: &Settings,
    shared: &Shared,
    local: SocketAddr,
    transport: Transport,
) -> Config {
    let auth = match transport {
        Transport::Tls => SipAuth::Certificate,
        _ => SipAuth::None,
    };
    let local_host = if local.ip().is_unspecified() {
        settings.hub_domain.clone()
    } else {
        match local.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    };
    let partner_transports = shared
        .partners
        .values()
        .filter(|p| p.auth == auth)
        .map(|p| (p.domain.clone(), transport))
        .collect();
    Config {
        local_host,
        local_port: Some(local.port()),
        local_domains: settings.local_domains.clone(),
        default_transport: transport,
        partner_transports,
        max_body_bytes: settings.max_body_bytes,
        // A backstop only: the driver answers every MESSAGE itself by ANSWER_DEADLINE.
        message_answer_delay: ANSWER_DEADLINE + Duration::from_secs(20),
        instance: format!("{:08x}", rand::random::<u32>()),
        // A UDP server transaction lingers 64·T1 (32 s) after its answer to absorb
        // retransmissions: this many carry about 4,000 requests/s over UDP, above what the
        // hub commits (the benchmark's SIP mode hit the former 32,768 at 1,024/s).
        max_transactions: MAX_TRANSACTIONS,
        ..Config::default()
    }
}

/// Starts the UDP/TCP driver; returns its input.
pub(crate) fn spawn_plain(
    shared: Arc<Shared>,
    settings: &Settings,
    udp: UdpSocket,
    tcp: TcpListener,
    local: SocketAddr,
    tasks: &mut Tasks,
) -> mpsc::Sender<Input> {
    let config = endpoint_config(settings, &shared, local, Transport::Udp);
    let (driver, tx) = Driver::new(shared.clone(), config, Some(Arc::new(udp)), Transport::Tcp);
    let ids = driver.ids.clone();
    tasks.spawn(accept_loop(shared, tcp, tx.clone(), ids, false));
    tasks.spawn(driver.run());
    tx
}

/// Starts the TLS driver (with its listener when one is configured); returns its input.
pub(crate) fn spawn_tls(
    shared: Arc<Shared>,
    settings: &Settings,
    tcp: Option<TcpListener>,
    local: SocketAddr,
    tasks: &mut Tasks,
) -> mpsc::Sender<Input> {
    let config = endpoint_config(settings, &shared, local, Transport::Tls);
    let (driver, tx) = Driver::new(shared.clone(), config, None, Transport::Tls);
    if let Some(tcp) = tcp {
        let ids = driver.ids.clone();
        tasks.spawn(accept_loop(shared, tcp, tx.clone(), ids, true));
    }
    tasks.spawn(driver.run());
    tx
}

// ----- connections --------------------------------------------------------------------------

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    driver: mpsc::Sender<Input>,
    ids: Arc<AtomicU64>,
    tls: bool,
) -> std::io::Result<()> {
    // Connections alive, handshakes included: beyond the cap new ones are closed at once.
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.shutdown.cancelled() => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "sip accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "too many SIP connections; refusing one");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let driver = driver.clone();
        let shared = shared.clone();
        let guard = LiveGuard::new(live.clone());
        tokio::spawn(async move {
            let _guard = guard;
            if tls {
                let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.server.clone());
                let stream = match tokio::time::timeout(
                    TLS_HANDSHAKE_TIMEOUT,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::debug!(%peer, "sips handshake failed");
                        return;
                    }
                };
                let verified = match stream.get_ref().1.peer_certificates() {
                    Some(chain) => {
                        let candidates: Vec<&str> = shared
                            .certificate_domains
                            .iter()
                            .map(String::as_str)
                            .collect();
                        shared.tls.verified_domains(chain, &candidates)
                    }
                    None => Vec::new(),
                };
                tracing::debug!(%peer, ?verified, "sips connection");
                let domain = verified.first().cloned();
                run_link(
                    stream,
                    id,
                    peer,
                    Transport::Tls,
                    verified,
                    None,
                    domain,
                    driver,
                    shared,
                )
                .await;
            } else {
                run_link(
                    stream,
                    id,
                    peer,
                    Transport::Tcp,
                    Vec::new(),
                    None,
                    None,
                    driver,
                    shared,
                )
                .await;
            }
        });
    }
}

/// Counts a live connection for as long as it is held.
struct LiveGuard(Arc<std::sync::atomic::AtomicUsize>);

impl LiveGuard {
    fn new(count: Arc<std::sync::atomic::AtomicUsize>) -> LiveGuard {
        count.fetch_add(1, Ordering::Relaxed);
        LiveGuard(count)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registers a connection with its driver, then pumps bytes both ways until either side ends.
#[allow(clippy::too_many_arguments)]
async fn run_link<S>(
    stream: S,
    id: u64,
    peer: SocketAddr,
    transport: Transport,
    verified: Vec<String>,
    outbound: Option<(SocketAddr, Transport)>,
    domain: Option<String>,
    driver: mpsc::Sender<Input>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut out) = mpsc::channel::<Bytes>(LINK_QUEUE);
    let link = Link {
        tx,
        transport,
        peer,
        verified,
        outbound,
        domain,
        since: super::epoch_secs(),
    };
    if driver.send(Input::Opened { id, link }).await.is_err() {
        return;
    }
    let (mut r, mut w) = tokio::io::split(stream);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            // Answers first: a peer that sends fast still gets them out in time.
            biased;
            b = out.recv() => match b {
                Some(b) => if w.write_all(&b).await.is_err() { break },
                None => break,
            },
            n = tokio::time::timeout(IDLE_TIMEOUT, r.read(&mut buf)) => match n {
                Ok(Ok(n)) if n > 0 => {
                    let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
                    if driver.send(Input::Bytes { id, data }).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            _ = shared.shutdown.cancelled() => break,
        }
    }
    let _ = w.shutdown().await;
    let _ = driver.send(Input::Closed { id }).await;
}

/// Opens a connection to a partner: TCP, or TLS whose certificate must be valid for `domain`.
async fn connect(
    shared: Arc<Shared>,
    key: (SocketAddr, Transport),
    domain: String,
    id: u64,
    driver: mpsc::Sender<Input>,
) {
    let (addr, transport) = key;
    let failed = |error: String| {
        let driver = driver.clone();
        let domain = domain.clone();
        async move {
            let _ = driver
                .send(Input::ConnectFailed { key, domain, error })
                .await;
        }
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%addr, %domain, error = %e, "cannot connect to SIP partner");
            return failed(format!("cannot connect to {addr}: {e}")).await;
        }
        Err(_) => {
            tracing::info!(%addr, %domain, "cannot connect to SIP partner: timed out");
            return failed(format!("cannot connect to {addr}: timed out")).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    if transport != Transport::Tls {
        run_link(
            tcp,
            id,
            addr,
            transport,
            Vec::new(),
            Some(key),
            Some(domain),
            driver,
            shared,
        )
        .await;
        return;
    }
    let connector = tokio_rustls::TlsConnector::from(shared.tls.client.clone());
    let name = match rustls_pki_types::ServerName::try_from(domain.clone()) {
        Ok(n) => n,
        Err(_) => return failed(format!("{domain} is not a TLS server name")).await,
    };
    let stream =
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(%addr, %domain, error = %e, "TLS handshake with SIP partner failed");
                return failed(format!("TLS handshake with {addr} failed: {e}")).await;
            }
            Err(_) => {
                tracing::info!(%addr, %domain, "TLS handshake with SIP partner timed out");
                return failed(format!("TLS handshake with {addr} timed out")).await;
            }
        };
    let verified = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| shared.tls.verified_domains(chain, &[domain.as_str()]))
        .unwrap_or_default();
    if !verified.contains(&domain) {
        tracing::warn!(%addr, %domain, "the partner's certificate is not valid for its domain; not sending");
        return failed(format!(
            "the certificate of {addr} is not valid for {domain}"
        ))
        .await;
    }
    run_link(
        stream,
        id,
        addr,
        transport,
        verified,
        Some(key),
        Some(domain),
        driver,
        shared,
    )
    .await;
}

// ----- the driver -----------------------------------------------------------------------------

/// Where a request came from, for the checks and for stateless answers.
#[derive(Debug, Clone, Copy)]
enum Source {
    Datagram(SocketAddr),
    Stream(u64),
}

struct Driver {
    ep: Endpoint,
    shared: Arc<Shared>,
    parser: SipxParser,
    /// Transport of this driver's streams (TCP for the plain driver, TLS for the other).
    stream_transport: Transport,
    udp: Option<Arc<UdpSocket>>,
    rx: mpsc::Receiver<Input>,
    tx: mpsc::Sender<Input>,
    ids: Arc<AtomicU64>,
    links: HashMap<u64, Link>,
    framers: HashMap<u64, StreamFramer>,
    outbound: HashMap<(SocketAddr, Transport), u64>,
    /// Requests waiting for a connection being opened, with the lookup they came from.
    connecting: HashMap<LinkKey, Vec<(Transmit, Option<Route>)>>,
    /// RFC 3263 answers by name (see [`Driver::target`]).
    resolved: HashMap<String, Resolved>,
    /// Requests waiting for a lookup, with the targets they have tried so far.
    resolving: HashMap<String, Vec<(Transmit, usize)>>,
    /// Requests to route again (a lookup answered, a connection failed), with their tries.
    requeue: Vec<(Transmit, usize)>,
    /// Incoming MESSAGEs waiting for the router, by the id the endpoint gave them.
    inflight: HashMap<String, (Instant, Answer)>,
    /// Token buckets per source address: (requests, responses).
    sources: HashMap<IpAddr, (ConnectionLimiter, ConnectionLimiter)>,
    workers: Vec<mpsc::Sender<Job>>,
    /// SIP user → hub users watching them, from the subscriptions and probes we sent.
    watchers: HashMap<Address, HashSet<Address>>,
    /// (hub user, SIP watcher) → the presence last sent, so that only changes are notified.
    presence_sent: HashMap<(Address, Address), PresenceKind>,
}

struct Job {
    event: Event,
    answer: Option<Answer>,
}

/// The partner policy in force, asked before a partner's SUBSCRIBE or PUBLISH is accepted, so
/// that a partner which may not exchange subscriptions or presence hears 403 at once.
#[derive(Debug)]
struct PolicyAdmission {
    router: std::sync::Weak<crate::router::Router>,
}

impl entente_sip::Admission for PolicyAdmission {
    fn refuse(&self, domain: &str, method: &entente_sip::Method) -> Option<String> {
        let router = self.router.upgrade()?;
        let traffic = router.policy().partner(domain).traffic;
        let (allowed, what) = match method {
            entente_sip::Method::Subscribe => (
                traffic.subscriptions && traffic.presence,
                "presence subscriptions",
            ),
            entente_sip::Method::Publish => (traffic.presence, "presence"),
            _ => (true, ""),
        };
        (!allowed).then(|| format!("partner policy: {domain} may not send {what}"))
    }
}

impl Driver {
    fn new(
        shared: Arc<Shared>,
        config: Config,
        udp: Option<Arc<UdpSocket>>,
        stream_transport: Transport,
    ) -> (Driver, mpsc::Sender<Input>) {
        let (tx, rx) = mpsc::channel(4096);
        let parser = SipxParser::new(config.limits);
        let mut ep = Endpoint::new(config, Instant::now(), time::OffsetDateTime::now_utc());
        ep.set_admission(Arc::new(PolicyAdmission {
            router: shared.router.clone(),
        }));
        let workers = (0..WORKERS)
            .map(|_| {
                let (wtx, wrx) = mpsc::channel(WORKER_QUEUE);
                tokio::spawn(worker(shared.router.clone(), wrx, tx.clone()));
                wtx
            })
            .collect();
        let driver = Driver {
            ep,
            shared,
            parser,
            stream_transport,
            udp,
            rx,
            tx: tx.clone(),
            ids: Arc::new(AtomicU64::new(1)),
            links: HashMap::new(),
            framers: HashMap::new(),
            outbound: HashMap::new(),
            connecting: HashMap::new(),
            resolved: HashMap::new(),
            resolving: HashMap::new(),
            requeue: Vec::new(),
            inflight: HashMap::new(),
            sources: HashMap::new(),
            workers,
            watchers: HashMap::new(),
            presence_sent: HashMap::new(),
        };
        (driver, tx)
    }

    fn is_tls(&self) -> bool {
        self.stream_transport == Transport::Tls
    }

    /// Reports a connection that speaks for `domain` to the admin API's link table.
    fn link_state(&self, id: u64, link: &Link, domain: String) {
        let auth = if link.verified.contains(&domain) {
            "certificate"
        } else {
            "address"
        };
        let state = crate::router::LinkState {
            direction: if link.outbound.is_some() {
                "outbound"
            } else {
                "inbound"
            },
            transport: super::transport_name(link.transport),
            auth,
            peer: Some(link.peer.to_string()),
            since: Some(link.since),
            last_error: None,
            domain,
        };
        self.shared.link_opened(self.is_tls(), id, state);
    }

    /// The partner a response came from: the domain of its To (our requests are addressed
    /// to the partner's users), or of its request URI's host for PUBLISH.
    fn responder(&self, msg: &SipMessage) -> Option<String> {
        let to = headers::name_addr(msg, "To").ok()?;
        let domain = uri_to_address(&to.uri).ok()?.domain().to_ascii_lowercase();
        self.shared.partner(&domain).map(|p| p.domain.clone())
    }

    /// A request of ours that timed out without an answer: the partner's last error.
    fn note_unanswered(&self, u: entente_sip::Unanswered) {
        let (transport, peer, host) = match &u.destination {
            Destination::Datagram(addr) => (Transport::Udp, Some(*addr), None),
            Destination::Connection(ConnectionId(id)) => match self.links.get(id) {
                Some(l) => (l.transport, Some(l.peer), l.domain.clone()),
                None => (self.stream_transport, None, None),
            },
            Destination::Resolve {
                host, transport, ..
            } => (*transport, None, Some(host.clone())),
        };
        let domain = [u.to_domain.as_deref(), host.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|d| self.shared.partner(d).map(|p| p.domain.clone()));
        let Some(domain) = domain else {
            return;
        };
        let text = format!("no answer to {} within {} s", u.method, u.after.as_secs());
        self.shared.failed(&domain, transport, peer, text);
    }

    fn host(&self) -> &str {
        &self.ep.config().local_host
    }

    async fn run(mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 65_536];
        let udp = self.udp.clone();
        loop {
            self.flush().await;
            let deadline = self
                .ep
                .poll_timeout()
                .into_iter()
                .chain(self.inflight.values().map(|(d, _)| *d))
                .min();
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => break,
                input = self.rx.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                r = recv_from(udp.as_deref(), &mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(from, buf.get(..n).unwrap_or(&[])),
                    Err(e) => {
                        // ICMP port-unreachable from an earlier send shows up here on Linux.
                        tracing::debug!(error = %e, "sip udp receive");
                    }
                },
                _ = sleep_until(deadline) => self.on_timeout(),
            }
            // Whatever else is ready now is taken before the next flush and timer reading.
            for _ in 0..BATCH {
                let mut progressed = false;
                if let Ok(input) = self.rx.try_recv() {
                    self.on_input(input);
                    progressed = true;
                }
                if let Some(u) = udp.as_deref() {
                    match u.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            self.on_datagram(from, buf.get(..n).unwrap_or(&[]));
                            progressed = true;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => tracing::debug!(error = %e, "sip udp receive"),
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
        Ok(())
    }

    fn on_timeout(&mut self) {
        let now = Instant::now();
        self.ep.handle_timeout(now);
        let late: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some((_, a)) = self.inflight.remove(&id) {
                tracing::warn!(id = %a.id, "the hub did not commit an incoming message in time");
                self.answer(
                    a,
                    Err(Refusal::new(
                        ErrorCode::Internal,
                        "the hub could not store this in time; try again",
                    )),
                );
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Deliver((event, reply)) => {
                let result = self.deliver(event);
                let _ = reply.send(result);
            }
            Input::Opened { id, link } => {
                if self.links.len() >= MAX_CONNECTIONS {
                    tracing::warn!(peer = %link.peer, "too many SIP connections; closing a new one");
                    if let Some(key) = link.outbound {
                        self.connect_failed(key, "too many SIP connections".into());
                    }
                    return; // dropping the link's sender ends its task
                }
                self.framers
                    .insert(id, StreamFramer::new(self.ep.config().limits));
                if let Some(key) = link.outbound {
                    self.outbound.insert(key, id);
                    for (t, _) in self.connecting.remove(&key).unwrap_or_default() {
                        if link.tx.try_send(t.payload.clone()).is_err() {
                            self.ep.handle_transport_error(&t, Instant::now());
                        }
                    }
                }
                if let Some(domain) = link.domain.clone() {
                    self.link_state(id, &link, domain);
                }
                self.links.insert(id, link);
            }
            Input::Bytes { id, data } => self.on_stream_bytes(id, &data),
            Input::Closed { id } => self.close(id),
            Input::ConnectFailed { key, domain, error } => {
                self.shared
                    .failed(&domain, key.1, Some(key.0), error.clone());
                self.connect_failed(key, error)
            }
            Input::Resolved { name, targets } => self.on_resolved(name, targets),
            Input::Submitted { answer, result } => {
                if self.inflight.remove(&answer.id).is_some() {
                    self.answer(answer, result);
                }
            }
        }
    }

    /// A connection could not be opened: requests that came from a lookup move on to its
    /// next target (RFC 3263 §4.3); the others fail.
    fn connect_failed(&mut self, key: (SocketAddr, Transport), error: String) {
        let now = Instant::now();
        tracing::debug!(peer = %key.0, %error, "SIP connection failed");
        for (t, route) in self.connecting.remove(&key).unwrap_or_default() {
            match route {
                Some(route) if self.next_target(&route) => {
                    self.requeue.push((t, route.tries + 1));
                }
                _ => self.ep.handle_transport_error(&t, now),
            }
        }
    }

    /// Moves the lookup `route` came from past the target that failed; false when it was the
    /// last one (the next request then starts from the first again).
    fn next_target(&mut self, route: &Route) -> bool {
        let plain = self.stream_transport != Transport::Tls;
        let Some(r) = self.resolved.get_mut(&route.name) else {
            return false;
        };
        if route.index + 1 >= r.targets.len() || route.tries + 1 >= MAX_TRIES {
            r.good = 0;
            return false;
        }
        if r.good <= route.index {
            r.good = route.index + 1;
            if let Some((addr, transport)) = r.targets.get(r.good).copied() {
                tracing::info!(name = %route.name, %addr, ?transport, "trying the next SIP target");
                if let Some(domain) = r.partner.clone() {
                    self.ep
                        .set_partner_transport(&domain, endpoint_transport(transport, plain));
                }
            }
        }
        true
    }

    /// An RFC 3263 answer: kept for [`RESOLVED_FOR`], and the requests that waited for it
    /// are routed again.
    fn on_resolved(&mut self, name: String, targets: Vec<(SocketAddr, Transport)>) {
        let now = Instant::now();
        let waiting = self.resolving.remove(&name).unwrap_or_default();
        let partner = waiting
            .first()
            .and_then(|(t, _)| self.partner_named(&name, &t.payload));
        tracing::debug!(%name, ?targets, "SIP targets resolved");
        if let (Some(domain), Some((_, transport))) = (&partner, targets.first()) {
            let plain = self.stream_transport != Transport::Tls;
            self.ep
                .set_partner_transport(domain, endpoint_transport(*transport, plain));
        }
        if self.resolved.len() >= MAX_RESOLVED {
            self.resolved.retain(|_, r| r.until > now);
            if self.resolved.len() >= MAX_RESOLVED {
                self.resolved.clear();
            }
        }
        let until = now
            + if targets.is_empty() {
                UNRESOLVED_FOR
            } else {
                RESOLVED_FOR
            };
        self.resolved.insert(
            name,
            Resolved {
                targets,
                good: 0,
                until,
                partner,
            },
        );
        self.requeue.extend(waiting);
    }

    /// The partner domain `name` was looked up for, when it is the domain itself (not a
    /// host from a Contact).
    fn partner_named(&self, name: &str, payload: &[u8]) -> Option<String> {
        let msg = self.parser.parse_datagram(payload).ok()?;
        let to = headers::name_addr(&msg, "To").ok()?;
        let domain = uri_to_address(&to.uri).ok()?.domain().to_ascii_lowercase();
        (lookup_name(&domain, None, Transport::Udp) == name).then_some(domain)
    }

    fn close(&mut self, id: u64) {
        if let Some(link) = self.links.remove(&id) {
            if link.domain.is_some() {
                self.shared.link_closed(self.is_tls(), id);
            }
            if let Some(key) = link.outbound {
                if self.outbound.get(&key) == Some(&id) {
                    self.outbound.remove(&key);
                }
            }
        }
        self.framers.remove(&id);
        self.ep.handle_connection_closed(ConnectionId(id));
    }

    /// Tells the endpoint how the hub took an incoming MESSAGE: 200 once committed, the
    /// refusal's status otherwise (mapped in `entente_sip::status`, the one place).
    fn answer(&mut self, a: Answer, result: Result<(), Refusal>) {
        let event = match result {
            Ok(()) => Event::Receipt(Receipt {
                from: a.to,
                to: a.from,
                id: a.id,
            }),
            Err(r) => Event::Failure(Failure {
                from: a.to,
                to: a.from,
                id: a.id,
                code: r.code,
                text: r.text,
            }),
        };
        let _ = self.ep.send(event, Instant::now());
    }

    // ----- outbound ---------------------------------------------------------------------

    fn deliver(&mut self, event: Event) -> Result<(), Refusal> {
        let now = Instant::now();
        self.note_watch(&event);
        match &event {
            Event::Subscription(s) if s.kind == SubscriptionKind::Subscribed => {
                // An approval: the NOTIFY that activates the subscription carries the user's
                // current presence, which the endpoint takes from the user's last broadcast.
                if let Some(router) = self.shared.router.upgrade() {
                    let kind = router.presence_of(&s.from);
                    self.note_sent(&s.from, &s.to, Some(kind.clone()));
                    let current = Presence {
                        from: s.from.clone(),
                        to: None,
                        kind,
                    };
                    let _ = self.ep.send(Event::Presence(current), now);
                }
            }
            Event::Subscription(s) if s.kind == SubscriptionKind::Unsubscribed => {
                self.note_sent(&s.from, &s.to, None);
            }
            Event::Presence(Presence {
                from,
                to: Some(to),
                kind,
            }) if *kind != PresenceKind::Probe => {
                // Watchers are told of changes only: the same presence twice is one NOTIFY.
                let key = (from.clone(), to.clone());
                if self.presence_sent.get(&key) == Some(kind) {
                    return Ok(());
                }
                self.note_sent(from, to, Some(kind.clone()));
            }
            _ => {}
        }
        self.ep.send(event, now).map_err(|e| match e {
            SendError::TooLarge => Refusal::new(ErrorCode::TooLarge, "too large for SIP"),
            SendError::Busy => Refusal::new(
                ErrorCode::RateLimited,
                "too many requests in flight to SIP partners; try again",
            ),
            SendError::Unsupported => Refusal::new(ErrorCode::BadRequest, "this has no SIP form"),
            SendError::Build(e) => Refusal::new(ErrorCode::BadRequest, e.to_string()),
        })?;
        Ok(())
    }

    /// Remembers the presence last sent from a hub user to a SIP watcher (`None` forgets it).
    fn note_sent(&mut self, from: &Address, to: &Address, kind: Option<PresenceKind>) {
        let key = (from.clone(), to.clone());
        match kind {
            Some(kind) => {
                if self.presence_sent.len() >= MAX_WATCHED && !self.presence_sent.contains_key(&key)
                {
                    self.presence_sent.clear();
                }
                self.presence_sent.insert(key, kind);
            }
            None => {
                self.presence_sent.remove(&key);
            }
        }
    }

    /// Remembers which hub users watch which SIP users, for presence a partner publishes.
    fn note_watch(&mut self, event: &Event) {
        let (watcher, watched, on) = match event {
            Event::Subscription(s) => match s.kind {
                SubscriptionKind::Subscribe => (&s.from, &s.to, true),
                SubscriptionKind::Unsubscribe => (&s.from, &s.to, false),
                _ => return,
            },
            Event::Presence(Presence {
                from,
                to: Some(to),
                kind: PresenceKind::Probe,
            }) => (from, to, true),
            _ => return,
        };
        if on {
            if self.watchers.len() >= MAX_WATCHED {
                return;
            }
            self.watchers
                .entry(watched.clone())
                .or_default()
                .insert(watcher.clone());
        } else if let Some(set) = self.watchers.get_mut(watched) {
            set.remove(watcher);
            if set.is_empty() {
                self.watchers.remove(watched);
            }
        }
    }

    async fn flush(&mut self) {
        loop {
            let mut idle = true;
            for (t, tries) in std::mem::take(&mut self.requeue) {
                idle = false;
                self.route(t, tries).await;
            }
            while let Some(t) = self.ep.poll_transmit() {
                idle = false;
                self.transmit(t).await;
            }
            while let Some(e) = self.ep.poll_event() {
                idle = false;
                self.inbound_event(e);
            }
            while let Some(u) = self.ep.poll_unanswered() {
                self.note_unanswered(u);
            }
            if idle {
                return;
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        match &t.destination {
            Destination::Datagram(addr) => {
                if let Some(udp) = &self.udp {
                    if let Err(e) = udp.send_to(&t.payload, addr).await {
                        tracing::debug!(%addr, error = %e, "sip udp send");
                    }
                }
            }
            Destination::Connection(ConnectionId(id)) => {
                if !self.write(*id, t.payload.clone()) {
                    self.ep.handle_transport_error(&t, Instant::now());
                }
            }
            Destination::Resolve { .. } => self.route(t, 0).await,
        }
    }

    /// Sends a request the endpoint addressed by name, after `tries` targets failed.
    async fn route(&mut self, t: Transmit, tries: usize) {
        let Destination::Resolve {
            host,
            port,
            transport,
        } = &t.destination
        else {
            return;
        };
        let Some(target) = self.target(host, *port, *transport, &t.payload) else {
            tracing::info!(%host, "no way to reach this SIP destination (not a partner, or a pinned partner's unknown host)");
            self.ep.handle_transport_error(&t, Instant::now());
            return;
        };
        let (name, host, port) = match target.place {
            Place::Address(addr) => {
                return self
                    .send_to(addr, target.transport, target.domain, t, None)
                    .await;
            }
            Place::Lookup { name, host, port } => (name, host, port),
        };
        let now = Instant::now();
        if let Some(r) = self.resolved.get(&name).filter(|r| r.until > now) {
            let index = r.good.min(r.targets.len().saturating_sub(1));
            let Some((addr, transport)) = r.targets.get(index).copied() else {
                tracing::info!(%name, "no DNS records for this SIP destination");
                let text = format!("no DNS records (SRV, A or AAAA) for {host}");
                self.shared
                    .failed(&target.domain, target.transport, None, text);
                self.ep.handle_transport_error(&t, now);
                return;
            };
            let route = Route { name, index, tries };
            return self
                .send_to(addr, transport, target.domain, t, Some(route))
                .await;
        }
        let Some(dns) = self.shared.dns.clone() else {
            let text = "no resolver to look the partner up with".to_string();
            self.shared
                .failed(&target.domain, target.transport, None, text);
            self.ep.handle_transport_error(&t, now);
            return;
        };
        let waiting = self.resolving.entry(name.clone()).or_default();
        if waiting.len() >= MAX_WAITING {
            self.ep.handle_transport_error(&t, now);
            return;
        }
        waiting.push((t, tries));
        if waiting.len() > 1 {
            return; // a lookup is under way
        }
        let tx = self.tx.clone();
        let (transport, tls_only) = (target.transport, target.tls_only);
        tokio::spawn(async move {
            let targets = tokio::time::timeout(
                LOOKUP_TIMEOUT,
                dns.sip_targets(&host, port, transport, tls_only),
            )
            .await
            .unwrap_or_default();
            let _ = tx.send(Input::Resolved { name, targets }).await;
        });
    }

    /// Sends to one address over `transport`: over TCP instead when a UDP request is larger
    /// than [`UDP_REQUEST_LIMIT`]; the top Via names the transport actually used.
    async fn send_to(
        &mut self,
        addr: SocketAddr,
        transport: Transport,
        domain: String,
        mut t: Transmit,
        route: Option<Route>,
    ) {
        let mut transport = transport;
        if transport == Transport::Udp && t.payload.len() > UDP_REQUEST_LIMIT {
            transport = Transport::Tcp;
        }
        if let Some(payload) = with_via_transport(&self.parser, &t.payload, transport) {
            t.payload = payload;
        }
        if transport != Transport::Udp {
            return self.send_stream((addr, transport), domain, t, route);
        }
        let Some(udp) = &self.udp else {
            self.ep.handle_transport_error(&t, Instant::now());
            return;
        };
        if let Err(e) = udp.send_to(&t.payload, addr).await {
            tracing::debug!(%addr, error = %e, "sip udp send");
            let text = format!("cannot send to {addr}: {e}");
            self.shared
                .failed(&domain, Transport::Udp, Some(addr), text);
            self.ep.handle_transport_error(&t, Instant::now());
        }
    }

    /// Sends on the connection to `key`, opening one when there is none.
    fn send_stream(
        &mut self,
        key: (SocketAddr, Transport),
        domain: String,
        t: Transmit,
        route: Option<Route>,
    ) {
        if let Some(id) = self.outbound.get(&key).copied() {
            if self.links.contains_key(&id) {
                if !self.write(id, t.payload.clone()) {
                    self.ep.handle_transport_error(&t, Instant::now());
                }
                return;
            }
        }
        if let Some(queue) = self.connecting.get_mut(&key) {
            if queue.len() < MAX_WAITING {
                queue.push((t, route));
            } else {
                self.ep.handle_transport_error(&t, Instant::now());
            }
            return;
        }
        self.connecting.insert(key, vec![(t, route)]);
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connect(
            self.shared.clone(),
            key,
            domain,
            id,
            self.tx.clone(),
        ));
    }

    /// Where a request the endpoint addressed by name goes. The partner is the domain of the
    /// request's To (our own bytes). An IP literal (a Contact or Record-Route it gave us inside
    /// a dialog) is used as given; a pinned partner's domain means its pinned address; any
    /// other name is looked up (RFC 3263), unless the partner is pinned: a pinned partner is
    /// never looked up. Certificate partners are always reached over TLS.
    fn target(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Transport,
        payload: &[u8],
    ) -> Option<Target> {
        let msg = self.parser.parse_datagram(payload).ok()?;
        let to = headers::name_addr(&msg, "To").ok()?;
        let domain = uri_to_address(&to.uri).ok()?.domain().to_string();
        let partner = self.shared.partner(&domain)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls_only =
            partner.auth == SipAuth::Certificate || self.stream_transport == Transport::Tls;
        let transport = match transport {
            _ if tls_only => Transport::Tls,
            Transport::Tls => Transport::Tcp,
            t => t,
        };
        let place = match host.parse::<IpAddr>() {
            Ok(ip) => {
                let default = if transport == Transport::Tls {
                    5061
                } else {
                    5060
                };
                Place::Address(SocketAddr::new(ip, port.unwrap_or(default)))
            }
            Err(_) => match self.shared.partner(host) {
                Some(p) if p.pinned => Place::Address(p.address?),
                _ if partner.pinned => return None,
                _ => Place::Lookup {
                    name: lookup_name(host, port, transport),
                    host: host.to_ascii_lowercase(),
                    port,
                },
            },
        };
        Some(Target {
            domain: partner.domain.clone(),
            transport,
            tls_only,
            place,
        })
    }

    // ----- inbound ----------------------------------------------------------------------

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return; // keep-alive
        }
        let response = data.starts_with(b"SIP/2.0 ");
        if !self.source_allowed(from.ip(), response) {
            return; // a flood: dropped before any parsing
        }
        match self.parser.parse_datagram(data) {
            Ok(msg) => {
                if msg.is_request() && !self.authorized(&msg, Source::Datagram(from)) {
                    return;
                }
                if !msg.is_request() {
                    if let Some(domain) = self.responder(&msg) {
                        self.shared.heard_over_udp(&domain, from, false);
                        self.shared.answered_by(&domain);
                    }
                }
                if let Err(e) = self.ep.handle_datagram(from, data, Instant::now()) {
                    tracing::debug!(%from, error = %e, "sip datagram refused");
                }
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "sip datagram refused");
                let host = self.host().to_string();
                if let Some((req, bytes)) = reply::refused_bytes(&self.parser, data, &e, &host) {
                    let to = reply::datagram_reply_to(&req, from);
                    self.send_datagram(to, bytes);
                }
            }
        }
    }

    fn on_stream_bytes(&mut self, id: u64, data: &[u8]) {
        let Some(framer) = self.framers.get_mut(&id) else {
            return;
        };
        match framer.push(data) {
            Ok(messages) => {
                for msg in messages {
                    if msg.is_request() {
                        let ip = self.links.get(&id).map(|l| l.peer.ip());
                        if let Some(ip) = ip {
                            if !self.source_allowed(ip, false) {
                                let host = self.host().to_string();
                                let extra = [("Retry-After", "5".to_string())];
                                if let Some(b) = reply::stateless(&msg, 503, None, &host, &extra) {
                                    self.send_on(id, b);
                                }
                                continue;
                            }
                        }
                        if !self.authorized(&msg, Source::Stream(id)) {
                            continue;
                        }
                    } else if let Some(domain) = self.responder(&msg) {
                        self.shared.answered_by(&domain);
                    }
                    let transport = self
                        .links
                        .get(&id)
                        .map(|l| l.transport)
                        .unwrap_or(self.stream_transport);
                    let bytes = msg.to_bytes();
                    if let Err(e) = self.ep.handle_stream_bytes(
                        ConnectionId(id),
                        transport,
                        &bytes,
                        Instant::now(),
                    ) {
                        tracing::debug!(error = %e, "sip stream refused by the endpoint");
                        self.drop_link(id);
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "sip stream framing lost; closing");
                let host = self.host().to_string();
                if let Some((_, bytes)) = reply::refused_bytes(&self.parser, data, &e, &host) {
                    self.send_on(id, bytes);
                }
                self.drop_link(id);
            }
        }
    }

    /// Closes a connection from our side (its task writes what is queued, then ends).
    fn drop_link(&mut self, id: u64) {
        self.close(id);
    }

    fn send_on(&mut self, id: u64, bytes: Bytes) {
        self.write(id, bytes);
    }

    /// Queues bytes for a connection. A peer that lets [`LINK_QUEUE`] writes pile up is not
    /// reading: it is cut off rather than have answers silently dropped.
    fn write(&mut self, id: u64, bytes: Bytes) -> bool {
        let Some(link) = self.links.get(&id) else {
            return false;
        };
        match link.tx.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer = %link.peer, "SIP peer does not read what it is sent; closing");
                self.drop_link(id);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn send_datagram(&self, to: SocketAddr, bytes: Bytes) {
        if let Some(udp) = &self.udp {
            let _ = udp.try_send_to(&bytes, to);
        }
    }

    /// Whether a request (or a response) from `ip` may be handled: each source address has
    /// a token bucket for requests and one for responses.
    fn source_allowed(&mut self, ip: IpAddr, response: bool) -> bool {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.sources.clear();
        }
        let (requests, responses) = self.sources.entry(ip).or_insert_with(|| {
            (
                ConnectionLimiter::new(SOURCE_RATE, SOURCE_BURST),
                ConnectionLimiter::new(RESPONSE_RATE, RESPONSE_BURST),
            )
        });
        if response {
            responses.allow()
        } else {
            requests.allow()
        }
    }

    /// A request may reach the endpoint only from a configured SIP partner's domain, and for
    /// a certificate partner only over TLS with a certificate valid for that domain.
    /// Otherwise it is answered 403 (or 400 when its From is unreadable) here.
    fn authorized(&mut self, msg: &SipMessage, source: Source) -> bool {
        let from = headers::name_addr(msg, "From")
            .ok()
            .and_then(|n: NameAddr| uri_to_address(&n.uri).ok());
        let refusal = match &from {
            None => Some((400, "the From header is not a SIP address".to_string())),
            Some(from) => match self.shared.partner(from.domain()) {
                None => Some((
                    403,
                    format!("{} is not a federation partner", from.domain()),
                )),
                Some(p) if p.auth == SipAuth::Certificate => {
                    let verified = match source {
                        Source::Stream(id) => self
                            .links
                            .get(&id)
                            .is_some_and(|l| l.verified.contains(&p.domain)),
                        Source::Datagram(_) => false,
                    };
                    (!verified).then(|| {
                        (
                            403,
                            format!(
                                "{} must connect over TLS with a certificate for its domain",
                                p.domain
                            ),
                        )
                    })
                }
                Some(_) => None,
            },
        };
        let Some((code, text)) = refusal else {
            self.heard_from(from.as_ref(), source);
            return true;
        };
        tracing::info!(code, reason = %text, "sip request refused");
        let host = self.host().to_string();
        if let Some(bytes) = reply::stateless(msg, code, Some(&text), &host, &[]) {
            match source {
                Source::Datagram(addr) => {
                    let to = reply::datagram_reply_to(msg, addr);
                    self.send_datagram(to, bytes);
                }
                Source::Stream(id) => self.send_on(id, bytes),
            }
        }
        false
    }

    /// An accepted request from a partner: its connection now speaks for the partner (the
    /// first such request tells), or the partner was heard over UDP.
    fn heard_from(&mut self, from: Option<&Address>, source: Source) {
        let Some(domain) = from.and_then(|f| self.shared.partner(f.domain())) else {
            return;
        };
        let domain = domain.domain.clone();
        match source {
            Source::Datagram(addr) => self.shared.heard_over_udp(&domain, addr, true),
            Source::Stream(id) => {
                let Some(link) = self.links.get_mut(&id) else {
                    return;
                };
                if link.domain.is_some() {
                    return;
                }
                link.domain = Some(domain.clone());
                if let Some(link) = self.links.get(&id) {
                    self.link_state(id, link, domain);
                }
            }
        }
    }

    /// An event from the endpoint, for the router.
    fn inbound_event(&mut self, event: Event) {
        let domain = event.from().domain().to_string();
        if self.shared.partner(&domain).is_none() {
            tracing::warn!(%domain, "event from a non-partner domain dropped");
            return;
        }
        match event {
            Event::Message(m) => {
                let answer = Answer {
                    id: m.id.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                };
                self.inflight.insert(
                    m.id.clone(),
                    (Instant::now() + ANSWER_DEADLINE, answer.clone()),
                );
                self.dispatch(Event::Message(m), Some(answer));
            }
            Event::Presence(p) if p.to.is_none() => {
                // Published presence: each hub user known to watch the entity gets it.
                let watchers: Vec<Address> = self
                    .watchers
                    .get(&p.from)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                for w in watchers {
                    let directed = Presence {
                        from: p.from.clone(),
                        to: Some(w),
                        kind: p.kind.clone(),
                    };
                    self.dispatch(Event::Presence(directed), None);
                }
            }
            event => self.dispatch(event, None),
        }
    }

    fn dispatch(&mut self, event: Event, answer: Option<Answer>) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        event.from().hash(&mut h);
        let shard = (h.finish() as usize) % self.workers.len().max(1);
        let Some(worker) = self.workers.get(shard) else {
            return;
        };
        if worker
            .try_send(Job {
                event,
                answer: answer.clone(),
            })
            .is_err()
        {
            tracing::warn!("the router is not keeping up with SIP traffic; refusing");
            if let Some(a) = answer {
                self.inflight.remove(&a.id);
                self.answer(
                    a,
                    Err(Refusal::new(
                        ErrorCode::RateLimited,
                        "the hub is busy; try again",
                    )),
                );
            }
        }
    }
}

/// Submits events to the router in order and reports the outcome of each MESSAGE.
async fn worker(
    router: std::sync::Weak<crate::router::Router>,
    mut jobs: mpsc::Receiver<Job>,
    driver: mpsc::Sender<Input>,
) {
    while let Some(job) = jobs.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        let origin: Origin = origin_of(&job.event);
        let kind = job.event.kind();
        let result = router.submit(origin, job.event).await;
        drop(router);
        match job.answer {
            Some(answer) => {
                let _ = driver.send(Input::Submitted { answer, result }).await;
            }
            None => {
                if let Err(r) = result {
                    tracing::debug!(kind = kind.as_str(), refusal = %r, "sip event refused by the router");
                }
            }
        }
    }
}

/// Our own request with its top Via naming `transport` (RFC 3261 §18.1.1 when a large request
/// goes over TCP, or the transport a lookup chose). `None` when it already does, or when it
/// cannot be rewritten (it then goes as it is).
fn with_via_transport(parser: &SipxParser, payload: &Bytes, transport: Transport) -> Option<Bytes> {
    let msg = parser.parse_datagram(payload).ok()?;
    let via = msg.header("Via")?.trim_start();
    let rest = via.strip_prefix("SIP/2.0/")?;
    let (current, rest) = rest.split_at(rest.find(|c: char| c.is_ascii_whitespace())?);
    if current.eq_ignore_ascii_case(transport.as_via()) {
        return None;
    }
    let rewritten = format!("SIP/2.0/{}{rest}", transport.as_via());
    let method = msg.method()?.clone();
    let uri = msg.request_uri()?;
    let mut out = SipMessage::request(method, uri).ok()?;
    let mut first = true;
    for h in msg.headers() {
        if h.is("Content-Type") {
            continue;
        }
        if first && h.is("Via") {
            first = false;
            out.push("Via", rewritten.clone()).ok()?;
        } else {
            out.push_header(h.clone());
        }
    }
    let ctype = msg
        .header("Content-Type")
        .unwrap_or("text/plain")
        .to_string();
    if !msg.body().is_empty() {
        out.set_body(&ctype, msg.body().clone()).ok()?;
    }
    Some(out.to_bytes())
}

/// Where a request goes: the partner it is for, the transport, and an address or a name to
/// look up.
struct Target {
    domain: String,
    transport: Transport,
    tls_only: bool,
    place: Place,
}

enum Place {
    Address(SocketAddr),
    Lookup {
        name: String,
        host: String,
        port: Option<u16>,
    },
}

/// Which target of which lookup a request was sent to, and how many it tried before.
#[derive(Debug, Clone)]
struct Route {
    name: String,
    index: usize,
    tries: usize,
}

/// An outbound connection: where, and over which transport.
type LinkKey = (SocketAddr, Transport);

/// Targets a request tries at most before it fails.
const MAX_TRIES: usize = 8;

/// An RFC 3263 answer, in the order to try.
struct Resolved {
    targets: Vec<(SocketAddr, Transport)>,
    /// The target to use now: past those whose connection failed.
    good: usize,
    until: Instant,
    /// The partner domain, when the name looked up is the domain itself.
    partner: Option<String>,
}

/// The key of a lookup: the name, and the port and transport when a URI gave a port.
fn lookup_name(host: &str, port: Option<u16>, transport: Transport) -> String {
    match port {
        Some(port) => format!(
            "{}:{port};{}",
            host.to_ascii_lowercase(),
            transport.as_via()
        ),
        None => host.to_ascii_lowercase(),
    }
}

/// The transport the endpoint builds requests for when a lookup chose `transport`: the plain
/// driver's endpoint has no TLS listener to name, so a TLS target gets TCP-shaped requests
/// (reliable, Contact on our TCP port) whose Via the driver rewrites.
fn endpoint_transport(transport: Transport, plain: bool) -> Transport {
    match transport {
        Transport::Tls if plain => Transport::Tcp,
        t => t,
    }
}

async fn recv_from(
    udp: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(u) => u.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_requests_name_tcp_in_their_via() {
        let body = "x".repeat(2000);
        let mut req = SipMessage::request(entente_sip::Method::Message, "sip:carol@corp.test")
            .unwrap()
            .with("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa;rport")
            .unwrap()
            .with("From", "<sip:alice@hub.test>;tag=1")
            .unwrap()
            .with("To", "<sip:carol@corp.test>")
            .unwrap()
            .with("Call-ID", "c1")
            .unwrap()
            .with("CSeq", "1 MESSAGE")
            .unwrap();
        req.set_body("text/plain;charset=UTF-8", body.clone().into_bytes())
            .unwrap();
        let parser = SipxParser::default();
        let out = with_via_transport(&parser, &req.to_bytes(), Transport::Tcp).unwrap();
        let back = parser.parse_datagram(&out).unwrap();
        assert_eq!(
            back.header("Via"),
            Some("SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKa;rport")
        );
        assert_eq!(back.body().as_ref(), body.as_bytes());
        assert_eq!(
            back.header("Content-Type"),
            Some("text/plain;charset=UTF-8")
        );
        assert_eq!(back.count("Content-Type"), 1);
    }
}
