//! The XMPP server-to-server federation edge: the `xmpp_s2s` listener, one outbound link per
//! partner domain, TLS (STARTTLS) with certificates checked against the trust roots, dialback
//! verification across streams, the hand-over of canonical events to and from the router, and
//! the state of its streams (and the last outbound failure per domain) for the admin API.
//! The protocol itself (negotiation, translation) is `entente-xmpp`'s sans-IO machines; this
//! module only moves bytes, timers and verification results between them.

use crate::anyhow_lite::{msg, Result};
use crate::config::{Listen, PartnerAuth, PartnerProtocol};
use crate::router::{Edge, LinkState, Router};
use crate::tls::TlsContext;
use crate::{AppState, Tasks};
use async_trait::async_trait;
use entente_model::{DomainKind, ErrorCode, Event, Failure};
use entente_policy::{Origin, Refusal};
use entente_xmpp::{CloseReason, DialbackRequest, Inbound, Outbound, Output, Reply};
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long an outbound connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts before queued events bounce, and the first pause between them (doubling).
const RETRY_ATTEMPTS: u32 = 4;
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Starts the listener and registers the edge for every XMPP partner's domain.
pub async fn start(state: &AppState, listeners: &Listen, tasks: &mut Tasks) -> Result<()> {
    let config = &state.config;
    let hub = state.router.hub_domain().to_string();
    let mut served = BTreeMap::new();
    served.insert(hub.clone(), DomainKind::Hub);
    let mut partners = HashMap::new();
    for p in &config.partners {
        let domain = p.domain.to_lowercase();
        match p.protocol {
            PartnerProtocol::Sip => {
                served.insert(domain, DomainKind::Sip);
            }
            PartnerProtocol::Xmpp => {
                partners.insert(
                    domain,
                    Partner {
                        address: p.address.clone(),
                        auth: p.auth,
                    },
                );
            }
        }
    }
    let mut xmpp_config =
        entente_xmpp::Config::new(served, dialback_secret(&config.storage.data_dir)?);
    xmpp_config.max_body_bytes = config.limits.max_body_bytes;
    let dns = crate::dns::Dns::new(&config.dns.servers)?;
    let edge = Arc::new_cyclic(|me| XmppEdge {
        me: me.clone(),
        router: Arc::downgrade(&state.router),
        cfg: Arc::new(xmpp_config),
        hub,
        partners,
        tls: state.tls.clone(),
        links: Mutex::new(HashMap::new()),
        book: Mutex::new(LinkBook::default()),
        verifying: Mutex::new(HashMap::new()),
        generation: AtomicU64::new(0),
        shutdown: state.shutdown.clone(),
        dns,
    });
    for domain in edge.partners.keys() {
        state.router.add_edge(domain, edge.clone());
    }
    if config.federation.mode == crate::config::FederationMode::Open {
        // Any domain that authenticates may federate: unknown domains are looked up as XMPP.
        state.router.set_default_edge(edge.clone());
    }
    if let Some(addr) = listeners.xmpp_s2s {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| msg(format!("cannot listen for xmpp_s2s on {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| msg(e.to_string()))?;
        println!("listening xmpp_s2s {local}");
        let edge = edge.clone();
        tasks.spawn(async move {
            edge.accept(listener).await;
            Ok(())
        });
    }
    Ok(())
}

/// The dialback secret (XEP-0185), kept in the data directory so keys survive a restart.
fn dialback_secret(dir: &std::path::Path) -> Result<Vec<u8>> {
    let path = dir.join("dialback.secret");
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() >= 32 {
            return Ok(bytes);
        }
    }
    let secret: [u8; 32] = rand::random();
    std::fs::create_dir_all(dir).map_err(|e| msg(format!("{}: {e}", dir.display())))?;
    std::fs::write(&path, secret).map_err(|e| msg(format!("{}: {e}", path.display())))?;
    Ok(secret.to_vec())
}

#[derive(Debug, Clone)]
struct Partner {
    address: Option<String>,
    auth: PartnerAuth,
}

enum LinkCmd {
    Send(Event),
    Reply(Reply),
    Verify(DialbackRequest),
}

struct Link {
    tx: mpsc::UnboundedSender<LinkCmd>,
    generation: u64,
}

/// What the admin API shows of the links: every stream carrying an authorised pair, and what
/// went wrong with the last outbound attempt or stream per domain.
#[derive(Default)]
struct LinkBook {
    /// By (stream number, peer domain): one stream may carry pairs of several peer domains.
    streams: HashMap<(u64, String), LinkState>,
    /// By peer domain, until a stream to it comes up.
    failures: HashMap<String, String>,
}

fn epoch_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub struct XmppEdge {
    me: Weak<XmppEdge>,
    router: Weak<Router>,
    cfg: Arc<entente_xmpp::Config>,
    hub: String,
    partners: HashMap<String, Partner>,
    tls: Arc<TlsContext>,
    /// Outbound links by peer domain.
    links: Mutex<HashMap<String, Link>>,
    /// Established streams and failures, for [`Edge::links`].
    book: Mutex<LinkBook>,
    /// Inbound streams waiting for a dialback answer, by stream id.
    verifying: Mutex<HashMap<String, mpsc::UnboundedSender<(DialbackRequest, bool)>>>,
    generation: AtomicU64,
    shutdown: CancellationToken,
    dns: crate::dns::Dns,
}

#[async_trait]
impl Edge for XmppEdge {
    fn name(&self) -> &'static str {
        "xmpp"
    }

    fn kind(&self) -> DomainKind {
        DomainKind::Xmpp
    }

    async fn deliver(&self, event: Event) -> std::result::Result<(), Refusal> {
        let Some(domain) = event.to().map(|a| a.domain().to_string()) else {
            return Err(Refusal::new(ErrorCode::BadRequest, "no recipient"));
        };
        let Some(me) = self.me.upgrade() else {
            return Err(Refusal::new(
                ErrorCode::RemoteServerTimeout,
                "the gateway is shutting down",
            ));
        };
        me.link(&domain).send(LinkCmd::Send(event)).map_err(|_| {
            Refusal::new(
                ErrorCode::RemoteServerTimeout,
                format!("the link to {domain} is closing; try again"),
            )
        })
    }

    fn links(&self) -> Vec<LinkState> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut links: Vec<LinkState> = book.streams.values().cloned().collect();
        links.sort_by(|a, b| {
            (&a.domain, a.direction, a.since).cmp(&(&b.domain, b.direction, b.since))
        });
        let mut failures: Vec<_> = book.failures.iter().collect();
        failures.sort();
        links.extend(failures.into_iter().map(|(domain, error)| LinkState {
            domain: domain.clone(),
            direction: "outbound",
            transport: "xmpp",
            auth: "none",
            peer: None,
            since: None,
            last_error: Some(error.clone()),
        }));
        links
    }
}

/// A connection before or after STARTTLS.
enum Io {
    Plain(TcpStream),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

impl Io {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf).await,
            Io::Client(s) => s.read(buf).await,
            Io::Server(s) => s.read(buf).await,
            Io::Gone => std::future::pending().await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(bytes).await,
            Io::Client(s) => s.write_all(bytes).await,
            Io::Server(s) => s.write_all(bytes).await,
            Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Io::Plain(s) => s.shutdown().await,
            Io::Client(s) => s.shutdown().await,
            Io::Server(s) => s.shutdown().await,
            Io::Gone => Ok(()),
        };
    }

    /// Client side of TLS with `config` (STARTTLS, or direct TLS with its ALPN); returns the
    /// peer's certificate chain, or why the handshake failed.
    async fn start_client(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        domain: &str,
    ) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
        let Io::Plain(tcp) = std::mem::replace(self, Io::Gone) else {
            return Err("TLS was already started".into());
        };
        let name = ServerName::try_from(domain.to_string())
            .map_err(|_| format!("{domain} is not a TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {domain} failed: {e}"))?;
        let chain = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        *self = Io::Client(Box::new(stream));
        Ok(chain)
    }

    /// Server side of STARTTLS; returns the client's certificate chain (empty if none).
    async fn start_server(&mut self, tls: &TlsContext) -> Option<Vec<CertificateDer<'static>>> {
        let Io::Plain(tcp) = std::mem::replace(self, Io::Gone) else {
            return None;
        };
        let stream = tokio_rustls::TlsAcceptor::from(tls.server.clone())
            .accept(tcp)
            .await
            .ok()?;
        let chain = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        *self = Io::Server(Box::new(stream));
        Some(chain)
    }
}

/// What the driver needs of both stream machines to write their output.
trait Transmit {
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
}

impl Transmit for Outbound {
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Outbound::poll_transmit(self)
    }
}

impl Transmit for Inbound {
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Inbound::poll_transmit(self)
    }
}

/// Writes everything the machine has queued; false when the connection is gone.
async fn write_pending(io: &mut Io, machine: &mut impl Transmit) -> bool {
    while let Some(bytes) = machine.poll_transmit() {
        tracing::trace!(data = %String::from_utf8_lossy(&bytes), "xmpp >>");
        if io.write_all(&bytes).await.is_err() {
            return false;
        }
    }
    true
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

fn failure_for(event: &Event, code: ErrorCode, text: &str) -> Option<Failure> {
    match event {
        Event::Message(m) => Some(Failure {
            from: m.to.clone(),
            to: m.from.clone(),
            id: m.id.clone(),
            code,
            text: text.to_string(),
        }),
        _ => None,
    }
}

/// What the end of an outbound stream tells the admin: nothing when it closed normally.
fn close_failure(remote: &str, why: &CloseReason) -> Option<String> {
    match why {
        CloseReason::Normal => None,
        CloseReason::Sent(c) => Some(format!("stream error sent to {remote}: {}", c.as_str())),
        CloseReason::Received(c) => Some(format!("stream error from {remote}: {}", c.as_str())),
        CloseReason::Eof => Some(format!(
            "{remote} closed the connection without ending the stream"
        )),
        CloseReason::TlsFailed => Some(format!("TLS with {remote} failed")),
    }
}

impl XmppEdge {
    fn router(&self) -> Option<Arc<Router>> {
        self.router.upgrade()
    }

    /// Whether `domain` must authenticate with a certificate: the partner policy in force
    /// (reloadable), else the configuration the edge started with.
    fn requires_certificate(&self, domain: &str) -> bool {
        match self.router() {
            Some(router) => router.policy().partner(domain).certificate_required,
            None => self
                .partners
                .get(domain)
                .is_some_and(|p| p.auth == PartnerAuth::Certificate),
        }
    }

    /// Tells a hub sender that an event could not be carried.
    async fn bounce(&self, event: &Event, code: ErrorCode, text: &str) {
        if let (Some(router), Some(f)) = (self.router(), failure_for(event, code, text)) {
            router.bounce(f).await;
        }
    }

    /// The command queue of the link to `domain`, opening one if needed.
    fn link(self: &Arc<Self>, domain: &str) -> mpsc::UnboundedSender<LinkCmd> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(domain) {
            if !link.tx.is_closed() {
                return link.tx.clone();
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        links.insert(
            domain.to_string(),
            Link {
                tx: tx.clone(),
                generation,
            },
        );
        tokio::spawn(self.clone().run_link(domain.to_string(), rx, generation));
        tx
    }

    /// A pair with `remote` is authorised on stream `stream`: the stream shows as a link to
    /// `remote`, and an outbound one clears the domain's last failure.
    fn stream_authorised(
        &self,
        stream: u64,
        remote: &str,
        direction: &'static str,
        certificate: bool,
        peer: Option<SocketAddr>,
    ) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if direction == "outbound" {
            book.failures.remove(remote);
        }
        book.streams
            .entry((stream, remote.to_string()))
            .or_insert_with(|| LinkState {
                domain: remote.to_string(),
                direction,
                transport: "xmpp",
                auth: if certificate {
                    "certificate"
                } else {
                    "dialback"
                },
                peer: peer.map(|p| p.to_string()),
                since: Some(epoch_seconds()),
                last_error: None,
            });
    }

    fn stream_ended(&self, stream: u64) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.streams.retain(|(s, _), _| *s != stream);
    }

    /// The last outbound attempt or stream to `remote` failed.
    fn link_failed(&self, remote: &str, error: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.failures.insert(remote.to_string(), error.to_string());
    }

    fn forget_link(&self, domain: &str, generation: u64) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links
            .get(domain)
            .is_some_and(|l| l.generation == generation)
        {
            links.remove(domain);
        }
    }

    /// Where the peer's s2s service is: the partner's pinned address, else DNS (RFC 6120 §3.2).
    async fn addresses_of(
        &self,
        domain: &str,
    ) -> std::result::Result<Vec<(SocketAddr, bool)>, (ErrorCode, String)> {
        let pinned = self.partners.get(domain).and_then(|p| p.address.clone());
        if let Some(address) = pinned {
            return address.parse().map(|a| vec![(a, false)]).map_err(|_| {
                (
                    ErrorCode::RemoteServerNotFound,
                    format!("{domain}: address {address:?} is not ip:port"),
                )
            });
        }
        let found = self.dns.xmpp_server(domain).await;
        if found.is_empty() {
            return Err((
                ErrorCode::RemoteServerNotFound,
                format!("no XMPP server found for {domain}"),
            ));
        }
        Ok(found)
    }

    /// Connects to the first address that answers; true when it speaks TLS at once.
    async fn connect(
        &self,
        domain: &str,
    ) -> std::result::Result<(TcpStream, bool), (ErrorCode, String)> {
        let mut last = (
            ErrorCode::RemoteServerNotFound,
            format!("cannot connect to {domain}"),
        );
        for (addr, direct_tls) in self.addresses_of(domain).await? {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => return Ok((tcp, direct_tls)),
                Ok(Err(e)) => {
                    last = (
                        ErrorCode::RemoteServerNotFound,
                        format!("cannot connect to {domain} at {addr}: {e}"),
                    )
                }
                Err(_) => {
                    last = (
                        ErrorCode::RemoteServerTimeout,
                        format!("{domain} at {addr} did not answer in time"),
                    )
                }
            }
        }
        Err(last)
    }

    /// Connects, retrying with growing pauses while the peer refuses or does not answer;
    /// events sent meanwhile wait in the link's queue. A domain with no server at all is not
    /// retried.
    async fn connect_with_retries(
        &self,
        domain: &str,
    ) -> std::result::Result<(TcpStream, bool), (ErrorCode, String)> {
        let mut pause = RETRY_FIRST_PAUSE;
        let mut attempt = 1;
        loop {
            match self.connect(domain).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) if attempt >= RETRY_ATTEMPTS || e.1.starts_with("no XMPP server") => {
                    return Err(e)
                }
                Err((_, text)) => {
                    tracing::info!(peer = %domain, attempt, %text, "xmpp link attempt failed; retrying");
                    self.link_failed(domain, &text);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shutdown.cancelled() => {
                            return Err((ErrorCode::RemoteServerTimeout, "the gateway is shutting down".into()));
                        }
                    }
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Answers what is left in a closed link's queue: events bounce, verifications fail.
    async fn fail_commands(
        &self,
        rx: &mut mpsc::UnboundedReceiver<LinkCmd>,
        code: ErrorCode,
        text: &str,
    ) {
        rx.close();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                LinkCmd::Send(event) => self.bounce(&event, code, text).await,
                LinkCmd::Verify(request) => self.verified(request, false),
                LinkCmd::Reply(_) => {}
            }
        }
    }

    fn verified(&self, request: DialbackRequest, valid: bool) {
        let tx = self
            .verifying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&request.stream_id)
            .cloned();
        if let Some(tx) = tx {
            let _ = tx.send((request, valid));
        }
    }

    async fn run_link(
        self: Arc<Self>,
        remote: String,
        mut rx: mpsc::UnboundedReceiver<LinkCmd>,
        generation: u64,
    ) {
        let (tcp, direct_tls) = match self.connect_with_retries(&remote).await {
            Ok(found) => found,
            Err((code, text)) => {
                tracing::warn!(peer = %remote, %text, "xmpp link failed");
                self.link_failed(&remote, &text);
                self.forget_link(&remote, generation);
                self.fail_commands(&mut rx, code, &text).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().ok();
        tracing::info!(peer = %remote, "xmpp link connected");
        let mut io = Io::Plain(tcp);
        let mut machine = if direct_tls {
            // XEP-0368: TLS first (ALPN "xmpp-server"), then the stream, with no STARTTLS.
            let chain = match io.start_client(&self.tls.direct_client, &remote).await {
                Ok(chain) => chain,
                Err(error) => {
                    tracing::warn!(peer = %remote, %error, "direct TLS handshake failed");
                    self.link_failed(&remote, &error);
                    self.forget_link(&remote, generation);
                    self.fail_commands(
                        &mut rx,
                        ErrorCode::RemoteServerNotFound,
                        &format!("TLS with {remote} failed"),
                    )
                    .await;
                    return;
                }
            };
            let ids = self.tls.verified_domains(&chain, &[remote.as_str()]);
            if self.requires_certificate(&remote) && ids.is_empty() {
                tracing::warn!(peer = %remote, "partner certificate not valid for its domain");
                self.forget_link(&remote, generation);
                let text = format!("{remote} did not present a valid certificate");
                self.link_failed(&remote, &text);
                self.fail_commands(&mut rx, ErrorCode::RemoteServerNotFound, &text)
                    .await;
                return;
            }
            Outbound::new_direct_tls(self.cfg.clone(), &self.hub, &remote, ids, Instant::now())
        } else {
            Outbound::new(self.cfg.clone(), &self.hub, &remote, Instant::now())
        };
        let mut buf = vec![0u8; 16 * 1024];
        let mut reason = "closed";
        // Why the stream failed, for the admin API; the first cause found is kept.
        let mut failure: Option<String> = None;
        'run: loop {
            // Handling an output may queue more bytes (a new stream header after TLS), so
            // writing and handling alternate until both are drained.
            loop {
                if !write_pending(&mut io, &mut machine).await {
                    reason = "write failed";
                    failure.get_or_insert_with(|| format!("the connection to {remote} was lost"));
                    break 'run;
                }
                let Some(out) = machine.poll_event() else {
                    break;
                };
                tracing::trace!(output = ?out, "xmpp output");
                match out {
                    Output::StartTls => {
                        write_pending(&mut io, &mut machine).await;
                        match io.start_client(&self.tls.client, &remote).await {
                            Ok(chain) => {
                                let ids = self.tls.verified_domains(&chain, &[remote.as_str()]);
                                if self.requires_certificate(&remote) && ids.is_empty() {
                                    tracing::warn!(peer = %remote, "partner certificate not valid for its domain");
                                    failure.get_or_insert_with(|| {
                                        format!("{remote} did not present a valid certificate")
                                    });
                                    machine.tls_failed(Instant::now());
                                } else {
                                    machine.tls_established(ids, Instant::now());
                                }
                            }
                            Err(error) => {
                                tracing::warn!(peer = %remote, %error, "TLS handshake failed");
                                failure.get_or_insert(error);
                                machine.tls_failed(Instant::now());
                            }
                        }
                    }
                    Output::Event(event) => self.inbound_event(event, &[]).await,
                    Output::Reply(reply) => {
                        if reply.to_domain() == remote {
                            let _ = machine.send_reply(reply, Instant::now());
                        } else {
                            let _ = self.link(reply.to_domain()).send(LinkCmd::Reply(reply));
                        }
                    }
                    Output::VerifyDialback(request) => self.verified(request, false),
                    Output::DialbackVerified { request, valid } => self.verified(request, valid),
                    Output::Authorised(pair) => {
                        tracing::info!(local = %pair.local, remote = %pair.remote, "xmpp pair authorised (outbound)");
                        let certificate = machine.sasl_pair() == Some(&pair);
                        self.stream_authorised(
                            generation,
                            &pair.remote,
                            "outbound",
                            certificate,
                            peer,
                        );
                    }
                    Output::Refused { pair, events, code } => {
                        tracing::warn!(local = %pair.local, remote = %pair.remote, ?code, "xmpp pair refused");
                        // Events still queued when a stream ends come back too: not a refusal.
                        if !machine.is_closed() {
                            self.link_failed(
                                &pair.remote,
                                &format!(
                                    "{} did not authorise {} ({code})",
                                    pair.remote, pair.local
                                ),
                            );
                        }
                        for event in events {
                            self.bounce(&event, code, &format!("{} refused the link", pair.remote))
                                .await;
                        }
                    }
                    Output::Closed(why) => {
                        tracing::info!(peer = %remote, ?why, "xmpp link closed");
                        if let Some(text) = close_failure(&remote, &why) {
                            failure.get_or_insert(text);
                        }
                        write_pending(&mut io, &mut machine).await;
                        break 'run;
                    }
                }
            }
            let deadline = machine.poll_timeout();
            tokio::select! {
                r = io.read(&mut buf) => match r {
                    Ok(n) if n > 0 => {
                        tracing::trace!(data = %String::from_utf8_lossy(&buf[..n]), "xmpp <<");
                        machine.handle_input(&buf[..n], Instant::now())
                    }
                    _ => machine.handle_eof(Instant::now()),
                },
                cmd = rx.recv() => match cmd {
                    Some(LinkCmd::Send(event)) => {
                        if let Err(e) = machine.send(event.clone(), Instant::now()) {
                            self.bounce(&event, ErrorCode::RemoteServerTimeout, &e.to_string()).await;
                        }
                    }
                    Some(LinkCmd::Reply(reply)) => { let _ = machine.send_reply(reply, Instant::now()); }
                    Some(LinkCmd::Verify(request)) => machine.verify_dialback(request, Instant::now()),
                    None => machine.close(Instant::now()),
                },
                _ = sleep_until(deadline) => machine.handle_timeout(Instant::now()),
                _ = self.shutdown.cancelled() => machine.close(Instant::now()),
            }
        }
        io.shutdown().await;
        self.stream_ended(generation);
        if let Some(text) = failure {
            self.link_failed(&remote, &text);
        }
        self.forget_link(&remote, generation);
        tracing::debug!(peer = %remote, reason, "xmpp link ended");
        self.fail_commands(
            &mut rx,
            ErrorCode::RemoteServerTimeout,
            &format!("the link to {remote} closed"),
        )
        .await;
    }

    async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown.cancelled() => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(self.clone().run_inbound(tcp, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "xmpp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// May `domain` authenticate by dialback at all?
    fn dialback_allowed(&self, domain: &str) -> bool {
        let allowed = self
            .router()
            .is_some_and(|r| r.policy().domain_allowed(domain));
        allowed && !self.requires_certificate(domain)
    }

    async fn run_inbound(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        // Numbered from the same counter as outbound links, so that stream numbers never clash.
        let stream = self.generation.fetch_add(1, Ordering::Relaxed);
        let mut io = Io::Plain(tcp);
        let mut machine = Inbound::new(self.cfg.clone(), Instant::now());
        let (verify_tx, mut verify_rx) = mpsc::unbounded_channel();
        let mut registered: Vec<String> = Vec::new();
        let mut certified: Vec<String> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        'run: loop {
            loop {
                if !write_pending(&mut io, &mut machine).await {
                    break 'run;
                }
                let Some(out) = machine.poll_event() else {
                    break;
                };
                tracing::trace!(output = ?out, "xmpp output");
                match out {
                    Output::StartTls => {
                        write_pending(&mut io, &mut machine).await;
                        match io.start_server(&self.tls).await {
                            Some(chain) => {
                                let candidates: Vec<&str> =
                                    self.partners.keys().map(String::as_str).collect();
                                certified = self.tls.verified_domains(&chain, &candidates);
                                machine.tls_established(certified.clone(), Instant::now());
                            }
                            None => {
                                tracing::info!(%peer, "inbound TLS handshake failed");
                                machine.tls_failed(Instant::now());
                            }
                        }
                    }
                    Output::Event(event) => self.inbound_event(event, &certified).await,
                    Output::Reply(reply) => {
                        let _ = self.link(reply.to_domain()).send(LinkCmd::Reply(reply));
                    }
                    Output::VerifyDialback(request) => {
                        if self.dialback_allowed(&request.originating) {
                            if !registered.contains(&request.stream_id) {
                                self.verifying
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(request.stream_id.clone(), verify_tx.clone());
                                registered.push(request.stream_id.clone());
                            }
                            let domain = request.originating.clone();
                            if self
                                .link(&domain)
                                .send(LinkCmd::Verify(request.clone()))
                                .is_err()
                            {
                                machine.dialback_verified(&request, false, Instant::now());
                            }
                        } else {
                            tracing::info!(%peer, domain = %request.originating, "dialback refused by policy");
                            machine.dialback_verified(&request, false, Instant::now());
                        }
                    }
                    Output::DialbackVerified { .. } => {}
                    Output::Authorised(pair) => {
                        tracing::info!(%peer, local = %pair.local, remote = %pair.remote, "xmpp pair authorised (inbound)");
                        let certificate = machine.sasl_pair() == Some(&pair);
                        self.stream_authorised(
                            stream,
                            &pair.remote,
                            "inbound",
                            certificate,
                            Some(peer),
                        );
                    }
                    Output::Refused { .. } => {}
                    Output::Closed(why) => {
                        tracing::info!(%peer, ?why, "inbound xmpp stream closed");
                        write_pending(&mut io, &mut machine).await;
                        break 'run;
                    }
                }
            }
            let deadline = machine.poll_timeout();
            tokio::select! {
                r = io.read(&mut buf) => match r {
                    Ok(n) if n > 0 => {
                        tracing::trace!(data = %String::from_utf8_lossy(&buf[..n]), "xmpp <<");
                        machine.handle_input(&buf[..n], Instant::now())
                    }
                    _ => machine.handle_eof(Instant::now()),
                },
                Some((request, valid)) = verify_rx.recv() => machine.dialback_verified(&request, valid, Instant::now()),
                _ = sleep_until(deadline) => machine.handle_timeout(Instant::now()),
                _ = self.shutdown.cancelled() => machine.close(Instant::now()),
            }
        }
        io.shutdown().await;
        self.stream_ended(stream);
        let mut verifying = self.verifying.lock().unwrap_or_else(|e| e.into_inner());
        for id in registered {
            verifying.remove(&id);
        }
    }

    /// An event from a peer: checked against the partner's required authentication, then routed;
    /// a refused message is answered with an error stanza to its sender.
    async fn inbound_event(self: &Arc<Self>, event: Event, certified: &[String]) {
        let Some(router) = self.router() else { return };
        let domain = event.from().domain().to_string();
        let result = if self.requires_certificate(&domain) && !certified.contains(&domain) {
            Err(Refusal::new(
                ErrorCode::PolicyViolation,
                format!("partner {domain} must authenticate with a valid certificate"),
            ))
        } else {
            router
                .submit(
                    Origin::Partner {
                        domain: domain.clone(),
                    },
                    event.clone(),
                )
                .await
        };
        if let Err(refusal) = result {
            tracing::info!(from = %event.from(), code = %refusal.code, text = %refusal.text, "xmpp event refused");
            if let Some(failure) = failure_for(&event, refusal.code, &refusal.text) {
                let _ = self
                    .link(&domain)
                    .send(LinkCmd::Send(Event::Failure(failure)));
            }
        }
    }
}
