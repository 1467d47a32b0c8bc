//! The XMPP server-to-server federation edge: the `xmpp_s2s` listener, one outbound link per
//! partner domain, TLS (STARTTLS) with certificates checked against the trust roots, dialback
//! verification across streams, and the hand-over of canonical events to and from the router.
//! The protocol itself (negotiation, translation) is `entente-xmpp`'s sans-IO machines; this
//! module only moves bytes, timers and verification results between them.

use crate::anyhow_lite::{msg, Result};
use crate::config::{Listen, PartnerAuth, PartnerProtocol};
use crate::router::{Edge, Router};
use crate::tls::TlsContext;
use crate::{AppState, Tasks};
use async_trait::async_trait;
use entente_model::{DomainKind, ErrorCode, Event, Failure};
use entente_policy::{Origin, Refusal};
use entente_xmpp::{DialbackRequest, Inbound, Outbound, Output, Reply};
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

pub struct XmppEdge {
    me: Weak<XmppEdge>,
    router: Weak<Router>,
    cfg: Arc<entente_xmpp::Config>,
    hub: String,
    partners: HashMap<String, Partner>,
    tls: Arc<TlsContext>,
    /// Outbound links by peer domain.
    links: Mutex<HashMap<String, Link>>,
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
    /// peer's certificate chain.
    async fn start_client(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        domain: &str,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let Io::Plain(tcp) = std::mem::replace(self, Io::Gone) else {
            return None;
        };
        let name = ServerName::try_from(domain.to_string()).ok()?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .ok()?;
        let chain = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        *self = Io::Client(Box::new(stream));
        Some(chain)
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

impl XmppEdge {
    fn router(&self) -> Option<Arc<Router>> {
        self.router.upgrade()
    }

    fn requires_certificate(&self, domain: &str) -> bool {
        self.partners
            .get(domain)
            .is_some_and(|p| p.auth == PartnerAuth::Certificate)
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
                self.forget_link(&remote, generation);
                self.fail_commands(&mut rx, code, &text).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        tracing::info!(peer = %remote, "xmpp link connected");
        let mut io = Io::Plain(tcp);
        let mut machine = if direct_tls {
            // XEP-0368: TLS first (ALPN "xmpp-server"), then the stream, with no STARTTLS.
            let Some(chain) = io.start_client(&self.tls.direct_client, &remote).await else {
                tracing::warn!(peer = %remote, "direct TLS handshake failed");
                self.forget_link(&remote, generation);
                self.fail_commands(
                    &mut rx,
                    ErrorCode::RemoteServerNotFound,
                    &format!("TLS with {remote} failed"),
                )
                .await;
                return;
            };
            let ids = self.tls.verified_domains(&chain, &[remote.as_str()]);
            if self.requires_certificate(&remote) && ids.is_empty() {
                tracing::warn!(peer = %remote, "partner certificate not valid for its domain");
                self.forget_link(&remote, generation);
                let text = format!("{remote} did not present a valid certificate");
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
        'run: loop {
            // Handling an output may queue more bytes (a new stream header after TLS), so
            // writing and handling alternate until both are drained.
            loop {
                if !write_pending(&mut io, &mut machine).await {
                    reason = "write failed";
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
                            Some(chain) => {
                                let ids = self.tls.verified_domains(&chain, &[remote.as_str()]);
                                if self.requires_certificate(&remote) && ids.is_empty() {
                                    tracing::warn!(peer = %remote, "partner certificate not valid for its domain");
                                    machine.tls_failed(Instant::now());
                                } else {
                                    machine.tls_established(ids, Instant::now());
                                }
                            }
                            None => {
                                tracing::warn!(peer = %remote, "TLS handshake failed");
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
                        tracing::info!(local = %pair.local, remote = %pair.remote, "xmpp pair authorised (outbound)")
                    }
                    Output::Refused { pair, events, code } => {
                        tracing::warn!(local = %pair.local, remote = %pair.remote, ?code, "xmpp pair refused");
                        for event in events {
                            self.bounce(&event, code, &format!("{} refused the link", pair.remote))
                                .await;
                        }
                    }
                    Output::Closed(why) => {
                        tracing::info!(peer = %remote, ?why, "xmpp link closed");
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
                        tracing::info!(%peer, local = %pair.local, remote = %pair.remote, "xmpp pair authorised (inbound)")
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
        let result =
            if self.requires_certificate(&domain) && !certified.iter().any(|d| *d == domain) {
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
