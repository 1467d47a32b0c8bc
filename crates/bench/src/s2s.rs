//! XMPP server-to-server mode: the tool plays the XMPP server of a partner domain
//! (`bench.test` by default). The spawned server lists that partner with `auth = "dialback"` and
//! its address pointing at the tool's own listener. The tool opens one or many s2s streams to
//! the server's `xmpp_s2s` listener with [`entente_xmpp::Outbound`] (STARTTLS, any server
//! certificate accepted, then dialback), answers the server's `db:verify` on its listener with
//! [`entente_xmpp::Inbound`] sharing the same configuration and secret, and sends messages to hub
//! users who are signed in over WebSocket. Measures stream set-up time, messages per second into
//! hub sessions, send → delivery latency, and the server's memory per stream.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use entente_model::{Address, DomainKind, Event, Message};
use entente_xmpp::{DialbackRequest, Inbound, Outbound, Output};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::http;
use crate::process;
use crate::report::{
    self, server_section, LatencySummary, PerSecond, ServerLabels, Table, Thousands,
};
use crate::target::{SpawnSettings, SpawnedServer, XmppPartner};
use crate::ws::{decode_body, encode_body, MemoryReport, MAX_SESSIONS};

/// Most s2s streams one run may open (the server allows 64 domain pairs per stream, but every
/// stream here carries one pair).
pub const MAX_STREAMS: usize = 1_000;
/// Time allowed for an HTTP request, a sign-in or a stream to be authorised.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message body.
const MAX_BODY: usize = 4000;
/// Starts the body of the message that opens each stream's dialback.
const WARM_UP_TAG: &str = "entente-bench warm-up";
/// Bytes read from a stream at once.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct S2sArgs {
    /// Start this `entente` binary with a temporary configuration (HTTP and `xmpp_s2s`
    /// listeners, the partner domain pointing at this tool) and stop it at the end.
    #[arg(long, value_name = "PATH")]
    pub spawn: PathBuf,
    /// Domain this tool plays the XMPP server of.
    #[arg(long, default_value = "bench.test")]
    pub partner_domain: String,
    /// Number of s2s streams, each authorised by dialback for (partner, hub).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Hub users signed in over WebSocket who receive the messages.
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// Seconds of sending; the run also ends when every stream has sent --messages.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages each stream sends (default: as many as fit in --duration).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Messages each stream may have sent but not yet seen delivered to a hub session.
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Messages per second each stream sends (default: as fast as the window allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Size of each message body in bytes (at least the timestamp header).
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Hub users are named PREFIX0, PREFIX1, …
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    /// Password of every hub user.
    #[arg(long, default_value = "bench-password-1")]
    pub password: String,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 4)]
    pub register_concurrency: usize,
    /// WebSocket sign-ins and stream set-ups in flight at once.
    #[arg(long, default_value_t = 8)]
    pub connect_concurrency: usize,
    /// Seconds to wait before each memory reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds to wait after sending stops for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Environment variable for the spawned server, as KEY=VALUE; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::ws::parse_env_pair)]
    pub server_env: Vec<(String, String)>,
    /// Copy the server's log (its stderr) to this file at the end.
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Also write the report as JSON to this file (`-` for stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl S2sArgs {
    pub fn validate(&self) -> Result<()> {
        if self.sessions == 0 || self.sessions > MAX_SESSIONS {
            bail!("--sessions must be between 1 and {MAX_SESSIONS}");
        }
        if self.streams == 0 || self.streams > MAX_STREAMS {
            bail!("--streams must be between 1 and {MAX_STREAMS}");
        }
        if !(self.duration > 0.0 && self.duration <= crate::ws::MAX_DURATION_S) {
            bail!("--duration must be more than 0 and at most 3600 seconds");
        }
        if let Some(m) = self.messages {
            if m == 0 || m > crate::ws::MAX_MESSAGES {
                bail!(
                    "--messages must be between 1 and {}",
                    crate::ws::MAX_MESSAGES
                );
            }
        }
        if self.window == 0 || self.window > crate::ws::MAX_WINDOW {
            bail!("--window must be between 1 and {}", crate::ws::MAX_WINDOW);
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                bail!("--rate must be more than 0 and at most 1000000 per second");
            }
        }
        if self.body_size > MAX_BODY {
            bail!("--body-size must be at most {MAX_BODY}");
        }
        if entente_xmpp::dialback::parse_domain(&self.partner_domain).as_deref()
            != Some(self.partner_domain.as_str())
            || !self.partner_domain.contains('.')
        {
            bail!("--partner-domain must be a lower-case domain name with a dot, like bench.test");
        }
        let prefix_ok = !self.user_prefix.is_empty()
            && self.user_prefix.len() <= 24
            && self
                .user_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self
                .user_prefix
                .starts_with(|c: char| c.is_ascii_lowercase());
        if !prefix_ok {
            bail!("--user-prefix must be 1 to 24 lowercase letters and digits, starting with a letter");
        }
        if self.password.is_empty() || self.password.len() > 256 {
            bail!("--password must be 1 to 256 bytes");
        }
        if self.register_concurrency == 0 || self.register_concurrency > 256 {
            bail!("--register-concurrency must be between 1 and 256");
        }
        if self.connect_concurrency == 0 || self.connect_concurrency > 1024 {
            bail!("--connect-concurrency must be between 1 and 1024");
        }
        if !(0.0..=600.0).contains(&self.settle) || !(0.0..=600.0).contains(&self.drain) {
            bail!("--settle and --drain must be between 0 and 600 seconds");
        }
        Ok(())
    }

    fn user(&self, index: usize) -> String {
        format!("{}{index}", self.user_prefix)
    }
}

/// The local part of the partner address stream `k` sends as.
pub fn sender_name(stream: usize) -> String {
    format!("s{stream}")
}

/// Which stream sent a message, from the `from` address of the hub's `message` frame.
pub fn stream_of(from: &str, partner: &str) -> Option<usize> {
    let (local, domain) = from.split_once('@')?;
    let domain = domain.split('/').next()?;
    if !domain.eq_ignore_ascii_case(partner) {
        return None;
    }
    let digits = local.strip_prefix('s')?;
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The hub session that message `seq` of stream `stream` goes to: the streams' messages are
/// spread over every session, each stream starting at a different one.
pub fn receiver_of(stream: usize, seq: u64, streams: usize, sessions: usize) -> usize {
    let sessions = sessions.max(1) as u64;
    ((stream as u64 + seq.wrapping_mul(streams.max(1) as u64)) % sessions) as usize
}

// ----- TLS -----------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate: the tool authenticates by dialback, as the server's
/// configuration for this partner says, and never talks to anything but loopback.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS for both sides of the tool: a client that accepts any certificate, and a server with a
/// self-signed certificate for the partner domain.
pub struct TlsSetup {
    pub client: Arc<rustls::ClientConfig>,
    pub server: Arc<rustls::ServerConfig>,
}

impl TlsSetup {
    pub fn new(domain: &str) -> Result<Self> {
        let provider = provider();
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider.clone())))
            .with_no_client_auth();
        let certified = rcgen::generate_simple_self_signed(vec![domain.to_string()])
            .context("generating a certificate")?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .context("building the TLS server configuration")?;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// A stream's transport: plain TCP until STARTTLS, then TLS.
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
            Io::Gone => Ok(0),
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

    async fn start_client(&mut self, tls: &TlsSetup, domain: &str) -> bool {
        let Io::Plain(tcp) = std::mem::replace(self, Io::Gone) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_string()) else {
            return false;
        };
        match tokio_rustls::TlsConnector::from(tls.client.clone())
            .connect(name, tcp)
            .await
        {
            Ok(s) => {
                *self = Io::Client(Box::new(s));
                true
            }
            Err(_) => false,
        }
    }

    async fn start_server(&mut self, tls: &TlsSetup) -> bool {
        let Io::Plain(tcp) = std::mem::replace(self, Io::Gone) else {
            return false;
        };
        match tokio_rustls::TlsAcceptor::from(tls.server.clone())
            .accept(tcp)
            .await
        {
            Ok(s) => {
                *self = Io::Server(Box::new(s));
                true
            }
            Err(_) => false,
        }
    }

    async fn shutdown(&mut self) {
        async fn close<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown()).await;
        }
        match self {
            Io::Plain(s) => close(s).await,
            Io::Client(s) => close(s).await,
            Io::Server(s) => close(s).await,
            Io::Gone => {}
        }
    }
}

// ----- the partner's authoritative server ------------------------------------------------------

/// A dialback key the server presented to the tool's listener, to be checked with the hub's
/// authoritative server over one of the tool's outbound streams.
type VerifyJob = (DialbackRequest, oneshot::Sender<bool>);

/// Counters of the tool's listener.
#[derive(Default)]
struct ListenerStats {
    connections: AtomicU64,
    verifications: AtomicU64,
    /// Stanzas the server sent the partner (errors about refused messages, …).
    events: AtomicU64,
}

/// Accepts the server's streams to the partner domain: answers `db:verify` (the machine does, with
/// the shared secret), and relays the server's own dialback keys to an outbound stream.
async fn listener(
    listener: TcpListener,
    cfg: Arc<entente_xmpp::Config>,
    tls: Arc<TlsSetup>,
    verify: mpsc::UnboundedSender<VerifyJob>,
    stats: Arc<ListenerStats>,
) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !peer.ip().is_loopback() {
            continue;
        }
        tcp.set_nodelay(true).ok();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(inbound(
            tcp,
            cfg.clone(),
            tls.clone(),
            verify.clone(),
            stats.clone(),
        ));
    }
}

async fn inbound(
    tcp: TcpStream,
    cfg: Arc<entente_xmpp::Config>,
    tls: Arc<TlsSetup>,
    verify: mpsc::UnboundedSender<VerifyJob>,
    stats: Arc<ListenerStats>,
) {
    let mut io = Io::Plain(tcp);
    let mut machine = Inbound::new(cfg, Instant::now());
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel::<(DialbackRequest, bool)>();
    let mut buf = vec![0u8; READ_CHUNK];
    'run: loop {
        loop {
            while let Some(bytes) = machine.poll_transmit() {
                if io.write_all(&bytes).await.is_err() {
                    break 'run;
                }
            }
            let Some(out) = machine.poll_event() else {
                break;
            };
            match out {
                Output::StartTls => {
                    while let Some(bytes) = machine.poll_transmit() {
                        let _ = io.write_all(&bytes).await;
                    }
                    if io.start_server(&tls).await {
                        machine.tls_established(Vec::new(), Instant::now());
                    } else {
                        machine.tls_failed(Instant::now());
                    }
                }
                Output::VerifyDialback(request) => {
                    stats.verifications.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = oneshot::channel();
                    if verify.send((request.clone(), tx)).is_err() {
                        machine.dialback_verified(&request, false, Instant::now());
                    } else {
                        let answer_tx = answer_tx.clone();
                        tokio::spawn(async move {
                            let valid = rx.await.unwrap_or(false);
                            let _ = answer_tx.send((request, valid));
                        });
                    }
                }
                Output::Event(_) => {
                    stats.events.fetch_add(1, Ordering::Relaxed);
                }
                Output::Closed(_) => {
                    while let Some(bytes) = machine.poll_transmit() {
                        let _ = io.write_all(&bytes).await;
                    }
                    break 'run;
                }
                _ => {}
            }
        }
        let deadline = machine.poll_timeout();
        tokio::select! {
            r = io.read(&mut buf) => match r {
                Ok(n) if n > 0 => machine.handle_input(&buf[..n], Instant::now()),
                _ => machine.handle_eof(Instant::now()),
            },
            Some((request, valid)) = answer_rx.recv() => {
                machine.dialback_verified(&request, valid, Instant::now());
            }
            _ = sleep_until(deadline) => machine.handle_timeout(Instant::now()),
        }
    }
    io.shutdown().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

// ----- the tool's outbound streams -------------------------------------------------------------

/// Where the whole run is; every stream and session follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Sending,
    Draining,
    Finished,
}

/// State every task shares.
struct Shared {
    epoch: Instant,
    run: u64,
    partner: String,
    sent: AtomicU64,
    delivered: AtomicU64,
    streams_done: AtomicUsize,
    failed_streams: AtomicUsize,
    /// Per stream: its messages seen by a hub session (the end-to-end window).
    delivered_from: Vec<AtomicU64>,
    wake: Vec<Notify>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

struct StreamPlan {
    index: usize,
    streams: usize,
    server: SocketAddr,
    hub: String,
    /// Hub addresses of the receiving sessions.
    receivers: Arc<Vec<Address>>,
    window: u64,
    interval: Option<Duration>,
    max_messages: u64,
    body_size: usize,
}

/// What one stream did.
struct StreamOutcome {
    sent: u64,
    refused: u64,
    setup_us: Option<u64>,
    end: Option<String>,
}

/// Reports set-up progress to the coordinator.
enum Ready {
    Authorised(u64),
    Failed(anyhow::Error),
}

#[allow(clippy::too_many_arguments)]
async fn stream_task(
    plan: StreamPlan,
    cfg: Arc<entente_xmpp::Config>,
    tls: Arc<TlsSetup>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Ready>,
    mut verify: Option<mpsc::UnboundedReceiver<VerifyJob>>,
) -> StreamOutcome {
    let mut out = StreamOutcome {
        sent: 0,
        refused: 0,
        setup_us: None,
        end: None,
    };
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let tcp = match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(plan.server)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let _ = ready
                .send(Ready::Failed(anyhow!("connecting to {}: {e}", plan.server)))
                .await;
            return out;
        }
        Err(_) => {
            let _ = ready
                .send(Ready::Failed(anyhow!(
                    "connecting to {} timed out",
                    plan.server
                )))
                .await;
            return out;
        }
    };
    tcp.set_nodelay(true).ok();
    let mut io = Io::Plain(tcp);
    let mut machine = Outbound::new(cfg, &shared.partner, &plan.hub, Instant::now());
    // Dialback for the pair starts with the first message queued: a warm-up message, which the
    // receiving session recognises and leaves out of every count.
    let warm_up = message_event(
        &shared,
        plan.index,
        0,
        0,
        plan.receivers[plan.index % plan.receivers.len().max(1)].clone(),
        0,
    )
    .map(|event| match event {
        Event::Message(mut m) => {
            m.id = format!("w{}", plan.index);
            m.body = format!("{WARM_UP_TAG} {}", plan.index);
            Event::Message(m)
        }
        other => other,
    });
    if let Err(e) = warm_up.and_then(|event| {
        machine
            .send(event, Instant::now())
            .map_err(|e| anyhow!("queueing the warm-up message: {e}"))
    }) {
        let _ = ready.send(Ready::Failed(e)).await;
        return out;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: HashMap<DialbackRequest, oneshot::Sender<bool>> = HashMap::new();
    let mut permit = Some(permit);
    let mut sending = false;
    let mut done = false;
    let mut due = false;
    let mut ticker: Option<tokio::time::Interval> = None;
    let setup_deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let mut closing = false;
    'run: loop {
        // Queue what the window and the pace allow once authorised.
        let window_open = |sent: u64| {
            sent.saturating_sub(shared.delivered_from[plan.index].load(Ordering::Relaxed))
                < plan.window
        };
        while sending
            && out.setup_us.is_some()
            && out.sent < plan.max_messages
            && window_open(out.sent)
            && (ticker.is_none() || due)
        {
            due = false;
            let seq = out.sent;
            let to = plan.receivers
                [receiver_of(plan.index, seq, plan.streams, plan.receivers.len())]
            .clone();
            let now_us = shared.now_us();
            let event = match message_event(&shared, plan.index, seq, now_us, to, plan.body_size) {
                Ok(event) => event,
                Err(e) => {
                    out.end = Some(format!("building a message: {e}"));
                    break 'run;
                }
            };
            if let Err(e) = machine.send(event, Instant::now()) {
                out.end = Some(format!("the stream refused a message: {e}"));
                break 'run;
            }
            out.sent += 1;
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        if sending && !done && out.sent >= plan.max_messages {
            done = true;
            shared.streams_done.fetch_add(1, Ordering::Relaxed);
        }
        // Write and handle outputs until both are drained.
        loop {
            while let Some(bytes) = machine.poll_transmit() {
                if io.write_all(&bytes).await.is_err() {
                    out.end = Some("write failed".to_string());
                    break 'run;
                }
            }
            let Some(output) = machine.poll_event() else {
                break;
            };
            match output {
                Output::StartTls => {
                    while let Some(bytes) = machine.poll_transmit() {
                        let _ = io.write_all(&bytes).await;
                    }
                    if io.start_client(&tls, &plan.hub).await {
                        machine.tls_established(Vec::new(), Instant::now());
                    } else {
                        machine.tls_failed(Instant::now());
                    }
                }
                Output::Authorised(_) => {
                    if out.setup_us.is_none() {
                        let us = started.elapsed().as_micros() as u64;
                        out.setup_us = Some(us);
                        permit.take();
                        let _ = ready.send(Ready::Authorised(us)).await;
                    }
                }
                Output::Refused { events, code, .. } => {
                    out.refused += events.len() as u64;
                    if out.setup_us.is_none() {
                        permit.take();
                        let _ = ready
                            .send(Ready::Failed(anyhow!(
                                "the server refused dialback for {} → {}: {code:?}",
                                shared.partner,
                                plan.hub
                            )))
                            .await;
                        out.end = Some("refused".to_string());
                        break 'run;
                    }
                }
                Output::DialbackVerified { request, valid } => {
                    if let Some(tx) = pending.remove(&request) {
                        let _ = tx.send(valid);
                    }
                }
                Output::Closed(why) => {
                    while let Some(bytes) = machine.poll_transmit() {
                        let _ = io.write_all(&bytes).await;
                    }
                    out.end = Some(format!("stream closed: {why:?}"));
                    if out.setup_us.is_none() {
                        permit.take();
                        let _ = ready
                            .send(Ready::Failed(anyhow!(
                                "stream {} closed before it was authorised: {why:?}",
                                plan.index
                            )))
                            .await;
                    }
                    break 'run;
                }
                Output::Event(_) | Output::Reply(_) | Output::VerifyDialback(_) => {}
            }
        }
        let want_tick = sending
            && out.setup_us.is_some()
            && out.sent < plan.max_messages
            && ticker.is_some()
            && !due;
        let want_wake = sending && out.sent < plan.max_messages && !window_open(out.sent);
        // Deliveries seen while writing may have opened the window already: then go round
        // again at once (after whatever else is ready), as no wake-up will come for them.
        let send_now = sending
            && out.setup_us.is_some()
            && out.sent < plan.max_messages
            && window_open(out.sent)
            && (ticker.is_none() || due);
        let deadline = machine.poll_timeout();
        tokio::select! {
            biased;
            changed = phase.changed(), if !closing => {
                let now = if changed.is_err() { Phase::Finished } else { *phase.borrow_and_update() };
                match now {
                    Phase::Setup => {}
                    Phase::Sending => {
                        sending = true;
                        ticker = plan
                            .interval
                            .map(|period| crate::ws::staggered_ticker(period, plan.index, plan.streams));
                    }
                    Phase::Draining => sending = false,
                    Phase::Finished => {
                        closing = true;
                        sending = false;
                        machine.close(Instant::now());
                    }
                }
            }
            r = io.read(&mut buf) => match r {
                Ok(n) if n > 0 => machine.handle_input(&buf[..n], Instant::now()),
                _ => machine.handle_eof(Instant::now()),
            },
            Some((request, tx)) = async {
                match verify.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                machine.verify_dialback(request.clone(), Instant::now());
                pending.insert(request, tx);
            }
            _ = shared.wake[plan.index].notified(), if want_wake => {}

            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            }, if want_tick => due = true,
            _ = sleep_until(deadline) => machine.handle_timeout(Instant::now()),
            _ = std::future::ready(()), if send_now => {}
            _ = tokio::time::sleep_until(setup_deadline), if out.setup_us.is_none() => {
                let _ = ready.send(Ready::Failed(anyhow!(
                    "stream {} was not authorised within {}s", plan.index, REQUEST_TIMEOUT.as_secs()
                ))).await;
                out.end = Some("set-up timed out".to_string());
                break 'run;
            }
        }
    }
    if out.end.as_deref().is_some_and(|e| !e.contains("Normal")) && !done {
        shared.failed_streams.fetch_add(1, Ordering::Relaxed);
    }
    io.shutdown().await;
    out
}

/// Message `seq` of stream `stream`, stamped for latency.
fn message_event(
    shared: &Shared,
    stream: usize,
    seq: u64,
    now_us: u64,
    to: Address,
    body_size: usize,
) -> Result<Event> {
    let from = Address::parse(&format!("{}@{}", sender_name(stream), shared.partner))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Event::Message(Message {
        id: format!("b{stream}-{seq}"),
        from,
        to,
        body: encode_body(shared.run, seq, now_us, body_size),
        thread: None,
        ts: time::OffsetDateTime::now_utc(),
    }))
}

// ----- the hub sessions that receive -----------------------------------------------------------

/// What one hub session saw.
struct ReceiverOutcome {
    latency: Histogram<u64>,
    delivered: u64,
    stale: u64,
    out_of_order: u64,
    last_delivery_us: Option<u64>,
    disconnect: Option<String>,
}

/// Counts one `message` frame; returns whether it was one of this run's.
fn on_hub_message(
    from: &str,
    body: &str,
    shared: &Shared,
    last_seq: &mut BTreeMap<usize, u64>,
    out: &mut ReceiverOutcome,
) -> bool {
    if body.starts_with(WARM_UP_TAG) {
        return false;
    }
    let stamp = decode_body(body).filter(|s| s.run == shared.run);
    let (Some(stamp), Some(stream)) = (stamp, stream_of(from, &shared.partner)) else {
        out.stale += 1;
        return false;
    };
    let now = shared.now_us();
    report::record_latency(&mut out.latency, now.saturating_sub(stamp.sent_us));
    out.delivered += 1;
    out.last_delivery_us = Some(now);
    match last_seq.get(&stream) {
        Some(&last) if stamp.seq <= last => out.out_of_order += 1,
        _ => {
            last_seq.insert(stream, stamp.seq);
        }
    }
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    if let (Some(count), Some(wake)) = (shared.delivered_from.get(stream), shared.wake.get(stream))
    {
        count.fetch_add(1, Ordering::Relaxed);
        wake.notify_one();
    }
    true
}

async fn receiver(
    mut ws: crate::ws::HubSocket,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> ReceiverOutcome {
    let mut out = ReceiverOutcome {
        latency: report::latency_histogram(),
        delivered: 0,
        stale: 0,
        out_of_order: 0,
        last_delivery_us: None,
        disconnect: None,
    };
    let mut last_seq = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() == Phase::Finished {
                    break;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Some((from, body)) = crate::ws::hub_message(text.as_str()) {
                        on_hub_message(&from, &body, &shared, &mut last_seq, &mut out);
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None => {
                    out.disconnect = Some("closed by the server".to_string());
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.disconnect = Some(format!("socket error: {e}"));
                    break;
                }
            }
        }
    }
    if out.disconnect.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    let _ = ws.flush().await;
    out
}

// ----- the run -----------------------------------------------------------------------------------

/// Everything one s2s run measured.
#[derive(Debug, Clone, Serialize)]
pub struct S2sReport {
    pub mode: &'static str,
    pub server_url: String,
    pub xmpp_s2s_addr: String,
    pub partner_domain: String,
    pub tool_listener: String,
    pub server_pid: Option<u32>,
    pub server_env: Vec<String>,
    pub streams: usize,
    pub sessions: usize,
    pub window: u32,
    pub rate_per_stream: Option<f64>,
    pub messages_per_stream: Option<u64>,
    pub duration_limit_s: f64,
    pub body_bytes: usize,
    pub users_created: usize,
    pub users_existing: usize,
    pub register_s: f64,
    pub sign_in_s: f64,
    pub stream_setup_s: f64,
    pub stream_setup_latency: Option<LatencySummary>,
    pub dialback_verifications: u64,
    pub server_connections_to_tool: u64,
    pub stanzas_from_server: u64,
    pub sending_s: f64,
    pub sent: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub refused: u64,
    pub stale: u64,
    pub out_of_order: u64,
    pub session_disconnects: usize,
    pub stream_failures: usize,
    pub first_stream_end: Option<String>,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub latency: Option<LatencySummary>,
    pub memory: Option<MemoryReport>,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_cores: Option<f64>,
    pub server_exit: Option<String>,
}

impl S2sReport {
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.section("entente-bench s2s")
            .row(
                "server",
                format!("{} (xmpp_s2s {})", self.server_url, self.xmpp_s2s_addr),
            )
            .row(
                "partner played",
                format!(
                    "{} (listening on {})",
                    self.partner_domain, self.tool_listener
                ),
            )
            .row(
                "server pid",
                self.server_pid
                    .map_or("unknown".to_string(), |p| p.to_string()),
            )
            .row(
                "server environment",
                if self.server_env.is_empty() {
                    "inherited".to_string()
                } else {
                    self.server_env.join(" ")
                },
            )
            .row("s2s streams", self.streams)
            .row("hub sessions (WebSocket)", self.sessions)
            .row("window per stream (end to end)", self.window)
            .row(
                "rate per stream",
                self.rate_per_stream
                    .map_or("unpaced".to_string(), |r| PerSecond(r).to_string()),
            )
            .row(
                "limit",
                match self.messages_per_stream {
                    Some(m) => format!(
                        "{} messages per stream or {}s",
                        Thousands(m),
                        self.duration_limit_s
                    ),
                    None => format!("{}s", self.duration_limit_s),
                },
            )
            .row("body", format!("{} bytes", self.body_bytes));
        t.section("setup")
            .row(
                "users",
                format!(
                    "{} created, {} existing, in {:.1}s",
                    self.users_created, self.users_existing, self.register_s
                ),
            )
            .row("hub sessions signed in", format!("{:.1}s", self.sign_in_s))
            .row(
                "streams authorised",
                format!("{:.2}s for all", self.stream_setup_s),
            )
            .row(
                "server's connections to the tool / db:verify relayed",
                format!(
                    "{} / {}",
                    self.server_connections_to_tool, self.dialback_verifications
                ),
            );
        if let Some(s) = &self.stream_setup_latency {
            t.row("stream set-up p50/p99/p99.9/max", s.percentiles_line());
        }
        t.section("messages")
            .row("sending time", format!("{:.2}s", self.sending_s))
            .row("sent", Thousands(self.sent))
            .row("delivered to hub sessions", Thousands(self.delivered))
            .row("not received by the end", Thousands(self.undelivered))
            .row("refused by the stream", Thousands(self.refused))
            .row(
                "stanzas the server sent the partner",
                Thousands(self.stanzas_from_server),
            )
            .row("out of order or repeated", Thousands(self.out_of_order))
            .row("stale (earlier runs)", Thousands(self.stale))
            .row("hub session disconnects", self.session_disconnects)
            .row("streams that failed", self.stream_failures);
        if let Some(reason) = &self.first_stream_end {
            t.row("first stream failure", reason);
        }
        t.section("throughput")
            .row("sent", PerSecond(self.sent_per_s))
            .row("delivered", PerSecond(self.delivered_per_s));
        t.section("latency (p50 / p99 / p99.9 / max)");
        match &self.latency {
            Some(s) => t.row("send → delivery", s.percentiles_line()),
            None => t.row("send → delivery", "no message delivered"),
        };
        server_section(
            &mut t,
            &ServerLabels {
                before: "RSS, hub sessions in, before streams",
                connected: "RSS, streams authorised, idle",
                per: "per stream",
                no_memory: "not measured",
                cpu: "CPU while sending",
            },
            self,
        );
        t
    }
}

/// Runs the s2s benchmark and prints its report.
pub async fn run(args: S2sArgs) -> Result<()> {
    let report = execute(&args).await?;
    crate::ws::print_report(&report, &report.table(), args.json.as_deref())
}

/// Runs the s2s benchmark and returns its report (printing only progress on stderr).
pub async fn execute(args: &S2sArgs) -> Result<S2sReport> {
    args.validate()?;
    let tls = Arc::new(TlsSetup::new(&args.partner_domain)?);
    let secret: [u8; 32] = rand::random();
    let mut served = BTreeMap::new();
    served.insert(args.partner_domain.clone(), DomainKind::Xmpp);
    let cfg = Arc::new(entente_xmpp::Config::new(served, secret.to_vec()));
    let tool = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the partner's listener")?;
    let tool_addr = tool.local_addr()?;
    let (verify_tx, verify_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ListenerStats::default());
    let listener_task = tokio::spawn(listener(
        tool,
        cfg.clone(),
        tls.clone(),
        verify_tx,
        stats.clone(),
    ));

    let settings = SpawnSettings {
        env: args.server_env.clone(),
        xmpp_s2s: true,
        xmpp_partners: vec![XmppPartner {
            domain: args.partner_domain.clone(),
            address: tool_addr,
            auth: "dialback".to_string(),
        }],
        ..SpawnSettings::default()
    };
    let server = SpawnedServer::start(&args.spawn, &settings).await?;
    eprintln!(
        "started {} (pid {}) on {}, data in {}",
        args.spawn.display(),
        server.pid(),
        server.http.addr,
        server.dir().display()
    );
    let mut spawned = Some(server);
    let result = measure(args, cfg, tls, tool_addr, verify_rx, stats, &mut spawned).await;
    let server_exit = crate::ws::stop_spawned(spawned, args.server_log.as_deref()).await;
    listener_task.abort();
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            return Err(match server_exit {
                Some(exit) => e.context(format!("server: {exit}")),
                None => e,
            })
        }
    };
    report.server_exit = server_exit;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &S2sArgs,
    cfg: Arc<entente_xmpp::Config>,
    tls: Arc<TlsSetup>,
    tool_addr: SocketAddr,
    verify_rx: mpsc::UnboundedReceiver<VerifyJob>,
    stats: Arc<ListenerStats>,
    spawned: &mut Option<SpawnedServer>,
) -> Result<S2sReport> {
    let server = spawned
        .as_ref()
        .ok_or_else(|| anyhow!("no server was started"))?;
    let target = server.http;
    let pid = Some(server.pid());
    let s2s_addr = *server
        .listeners
        .get("xmpp_s2s")
        .ok_or_else(|| anyhow!("the server announced no xmpp_s2s listener"))?;
    let n = args.sessions;
    let k = args.streams;

    let users: Vec<String> = (0..n).map(|i| args.user(i)).collect();
    eprintln!("registering {n} users…");
    let registered = http::register_all(
        target.addr,
        &users,
        &args.password,
        args.register_concurrency,
        REQUEST_TIMEOUT,
    )
    .await?;
    if registered.closed {
        bail!("the spawned server refused registration");
    }

    eprintln!("signing in {n} hub sessions…");
    let sign_in_started = Instant::now();
    let ws_url = target.ws_url();
    let signed: Vec<Result<(crate::ws::HubSocket, String)>> = futures::stream::iter(users.iter())
        .map(|user| {
            let ws_url = ws_url.clone();
            let password = args.password.clone();
            async move {
                tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    crate::ws::hub_sign_in(&ws_url, user, &password),
                )
                .await
                .map_err(|_| anyhow!("sign-in of `{user}` timed out"))?
            }
        })
        .buffered(args.connect_concurrency)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for result in signed {
        let (ws, address) = result.context("hub sign-in")?;
        receivers.push(Address::parse(&address).map_err(|e| anyhow!("`{address}`: {e}"))?);
        sockets.push(ws);
    }
    let sign_in_s = sign_in_started.elapsed().as_secs_f64();
    let hub = receivers
        .first()
        .map(|a| a.domain().to_string())
        .ok_or_else(|| anyhow!("no hub session"))?;

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run: run_id,
        partner: args.partner_domain.clone(),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        streams_done: AtomicUsize::new(0),
        failed_streams: AtomicUsize::new(0),
        delivered_from: (0..k).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..k).map(|_| Notify::new()).collect(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let receiver_tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(receiver(ws, shared.clone(), phase_rx.clone())))
        .collect();

    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let before = crate::ws::read_memory(pid)?;

    eprintln!("opening {k} s2s streams as {}…", args.partner_domain);
    let receivers = Arc::new(receivers);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let (ready_tx, mut ready_rx) = mpsc::channel(k);
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let setup_started = Instant::now();
    let mut verify_rx = Some(verify_rx);
    let mut stream_tasks = Vec::with_capacity(k);
    for index in 0..k {
        let plan = StreamPlan {
            index,
            streams: k,
            server: s2s_addr,
            hub: hub.clone(),
            receivers: receivers.clone(),
            window: u64::from(args.window),
            interval,
            max_messages: args.messages.unwrap_or(u64::MAX),
            body_size: args.body_size,
        };
        // The first stream also carries the tool's own verifications of the server's keys.
        stream_tasks.push(tokio::spawn(stream_task(
            plan,
            cfg.clone(),
            tls.clone(),
            shared.clone(),
            phase_rx.clone(),
            gate.clone(),
            ready_tx.clone(),
            verify_rx.take(),
        )));
    }
    drop(ready_tx);
    let mut setup_latency = report::latency_histogram();
    let mut authorised = 0;
    while authorised < k {
        let failure = match ready_rx.recv().await {
            Some(Ready::Authorised(us)) => {
                report::record_latency(&mut setup_latency, us);
                authorised += 1;
                continue;
            }
            Some(Ready::Failed(e)) => e,
            None => anyhow!("streams ended before they were authorised"),
        };
        let _ = phase_tx.send(Phase::Finished);
        let tail = spawned.as_ref().map(|s| s.log_tail()).unwrap_or_default();
        return Err(failure.context(format!(
            "{authorised} of {k} streams were authorised when one failed{tail}"
        )));
    }
    let stream_setup_s = setup_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let connected = crate::ws::read_memory(pid)?;

    eprintln!("{k} streams authorised in {stream_setup_s:.2}s; sending…");
    let cpu_before = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
    let bench_cpu_before = process::read_cpu_seconds(None).ok();
    let start_us = shared.now_us();
    let start = Instant::now();
    let _ = phase_tx.send(Phase::Sending);
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut check = tokio::time::interval(Duration::from_millis(20));
    loop {
        check.tick().await;
        if Instant::now() >= deadline
            || shared.streams_done.load(Ordering::Relaxed) >= k
            || shared.failed_streams.load(Ordering::Relaxed) >= k
        {
            break;
        }
        if let Some(server) = spawned.as_mut() {
            if let Some(status) = server.exited() {
                let _ = phase_tx.send(Phase::Finished);
                bail!(
                    "the server exited during the run: {status}{}",
                    server.log_tail()
                );
            }
        }
    }
    let _ = phase_tx.send(Phase::Draining);
    let sending_s = start.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        if shared.delivered.load(Ordering::Relaxed) >= shared.sent.load(Ordering::Relaxed)
            || Instant::now() >= drain_deadline
        {
            break;
        }
        check.tick().await;
    }
    let end = Instant::now();
    let cpu_after = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
    let bench_cpu_after = process::read_cpu_seconds(None).ok();
    let end_memory = crate::ws::read_memory(pid)?;
    let _ = phase_tx.send(Phase::Finished);

    let streams = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join_all(stream_tasks),
    )
    .await
    .map_err(|_| anyhow!("streams did not close within 30s"))?;
    let sessions = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join_all(receiver_tasks),
    )
    .await
    .map_err(|_| anyhow!("hub sessions did not close within 30s"))?;
    let mut sent = 0;
    let mut refused = 0;
    let mut first_stream_end = None;
    for s in streams {
        let s = s.context("a stream task failed")?;
        sent += s.sent;
        refused += s.refused;
        if let Some(end) = s.end {
            if !end.contains("Normal") {
                first_stream_end.get_or_insert(end);
            }
        }
    }
    let mut latency = report::latency_histogram();
    let mut delivered = 0;
    let mut stale = 0;
    let mut out_of_order = 0;
    let mut last_delivery_us = None;
    let mut session_disconnects = 0;
    for r in sessions {
        let r = r.context("a hub session task failed")?;
        latency.add(&r.latency).ok();
        delivered += r.delivered;
        stale += r.stale;
        out_of_order += r.out_of_order;
        last_delivery_us = last_delivery_us.max(r.last_delivery_us);
        if r.disconnect.is_some() {
            session_disconnects += 1;
        }
    }
    let measured_s = (end - start).as_secs_f64();
    let cores = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if measured_s > 0.0 => Some((a - b) / measured_s),
        _ => None,
    };
    Ok(S2sReport {
        mode: "s2s",
        server_url: format!("http://{}", target.addr),
        xmpp_s2s_addr: s2s_addr.to_string(),
        partner_domain: args.partner_domain.clone(),
        tool_listener: tool_addr.to_string(),
        server_pid: pid,
        server_env: args
            .server_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        streams: k,
        sessions: n,
        window: args.window,
        rate_per_stream: args.rate,
        messages_per_stream: args.messages,
        duration_limit_s: args.duration,
        body_bytes: args.body_size.max(encode_body(run_id, 0, 0, 0).len()),
        users_created: registered.created,
        users_existing: registered.existing,
        register_s: registered.seconds,
        sign_in_s,
        stream_setup_s,
        stream_setup_latency: LatencySummary::from_histogram(&setup_latency),
        dialback_verifications: stats.verifications.load(Ordering::Relaxed),
        server_connections_to_tool: stats.connections.load(Ordering::Relaxed),
        stanzas_from_server: stats.events.load(Ordering::Relaxed),
        sending_s,
        sent,
        delivered,
        undelivered: sent.saturating_sub(delivered),
        refused,
        stale,
        out_of_order,
        session_disconnects,
        stream_failures: shared.failed_streams.load(Ordering::Relaxed),
        first_stream_end,
        sent_per_s: if sending_s > 0.0 {
            sent as f64 / sending_s
        } else {
            0.0
        },
        delivered_per_s: match last_delivery_us {
            Some(last) if last > start_us && delivered > 0 => {
                delivered as f64 / ((last - start_us) as f64 / 1e6)
            }
            _ => 0.0,
        },
        latency: LatencySummary::from_histogram(&latency),
        memory: match (before, connected, end_memory) {
            (Some(b), Some(c), Some(e)) => Some(MemoryReport::new(b, c, e, k)),
            _ => None,
        },
        server_cpu_cores: cores(cpu_before, cpu_after),
        bench_cpu_cores: cores(bench_cpu_before, bench_cpu_after),
        server_exit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s2s: S2sArgs,
    }

    fn args(extra: &[&str]) -> Result<S2sArgs, clap::Error> {
        let mut argv = vec!["entente-bench", "--spawn", "x"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.s2s)
    }

    fn shared(run: u64, streams: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            run,
            partner: "bench.test".to_string(),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            streams_done: AtomicUsize::new(0),
            failed_streams: AtomicUsize::new(0),
            delivered_from: (0..streams).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..streams).map(|_| Notify::new()).collect(),
        }
    }

    fn outcome() -> ReceiverOutcome {
        ReceiverOutcome {
            latency: report::latency_histogram(),
            delivered: 0,
            stale: 0,
            out_of_order: 0,
            last_delivery_us: None,
            disconnect: None,
        }
    }

    #[test]
    fn senders_are_named_and_recognised() {
        for k in [0, 1, 17, 999] {
            let from = format!("{}@bench.test", sender_name(k));
            assert_eq!(stream_of(&from, "bench.test"), Some(k));
            assert_eq!(stream_of(&format!("{from}/res"), "bench.test"), Some(k));
        }
        for from in [
            "s1@other.test",
            "x1@bench.test",
            "s@bench.test",
            "s-1@bench.test",
            "s1x@bench.test",
            "s99999999999@bench.test",
            "s1",
            "",
            "@bench.test",
        ] {
            assert_eq!(stream_of(from, "bench.test"), None, "{from}");
        }
    }

    #[test]
    fn messages_are_spread_over_every_session() {
        for (streams, sessions) in [(1, 10), (4, 10), (10, 4), (3, 3), (7, 1)] {
            let mut hits = vec![0u64; sessions];
            for stream in 0..streams {
                for seq in 0..(sessions as u64 * 10) {
                    hits[receiver_of(stream, seq, streams, sessions)] += 1;
                }
            }
            assert!(
                hits.iter().all(|&h| h > 0),
                "{streams}×{sessions}: {hits:?}"
            );
        }
        // Never out of range, even with extreme numbers.
        assert!(receiver_of(999, u64::MAX, 1000, 7) < 7);
    }

    #[test]
    fn hub_messages_update_counters() {
        let shared = shared(3, 2);
        let mut out = outcome();
        let mut last = BTreeMap::new();
        let ours = |seq| encode_body(3, seq, 0, 0);
        assert!(on_hub_message(
            "s1@bench.test",
            &ours(0),
            &shared,
            &mut last,
            &mut out
        ));
        assert!(on_hub_message(
            "s1@bench.test",
            &ours(4),
            &shared,
            &mut last,
            &mut out
        ));
        assert!(on_hub_message(
            "s0@bench.test",
            &ours(1),
            &shared,
            &mut last,
            &mut out
        ));
        // A repeat from stream 1 is out of order; stream 0's numbers are its own.
        assert!(on_hub_message(
            "s1@bench.test",
            &ours(4),
            &shared,
            &mut last,
            &mut out
        ));
        // Warm-up messages are not counted at all; others are stale.
        assert!(!on_hub_message(
            "s0@bench.test",
            &format!("{WARM_UP_TAG} 0"),
            &shared,
            &mut last,
            &mut out
        ));
        assert!(!on_hub_message(
            "s0@bench.test",
            &encode_body(2, 0, 0, 0),
            &shared,
            &mut last,
            &mut out
        ));
        assert!(!on_hub_message(
            "alice@localhost",
            &ours(9),
            &shared,
            &mut last,
            &mut out
        ));
        // A stream number beyond the run's streams is counted but wakes nobody.
        assert!(on_hub_message(
            "s9@bench.test",
            &ours(0),
            &shared,
            &mut last,
            &mut out
        ));
        assert_eq!(out.delivered, 5);
        assert_eq!(out.out_of_order, 1);
        assert_eq!(out.stale, 2);
        assert_eq!(shared.delivered_from[1].load(Ordering::Relaxed), 3);
        assert_eq!(shared.delivered_from[0].load(Ordering::Relaxed), 1);
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn message_events_are_from_the_partner() {
        let shared = shared(1, 1);
        let to = Address::parse("bench0@localhost").unwrap();
        let Event::Message(m) = message_event(&shared, 3, 8, 100, to.clone(), 64).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(m.from.to_string(), "s3@bench.test");
        assert_eq!(m.to, to);
        assert_eq!(m.body.len(), 64);
        let stamp = decode_body(&m.body).unwrap();
        assert_eq!((stamp.run, stamp.seq, stamp.sent_us), (1, 8, 100));
    }

    #[test]
    fn arguments_are_bounded() {
        assert!(args(&[]).unwrap().validate().is_ok());
        assert!(args(&["--streams", "100", "--sessions", "1"])
            .unwrap()
            .validate()
            .is_ok());
        for bad in [
            &["--streams", "0"][..],
            &["--streams", "1001"],
            &["--sessions", "0"],
            &["--duration", "0"],
            &["--messages", "0"],
            &["--window", "0"],
            &["--rate", "0"],
            &["--body-size", "5000"],
            &["--partner-domain", "Bench.Test"],
            &["--partner-domain", "nodot"],
            &["--partner-domain", "a@b.test"],
            &["--partner-domain", ""],
            &["--user-prefix", "B"],
        ] {
            assert!(args(bad).unwrap().validate().is_err(), "{bad:?} accepted");
        }
        // --spawn is required.
        assert!(Cli::try_parse_from(["entente-bench"]).is_err());
    }

    #[test]
    fn tls_configurations_build() {
        let tls = TlsSetup::new("bench.test").unwrap();
        assert!(tls.server.alpn_protocols.is_empty());
        assert!(Arc::strong_count(&tls.client) == 1);
    }

    /// The tool's listener answers `db:verify` for its own keys: an outbound stream of the same
    /// configuration to the listener verifies a key made with the shared secret, and refuses one
    /// made with another.
    #[tokio::test]
    async fn the_listener_verifies_keys_made_with_the_shared_secret() {
        let tls = Arc::new(TlsSetup::new("bench.test").unwrap());
        let secret = vec![7u8; 32];
        let mut served = BTreeMap::new();
        served.insert("bench.test".to_string(), DomainKind::Xmpp);
        served.insert("hub.test".to_string(), DomainKind::Hub);
        let cfg = Arc::new(entente_xmpp::Config::new(served, secret.clone()));
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (verify_tx, _verify_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ListenerStats::default());
        let task = tokio::spawn(listener(
            socket,
            cfg.clone(),
            tls.clone(),
            verify_tx,
            stats.clone(),
        ));

        let good = entente_xmpp::dialback::dialback_key(&secret, "hub.test", "bench.test", "id1");
        let bad = entente_xmpp::dialback::dialback_key(&[1u8; 32], "hub.test", "bench.test", "id2");
        let mut machine = Outbound::new(cfg, "hub.test", "bench.test", Instant::now());
        let requests = [
            DialbackRequest {
                originating: "bench.test".into(),
                receiving: "hub.test".into(),
                stream_id: "id1".into(),
                key: good,
            },
            DialbackRequest {
                originating: "bench.test".into(),
                receiving: "hub.test".into(),
                stream_id: "id2".into(),
                key: bad,
            },
        ];
        for r in &requests {
            machine.verify_dialback(r.clone(), Instant::now());
        }
        let mut io = Io::Plain(TcpStream::connect(addr).await.unwrap());
        let mut answers = HashMap::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let work = async {
            while answers.len() < 2 {
                while let Some(bytes) = machine.poll_transmit() {
                    io.write_all(&bytes).await.unwrap();
                }
                while let Some(out) = machine.poll_event() {
                    match out {
                        Output::StartTls => {
                            while let Some(bytes) = machine.poll_transmit() {
                                io.write_all(&bytes).await.unwrap();
                            }
                            assert!(io.start_client(&tls, "bench.test").await);
                            machine.tls_established(Vec::new(), Instant::now());
                        }
                        Output::DialbackVerified { request, valid } => {
                            answers.insert(request.stream_id, valid);
                        }
                        Output::Closed(why) => panic!("closed: {why:?}"),
                        _ => {}
                    }
                }
                while let Some(bytes) = machine.poll_transmit() {
                    io.write_all(&bytes).await.unwrap();
                }
                if answers.len() == 2 {
                    break;
                }
                let n = io.read(&mut buf).await.unwrap();
                assert!(n > 0, "the listener closed the stream");
                machine.handle_input(&buf[..n], Instant::now());
            }
        };
        tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .expect("the listener answers");
        assert_eq!(answers.get("id1"), Some(&true));
        assert_eq!(answers.get("id2"), Some(&false));
        assert_eq!(stats.connections.load(Ordering::Relaxed), 1);
        task.abort();
    }
}

impl crate::report::ServerFigures for S2sReport {
    fn memory(&self) -> Option<&crate::ws::MemoryReport> {
        self.memory.as_ref()
    }
    fn server_cpu_cores(&self) -> Option<f64> {
        self.server_cpu_cores
    }
    fn bench_cpu_cores(&self) -> Option<f64> {
        self.bench_cpu_cores
    }
    fn server_exit(&self) -> Option<&str> {
        self.server_exit.as_deref()
    }
}
