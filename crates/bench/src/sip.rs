//! SIP mode: the tool plays a SIP partner domain (`bench-sip.test` by default). The spawned
//! server lists that partner with `auth = "none"` and its pinned address pointing at the tool's
//! UDP socket, and listens for SIP (`[listen] sip`, UDP and TCP). Two directions, one after the
//! other on the same server and hub sessions:
//!
//! - **in**: `--senders` SIP user agents of the tool (each from its own loopback address, over
//!   UDP or TCP) send MESSAGE requests (RFC 3428) to hub users signed in over WebSocket, each
//!   keeping at most `--window` transactions open. Measures MESSAGE transactions per second
//!   (final responses, 200 once the hub committed the message), send → 200 latency, and send →
//!   delivery to the hub session. Over UDP the tool retransmits as RFC 3261 says (timer E from
//!   500 ms, doubling to 4 s) and gives a transaction up after 32 s (timer F).
//! - **out**: the hub sessions send to users at the partner domain; the tool answers every
//!   request 200 as the partner and measures hub send → arrival at the partner. Each session
//!   keeps at most `--window` messages sent but not yet arrived. The server reaches a pinned
//!   `auth = "none"` partner over UDP.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use entente_sip::wire::{SipParser, StreamDecoder};
use entente_sip::{SipMessage, SipxParser, StreamFramer};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::http;
use crate::process;
use crate::report::{
    self, server_section, LatencySummary, PerSecond, ServerLabels, Table, Thousands,
};
use crate::target::{SpawnSettings, SpawnedServer, XmppPartner};
use crate::ws::{decode_body, encode_body, MemoryReport, MAX_SESSIONS};

/// Most SIP user agents one run may start (each gets its own loopback address 127.0.1.N).
pub const MAX_SENDERS: usize = 250;
/// Largest message body: with its headers a MESSAGE stays below 1300 bytes, so the server
/// sends it over UDP (RFC 3261 §18.1.1).
const MAX_BODY: usize = 1000;
/// Time allowed for an HTTP request or a sign-in.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// RFC 3261 timers for the tool's own UDP transactions.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMER_F: Duration = Duration::from_secs(32);
/// Largest datagram or read.
const READ_CHUNK: usize = 65_536;

/// Which directions to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// SIP user agents send MESSAGE to hub sessions.
    In,
    /// Hub sessions send to SIP users at the partner; the tool answers 200.
    Out,
    /// `in`, then `out`.
    Both,
}

/// The transport of the tool's user agents (direction `in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SipArgs {
    /// Start this `entente` binary with a temporary configuration (HTTP and `sip` listeners,
    /// the partner domain pinned at this tool's UDP socket) and stop it at the end.
    #[arg(long, value_name = "PATH")]
    pub spawn: PathBuf,
    /// Which directions to measure, one after the other.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,
    /// Transport of the tool's user agents sending in.
    #[arg(long, value_enum, default_value_t = SipTransport::Udp)]
    pub transport: SipTransport,
    /// Domain this tool plays the SIP partner of.
    #[arg(long, default_value = "bench-sip.test")]
    pub partner_domain: String,
    /// SIP user agents sending in, each from its own loopback address.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Hub users signed in over WebSocket: they receive (in) and send (out).
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// Seconds of sending in each direction; a direction also ends when every sender has
    /// sent --messages.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages each sender (user agent in, hub session out) sends (default: as many as fit).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Open transactions per user agent (in); messages sent but not yet arrived per hub
    /// session (out).
    #[arg(long, default_value_t = 16)]
    pub window: u32,
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
    /// WebSocket sign-ins in flight at once.
    #[arg(long, default_value_t = 8)]
    pub connect_concurrency: usize,
    /// Seconds to wait before each memory reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds to wait after sending stops for outstanding answers and deliveries.
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

impl SipArgs {
    pub fn validate(&self) -> Result<()> {
        if self.sessions == 0 || self.sessions > MAX_SESSIONS {
            bail!("--sessions must be between 1 and {MAX_SESSIONS}");
        }
        if self.senders == 0 || self.senders > MAX_SENDERS {
            bail!("--senders must be between 1 and {MAX_SENDERS}");
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
        if self.body_size > MAX_BODY {
            bail!("--body-size must be at most {MAX_BODY}");
        }
        let domain_ok = self.partner_domain.len() <= 253
            && self.partner_domain.contains('.')
            && self.partner_domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !domain_ok {
            bail!(
                "--partner-domain must be a lower-case domain name with a dot, like bench-sip.test"
            );
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

    fn inbound(&self) -> bool {
        self.direction != Direction::Out
    }

    fn outbound(&self) -> bool {
        self.direction != Direction::In
    }
}

// ----- SIP messages --------------------------------------------------------------------------

/// The loopback address user agent `k` sends from (the server limits requests per source
/// address, and real partners' user agents are many hosts).
pub fn sender_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, (k % MAX_SENDERS) as u8 + 1)
}

/// A MESSAGE from `from_user@partner` to `to_user@hub`, sent from `local` over `transport`.
#[allow(clippy::too_many_arguments)]
pub fn message_request(
    transport: SipTransport,
    local: SocketAddr,
    from_user: &str,
    partner: &str,
    to_user: &str,
    hub: &str,
    call_id: &str,
    cseq: u64,
    body: &str,
) -> Vec<u8> {
    let via = match transport {
        SipTransport::Udp => "UDP",
        SipTransport::Tcp => "TCP",
    };
    format!(
        "MESSAGE sip:{to_user}@{hub} SIP/2.0\r\n\
Via: SIP/2.0/{via} {local};branch=z9hG4bK{call_id};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{from_user}@{partner}>;tag={from_user}\r\n\
To: <sip:{to_user}@{hub}>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} MESSAGE\r\n\
Content-Type: text/plain;charset=UTF-8\r\n\
Content-Length: {}\r\n\
\r\n\
{body}",
        body.len()
    )
    .into_bytes()
}

/// The partner's 200 OK to a request of the server (RFC 3261 §8.2.6: Via, From, Call-ID and
/// CSeq copied, a tag added to To).
pub fn ok_response(req: &SipMessage) -> Option<Vec<u8>> {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for h in req.headers() {
        if h.is("Via") || h.is("From") || h.is("Call-ID") || h.is("CSeq") {
            out.push_str(&format!("{}: {}\r\n", h.name(), h.value()));
        }
    }
    let to = req.header("To")?;
    if to.contains(";tag=") {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag=bench\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// The hub session a `From` user part names (`PREFIXn`).
pub fn session_of(user: &str, prefix: &str) -> Option<usize> {
    let digits = user.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The user part of a name-addr's SIP URI (`"x" <sip:user@host>;tag=…` → `user`).
fn uri_user(value: &str) -> Option<&str> {
    let start = value.find("sip:")? + 4;
    let rest = &value[start..];
    let end = rest.find('@')?;
    Some(&rest[..end])
}

// ----- shared run state ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    In,
    InDrain,
    Out,
    OutDrain,
    Finished,
}

struct Shared {
    epoch: Instant,
    run: u64,
    partner: String,
    hub: String,
    user_prefix: String,
    /// Direction in: requests sent, final answers, 200s, deliveries at hub sessions.
    in_sent: AtomicU64,
    in_answered: AtomicU64,
    in_ok: AtomicU64,
    in_delivered: AtomicU64,
    senders_done: AtomicUsize,
    /// Direction out: messages the hub sessions sent, and those that arrived at the partner
    /// from each session (its window), with a wake-up per session.
    out_sent: AtomicU64,
    out_arrived: AtomicU64,
    arrived_from: Vec<AtomicU64>,
    wake: Vec<Notify>,
    sessions_done: AtomicUsize,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

// ----- the tool's user agents (direction in) -------------------------------------------------

enum Conn {
    Udp(UdpSocket),
    Tcp {
        read: tokio::net::tcp::OwnedReadHalf,
        write: tokio::net::tcp::OwnedWriteHalf,
        framer: Box<StreamFramer>,
    },
}

impl Conn {
    async fn open(transport: SipTransport, local: IpAddr, gateway: SocketAddr) -> Result<Conn> {
        Ok(match transport {
            SipTransport::Udp => {
                let s = UdpSocket::bind((local, 0))
                    .await
                    .with_context(|| format!("binding a UDP socket on {local}"))?;
                s.connect(gateway).await?;
                Conn::Udp(s)
            }
            SipTransport::Tcp => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(local, 0))?;
                let stream = socket
                    .connect(gateway)
                    .await
                    .with_context(|| format!("connecting to {gateway} from {local}"))?;
                stream.set_nodelay(true)?;
                let (read, write) = stream.into_split();
                Conn::Tcp {
                    read,
                    write,
                    framer: Box::new(StreamFramer::new(Default::default())),
                }
            }
        })
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        Ok(match self {
            Conn::Udp(s) => s.local_addr()?,
            Conn::Tcp { write, .. } => write.local_addr()?,
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Conn::Udp(s) => {
                s.send(bytes).await?;
            }
            Conn::Tcp { write, .. } => write.write_all(bytes).await?,
        }
        Ok(())
    }

    /// The next messages that arrive (one datagram, or what a read completed).
    async fn recv(&mut self, parser: &SipxParser, buf: &mut [u8]) -> Result<Vec<SipMessage>> {
        match self {
            Conn::Udp(s) => {
                let n = s.recv(buf).await?;
                Ok(parser
                    .parse_datagram(buf.get(..n).unwrap_or(&[]))
                    .into_iter()
                    .collect())
            }
            Conn::Tcp { read, framer, .. } => {
                let n = read.read(buf).await?;
                if n == 0 {
                    bail!("the server closed the connection");
                }
                framer
                    .push(buf.get(..n).unwrap_or(&[]))
                    .map_err(|e| anyhow!("unframeable bytes from the server: {e}"))
            }
        }
    }
}

struct InPlan {
    index: usize,
    transport: SipTransport,
    users: Arc<Vec<String>>,
    window: usize,
    max_messages: u64,
    body_size: usize,
}

/// An open transaction of a user agent.
struct Open {
    bytes: Vec<u8>,
    sent_at: Instant,
    next_retransmit: Instant,
    interval: Duration,
}

/// What one user agent saw.
struct SenderOutcome {
    sent: u64,
    ok: u64,
    refused: BTreeMap<u16, u64>,
    unanswered: u64,
    retransmissions: u64,
    latency: Histogram<u64>,
    last_answer_us: Option<u64>,
    error: Option<String>,
}

async fn sip_sender(
    plan: InPlan,
    conn: Conn,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> SenderOutcome {
    let mut out = SenderOutcome {
        sent: 0,
        ok: 0,
        refused: BTreeMap::new(),
        unanswered: 0,
        retransmissions: 0,
        latency: report::latency_histogram(),
        last_answer_us: None,
        error: None,
    };
    if let Err(e) = sender_loop(&plan, conn, &shared, &mut phase, &mut out).await {
        out.error = Some(format!("{e:#}"));
    }
    shared.senders_done.fetch_add(1, Ordering::Relaxed);
    out
}

async fn sender_loop(
    plan: &InPlan,
    mut conn: Conn,
    shared: &Shared,
    phase: &mut watch::Receiver<Phase>,
    out: &mut SenderOutcome,
) -> Result<()> {
    let parser = SipxParser::default();
    let local = conn.local_addr()?;
    let name = format!("s{}", plan.index);
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let users = plan.users.len().max(1) as u64;
    loop {
        let now_phase = *phase.borrow_and_update();
        match now_phase {
            Phase::Setup => {
                phase.changed().await?;
                continue;
            }
            Phase::In | Phase::InDrain => {}
            _ => break,
        }
        while now_phase == Phase::In && open.len() < plan.window && out.sent < plan.max_messages {
            let seq = out.sent;
            let to = &plan.users[((plan.index as u64 + seq) % users) as usize];
            let call_id = format!("{:x}-{}-{seq}", shared.run, plan.index);
            let body = encode_body(shared.run, seq, shared.now_us(), plan.body_size);
            let bytes = message_request(
                plan.transport,
                local,
                &name,
                &shared.partner,
                to,
                &shared.hub,
                &call_id,
                seq + 1,
                &body,
            );
            conn.send(&bytes).await?;
            let now = Instant::now();
            open.insert(
                call_id,
                Open {
                    bytes,
                    sent_at: now,
                    next_retransmit: now + T1,
                    interval: T1,
                },
            );
            out.sent += 1;
            shared.in_sent.fetch_add(1, Ordering::Relaxed);
        }
        if open.is_empty() && (now_phase == Phase::InDrain || out.sent >= plan.max_messages) {
            break;
        }
        tokio::select! {
            biased;
            got = conn.recv(&parser, &mut buf) => {
                for msg in got? {
                    let Some(status) = msg.status() else { continue };
                    if status < 200 {
                        continue;
                    }
                    let Some(tx) = msg.header("Call-ID").and_then(|c| open.remove(c.trim())) else {
                        continue;
                    };
                    let now_us = shared.now_us();
                    report::record_latency(&mut out.latency, tx.sent_at.elapsed().as_micros() as u64);
                    out.last_answer_us = Some(now_us);
                    shared.in_answered.fetch_add(1, Ordering::Relaxed);
                    if status == 200 {
                        out.ok += 1;
                        shared.in_ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        *out.refused.entry(status).or_default() += 1;
                    }
                }
            }
            changed = phase.changed() => changed?,
            _ = tick.tick() => {
                let now = Instant::now();
                let mut lapsed = Vec::new();
                for (id, tx) in open.iter_mut() {
                    if now.duration_since(tx.sent_at) >= TIMER_F {
                        lapsed.push(id.clone());
                    } else if plan.transport == SipTransport::Udp && now >= tx.next_retransmit {
                        tx.interval = (tx.interval * 2).min(T2);
                        tx.next_retransmit = now + tx.interval;
                        out.retransmissions += 1;
                        conn.send(&tx.bytes).await?;
                    }
                }
                for id in lapsed {
                    open.remove(&id);
                    out.unanswered += 1;
                    shared.in_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    out.unanswered += open.len() as u64;
    Ok(())
}

// ----- the partner's user agent server (direction out) ---------------------------------------

/// What the partner's socket saw.
struct PartnerOutcome {
    latency: Histogram<u64>,
    arrived: u64,
    repeats: u64,
    stale: u64,
    other_requests: u64,
    last_arrival_us: Option<u64>,
}

async fn partner(
    socket: UdpSocket,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> PartnerOutcome {
    let mut out = PartnerOutcome {
        latency: report::latency_histogram(),
        arrived: 0,
        repeats: 0,
        stale: 0,
        other_requests: 0,
        last_arrival_us: None,
    };
    let parser = SipxParser::default();
    let mut last_seq: HashMap<usize, u64> = HashMap::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() == Phase::Finished {
                    break;
                }
            }
            got = socket.recv_from(&mut buf) => {
                // An error here is an ICMP report of an earlier send: keep serving.
                let Ok((n, from)) = got else { continue };
                let Ok(req) = parser.parse_datagram(buf.get(..n).unwrap_or(&[])) else {
                    continue;
                };
                if !req.is_request() {
                    continue;
                }
                if let Some(ok) = ok_response(&req) {
                    let _ = socket.send_to(&ok, from).await;
                }
                let is_message = req.method().is_some_and(|m| m.as_str() == "MESSAGE");
                if !is_message {
                    out.other_requests += 1;
                    continue;
                }
                on_arrival(&req, &shared, &mut last_seq, &mut out);
            }
        }
    }
    out
}

/// Counts one MESSAGE that reached the partner.
fn on_arrival(
    req: &SipMessage,
    shared: &Shared,
    last_seq: &mut HashMap<usize, u64>,
    out: &mut PartnerOutcome,
) {
    let stamp = std::str::from_utf8(req.body())
        .ok()
        .and_then(decode_body)
        .filter(|s| s.run == shared.run);
    let session = req
        .header("From")
        .and_then(uri_user)
        .and_then(|u| session_of(u, &shared.user_prefix));
    let (Some(stamp), Some(session)) = (stamp, session) else {
        out.stale += 1;
        return;
    };
    if last_seq
        .get(&session)
        .is_some_and(|&last| stamp.seq <= last)
    {
        // A retransmission (our 200 was late or lost).
        out.repeats += 1;
        return;
    }
    last_seq.insert(session, stamp.seq);
    let now = shared.now_us();
    report::record_latency(&mut out.latency, now.saturating_sub(stamp.sent_us));
    out.arrived += 1;
    out.last_arrival_us = Some(now);
    shared.out_arrived.fetch_add(1, Ordering::Relaxed);
    if let (Some(count), Some(wake)) = (shared.arrived_from.get(session), shared.wake.get(session))
    {
        count.fetch_add(1, Ordering::Relaxed);
        wake.notify_one();
    }
}

// ----- hub sessions (receive in, send out) ---------------------------------------------------

struct OutPlan {
    index: usize,
    window: u64,
    max_messages: u64,
    body_size: usize,
    /// SIP users at the partner the session writes to, round robin.
    recipients: u64,
}

struct SessionOutcome {
    latency: Histogram<u64>,
    delivered: u64,
    stale: u64,
    last_delivery_us: Option<u64>,
    sent: u64,
    errors: BTreeMap<String, u64>,
    disconnect: Option<String>,
}

async fn hub_session(
    mut ws: crate::ws::HubSocket,
    plan: OutPlan,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> SessionOutcome {
    let mut out = SessionOutcome {
        latency: report::latency_histogram(),
        delivered: 0,
        stale: 0,
        last_delivery_us: None,
        sent: 0,
        errors: BTreeMap::new(),
        disconnect: None,
    };
    let mut done = false;
    let wake = &shared.wake[plan.index];
    loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase == Phase::Finished {
            break;
        }
        let arrived = shared.arrived_from[plan.index].load(Ordering::Relaxed);
        let sending = now_phase == Phase::Out && out.sent < plan.max_messages;
        if now_phase == Phase::Out && !sending && !done {
            done = true;
            shared.sessions_done.fetch_add(1, Ordering::Relaxed);
        }
        let can_send = sending && out.sent.saturating_sub(arrived) < plan.window;
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => on_frame(text.as_str(), &shared, &mut out),
                Some(Ok(WsMessage::Close(_))) | None => {
                    out.disconnect = Some("closed by the server".to_string());
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.disconnect = Some(format!("socket error: {e}"));
                    break;
                }
            },
            _ = wake.notified(), if sending && !can_send => {}
            _ = std::future::ready(()), if can_send => {
                let seq = out.sent;
                let to = format!("r{}@{}", (plan.index as u64 + seq) % plan.recipients.max(1), shared.partner);
                let body = encode_body(shared.run, seq, shared.now_us(), plan.body_size);
                let frame = serde_json::json!({"type": "message", "id": format!("o{seq}"), "to": to, "body": body});
                out.sent += 1;
                shared.out_sent.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = ws.send(WsMessage::text(frame.to_string())).await {
                    out.disconnect = Some(format!("socket error: {e}"));
                    break;
                }
            }
        }
    }
    if !done {
        shared.sessions_done.fetch_add(1, Ordering::Relaxed);
    }
    if out.disconnect.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    out
}

fn on_frame(text: &str, shared: &Shared, out: &mut SessionOutcome) {
    if let Some((from, body)) = crate::ws::hub_message(text) {
        let from_partner = from
            .split_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&shared.partner));
        match decode_body(&body).filter(|s| s.run == shared.run && from_partner) {
            Some(stamp) => {
                let now = shared.now_us();
                report::record_latency(&mut out.latency, now.saturating_sub(stamp.sent_us));
                out.delivered += 1;
                out.last_delivery_us = Some(now);
                shared.in_delivered.fetch_add(1, Ordering::Relaxed);
            }
            None => out.stale += 1,
        }
        return;
    }
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        code: Option<String>,
    }
    if let Ok(f) = serde_json::from_str::<Frame>(text) {
        if f.kind == "error" {
            *out.errors
                .entry(f.code.unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
        }
    }
}

// ----- the report ----------------------------------------------------------------------------

/// Direction in: the tool's user agents → hub sessions.
#[derive(Debug, Clone, Serialize)]
pub struct InReport {
    pub transport: SipTransport,
    pub senders: usize,
    pub sending_s: f64,
    pub sent: u64,
    pub answered_200: u64,
    /// Other final statuses, by code.
    pub refused: BTreeMap<u16, u64>,
    pub unanswered: u64,
    pub retransmissions: u64,
    pub delivered: u64,
    pub stale: u64,
    pub sender_failures: usize,
    pub first_sender_error: Option<String>,
    /// Final answers per second, from the start of sending to the last answer.
    pub transactions_per_s: f64,
    pub delivered_per_s: f64,
    /// Send → final response.
    pub transaction_latency: Option<LatencySummary>,
    /// Send → the hub session's `message` frame.
    pub delivery_latency: Option<LatencySummary>,
    pub server_cpu_cores: Option<f64>,
}

/// Direction out: hub sessions → the partner.
#[derive(Debug, Clone, Serialize)]
pub struct OutReport {
    pub sending_s: f64,
    pub sent: u64,
    pub arrived: u64,
    pub undelivered: u64,
    pub repeats: u64,
    pub stale: u64,
    pub other_requests: u64,
    /// Error frames the hub sessions received, by code.
    pub errors: BTreeMap<String, u64>,
    pub arrived_per_s: f64,
    /// Hub send → MESSAGE at the partner.
    pub latency: Option<LatencySummary>,
    pub server_cpu_cores: Option<f64>,
}

/// Everything one SIP run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SipReport {
    pub mode: &'static str,
    pub server_url: String,
    pub sip_addr: String,
    pub partner_domain: String,
    pub tool_partner_addr: String,
    pub server_pid: Option<u32>,
    pub server_env: Vec<String>,
    pub sessions: usize,
    pub window: u32,
    pub messages_per_sender: Option<u64>,
    pub duration_limit_s: f64,
    pub body_bytes: usize,
    pub users_created: usize,
    pub users_existing: usize,
    pub register_s: f64,
    pub sign_in_s: f64,
    pub inbound: Option<InReport>,
    pub outbound: Option<OutReport>,
    pub memory: Option<MemoryReport>,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_cores: Option<f64>,
    pub server_exit: Option<String>,
}

fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {}", Thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SipReport {
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.section("entente-bench sip")
            .row(
                "server",
                format!("{} (sip {})", self.server_url, self.sip_addr),
            )
            .row(
                "partner played",
                format!(
                    "{} (pinned at {}, UDP)",
                    self.partner_domain, self.tool_partner_addr
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
            .row("hub sessions (WebSocket)", self.sessions)
            .row("window per sender", self.window)
            .row(
                "limit per direction",
                match self.messages_per_sender {
                    Some(m) => format!(
                        "{} messages per sender or {}s",
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
            .row("hub sessions signed in", format!("{:.1}s", self.sign_in_s));
        if let Some(i) = &self.inbound {
            t.section(format!(
                "in: {} SIP user agents over {:?} → hub sessions",
                i.senders, i.transport
            ))
            .row("sending time", format!("{:.2}s", i.sending_s))
            .row("MESSAGE sent", Thousands(i.sent))
            .row("answered 200", Thousands(i.answered_200))
            .row("answered otherwise", counts(&i.refused))
            .row(
                "unanswered (timer F or end of run)",
                Thousands(i.unanswered),
            )
            .row("retransmissions (UDP)", Thousands(i.retransmissions))
            .row("delivered to hub sessions", Thousands(i.delivered))
            .row("stale (earlier runs)", Thousands(i.stale))
            .row("user agents that failed", i.sender_failures)
            .row(
                "transactions/s (final answers)",
                PerSecond(i.transactions_per_s),
            )
            .row("delivered/s", PerSecond(i.delivered_per_s));
            if let Some(e) = &i.first_sender_error {
                t.row("first user agent failure", e);
            }
            match &i.transaction_latency {
                Some(s) => t.row("send → 200 p50/p99/p99.9/max", s.percentiles_line()),
                None => t.row("send → 200", "no answer"),
            };
            match &i.delivery_latency {
                Some(s) => t.row("send → delivery p50/p99/p99.9/max", s.percentiles_line()),
                None => t.row("send → delivery", "no message delivered"),
            };
            if let Some(c) = i.server_cpu_cores {
                t.row("server CPU", format!("{c:.2} cores"));
            }
        }
        if let Some(o) = &self.outbound {
            t.section("out: hub sessions → the partner (UDP)")
                .row("sending time", format!("{:.2}s", o.sending_s))
                .row("sent by hub sessions", Thousands(o.sent))
                .row("MESSAGE arrived at the partner", Thousands(o.arrived))
                .row("not arrived by the end", Thousands(o.undelivered))
                .row("retransmitted to the partner", Thousands(o.repeats))
                .row("other requests (answered 200)", Thousands(o.other_requests))
                .row("stale", Thousands(o.stale))
                .row("errors at hub sessions", counts(&o.errors))
                .row("arrived/s", PerSecond(o.arrived_per_s));
            match &o.latency {
                Some(s) => t.row("send → partner p50/p99/p99.9/max", s.percentiles_line()),
                None => t.row("send → partner", "nothing arrived"),
            };
            if let Some(c) = o.server_cpu_cores {
                t.row("server CPU", format!("{c:.2} cores"));
            }
        }
        server_section(
            &mut t,
            &ServerLabels {
                before: "RSS, hub sessions in",
                connected: "RSS, SIP user agents connected, idle",
                per: "per SIP user agent",
                no_memory: "not measured",
                cpu: "CPU while sending (both directions)",
            },
            self,
        );
        t
    }
}

impl crate::report::ServerFigures for SipReport {
    fn memory(&self) -> Option<&MemoryReport> {
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

// ----- the run -------------------------------------------------------------------------------

/// Runs the SIP benchmark and prints its report.
pub async fn run(args: SipArgs) -> Result<()> {
    let report = execute(&args).await?;
    crate::ws::print_report(&report, &report.table(), args.json.as_deref())
}

/// Runs the SIP benchmark and returns its report (printing only progress on stderr).
pub async fn execute(args: &SipArgs) -> Result<SipReport> {
    args.validate()?;
    let partner_socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding the partner's UDP socket")?;
    let partner_addr = partner_socket.local_addr()?;
    let settings = SpawnSettings {
        env: args.server_env.clone(),
        sip: true,
        sip_partners: vec![XmppPartner {
            domain: args.partner_domain.clone(),
            address: partner_addr,
            auth: "none".to_string(),
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
    let result = measure(args, partner_socket, partner_addr, &mut spawned).await;
    let server_exit = crate::ws::stop_spawned(spawned, args.server_log.as_deref()).await;
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

/// Waits until `done` or `deadline`, failing if the server exits meanwhile.
async fn wait_for(
    deadline: Instant,
    spawned: &mut Option<SpawnedServer>,
    done: impl Fn() -> bool,
) -> Result<()> {
    let mut check = tokio::time::interval(Duration::from_millis(20));
    loop {
        check.tick().await;
        if done() || Instant::now() >= deadline {
            return Ok(());
        }
        if let Some(server) = spawned.as_mut() {
            if let Some(status) = server.exited() {
                bail!(
                    "the server exited during the run: {status}{}",
                    server.log_tail()
                );
            }
        }
    }
}

fn per_second(count: u64, start_us: u64, last_us: Option<u64>) -> f64 {
    match last_us {
        Some(last) if last > start_us && count > 0 => {
            count as f64 / ((last - start_us) as f64 / 1e6)
        }
        _ => 0.0,
    }
}

async fn measure(
    args: &SipArgs,
    partner_socket: UdpSocket,
    partner_addr: SocketAddr,
    spawned: &mut Option<SpawnedServer>,
) -> Result<SipReport> {
    let server = spawned
        .as_ref()
        .ok_or_else(|| anyhow!("no server was started"))?;
    let target = server.http;
    let pid = Some(server.pid());
    let sip_addr = *server
        .listeners
        .get("sip")
        .ok_or_else(|| anyhow!("the server announced no sip listener"))?;
    let n = args.sessions;

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
    let mut hub = String::new();
    for result in signed {
        let (ws, address) = result.context("hub sign-in")?;
        if hub.is_empty() {
            hub = address
                .split_once('@')
                .map(|(_, d)| d.to_string())
                .ok_or_else(|| anyhow!("`{address}` has no domain"))?;
        }
        sockets.push(ws);
    }
    let sign_in_s = sign_in_started.elapsed().as_secs_f64();

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run: run_id,
        partner: args.partner_domain.clone(),
        hub,
        user_prefix: args.user_prefix.clone(),
        in_sent: AtomicU64::new(0),
        in_answered: AtomicU64::new(0),
        in_ok: AtomicU64::new(0),
        in_delivered: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        out_sent: AtomicU64::new(0),
        out_arrived: AtomicU64::new(0),
        arrived_from: (0..n).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..n).map(|_| Notify::new()).collect(),
        sessions_done: AtomicUsize::new(0),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let max_messages = args.messages.unwrap_or(u64::MAX);
    let session_tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, ws)| {
            let plan = OutPlan {
                index,
                window: u64::from(args.window),
                max_messages,
                body_size: args.body_size,
                recipients: 16,
            };
            tokio::spawn(hub_session(ws, plan, shared.clone(), phase_rx.clone()))
        })
        .collect();
    let partner_task = tokio::spawn(partner(partner_socket, shared.clone(), phase_rx.clone()));

    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let before = crate::ws::read_memory(pid)?;

    let k = if args.inbound() { args.senders } else { 0 };
    let users = Arc::new(users);
    let mut sender_tasks = Vec::with_capacity(k);
    for index in 0..k {
        let conn = Conn::open(args.transport, IpAddr::V4(sender_ip(index)), sip_addr).await?;
        let plan = InPlan {
            index,
            transport: args.transport,
            users: users.clone(),
            window: args.window as usize,
            max_messages,
            body_size: args.body_size,
        };
        sender_tasks.push(tokio::spawn(sip_sender(
            plan,
            conn,
            shared.clone(),
            phase_rx.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let connected = crate::ws::read_memory(pid)?;

    let cpu_before = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
    let bench_cpu_before = process::read_cpu_seconds(None).ok();
    let mut measured_s = 0.0;
    let cores = |before: Option<f64>, after: Option<f64>, secs: f64| match (before, after) {
        (Some(b), Some(a)) if secs > 0.0 => Some((a - b) / secs),
        _ => None,
    };

    // Direction in.
    let mut in_window = None;
    if args.inbound() {
        eprintln!(
            "{k} SIP user agents over {:?} sending MESSAGE to {n} hub sessions…",
            args.transport
        );
        let cpu0 = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
        let start_us = shared.now_us();
        let start = Instant::now();
        let _ = phase_tx.send(Phase::In);
        let sh = shared.clone();
        wait_for(
            start + Duration::from_secs_f64(args.duration),
            spawned,
            || sh.senders_done.load(Ordering::Relaxed) >= k,
        )
        .await
        .inspect_err(|_| {
            let _ = phase_tx.send(Phase::Finished);
        })?;
        let sending_s = start.elapsed().as_secs_f64();
        let _ = phase_tx.send(Phase::InDrain);
        let sh = shared.clone();
        wait_for(
            Instant::now() + Duration::from_secs_f64(args.drain),
            spawned,
            || {
                let sent = sh.in_sent.load(Ordering::Relaxed);
                sh.in_answered.load(Ordering::Relaxed) >= sent
                    && sh.in_delivered.load(Ordering::Relaxed) >= sh.in_ok.load(Ordering::Relaxed)
            },
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        measured_s += secs;
        let cpu1 = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
        in_window = Some((start_us, sending_s, cores(cpu0, cpu1, secs)));
    }
    // Every user agent stops sending now (those still waiting give their open transactions
    // up); they are collected at the end.
    let _ = phase_tx.send(Phase::OutDrain);
    let mut senders = Vec::with_capacity(k);
    for task in futures::future::join_all(sender_tasks).await {
        senders.push(task.context("a SIP user agent task failed")?);
    }

    // Direction out.
    let mut out_window = None;
    if args.outbound() {
        eprintln!("{n} hub sessions sending to {}…", args.partner_domain);
        let cpu0 = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
        let start_us = shared.now_us();
        let start = Instant::now();
        let _ = phase_tx.send(Phase::Out);
        let sh = shared.clone();
        wait_for(
            start + Duration::from_secs_f64(args.duration),
            spawned,
            || sh.sessions_done.load(Ordering::Relaxed) >= n,
        )
        .await
        .inspect_err(|_| {
            let _ = phase_tx.send(Phase::Finished);
        })?;
        let sending_s = start.elapsed().as_secs_f64();
        let _ = phase_tx.send(Phase::OutDrain);
        let sh = shared.clone();
        wait_for(
            Instant::now() + Duration::from_secs_f64(args.drain),
            spawned,
            || sh.out_arrived.load(Ordering::Relaxed) >= sh.out_sent.load(Ordering::Relaxed),
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        measured_s += secs;
        let cpu1 = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
        out_window = Some((start_us, sending_s, cores(cpu0, cpu1, secs)));
    }
    let cpu_after = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
    let bench_cpu_after = process::read_cpu_seconds(None).ok();
    let end_memory = crate::ws::read_memory(pid)?;
    let _ = phase_tx.send(Phase::Finished);

    let sessions = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join_all(session_tasks),
    )
    .await
    .map_err(|_| anyhow!("hub sessions did not close within 30s"))?;
    let partner = tokio::time::timeout(Duration::from_secs(30), partner_task)
        .await
        .map_err(|_| anyhow!("the partner socket did not stop within 30s"))?
        .context("the partner task failed")?;

    let mut delivery = report::latency_histogram();
    let (mut delivered, mut stale, mut last_delivery) = (0, 0, None);
    let mut out_sent = 0;
    let mut errors = BTreeMap::new();
    for s in sessions {
        let s = s.context("a hub session task failed")?;
        delivery.add(&s.latency).ok();
        delivered += s.delivered;
        stale += s.stale;
        last_delivery = last_delivery.max(s.last_delivery_us);
        out_sent += s.sent;
        for (code, count) in s.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let inbound = in_window.map(|(start_us, sending_s, cpu)| {
        let mut transaction = report::latency_histogram();
        let mut refused = BTreeMap::new();
        let (mut sent, mut ok, mut unanswered, mut retransmissions) = (0, 0, 0, 0);
        let mut last_answer = None;
        let mut failures = 0;
        let mut first_error = None;
        for s in &senders {
            transaction.add(&s.latency).ok();
            sent += s.sent;
            ok += s.ok;
            unanswered += s.unanswered;
            retransmissions += s.retransmissions;
            last_answer = last_answer.max(s.last_answer_us);
            for (code, count) in &s.refused {
                *refused.entry(*code).or_default() += count;
            }
            if let Some(e) = &s.error {
                failures += 1;
                first_error.get_or_insert(e.clone());
            }
        }
        let answered = ok + refused.values().sum::<u64>();
        InReport {
            transport: args.transport,
            senders: k,
            sending_s,
            sent,
            answered_200: ok,
            refused,
            unanswered,
            retransmissions,
            delivered,
            stale,
            sender_failures: failures,
            first_sender_error: first_error,
            transactions_per_s: per_second(answered, start_us, last_answer),
            delivered_per_s: per_second(delivered, start_us, last_delivery),
            transaction_latency: LatencySummary::from_histogram(&transaction),
            delivery_latency: LatencySummary::from_histogram(&delivery),
            server_cpu_cores: cpu,
        }
    });
    let outbound = out_window.map(|(start_us, sending_s, cpu)| OutReport {
        sending_s,
        sent: out_sent,
        arrived: partner.arrived,
        undelivered: out_sent.saturating_sub(partner.arrived),
        repeats: partner.repeats,
        stale: partner.stale,
        other_requests: partner.other_requests,
        errors,
        arrived_per_s: per_second(partner.arrived, start_us, partner.last_arrival_us),
        latency: LatencySummary::from_histogram(&partner.latency),
        server_cpu_cores: cpu,
    });
    Ok(SipReport {
        mode: "sip",
        server_url: format!("http://{}", target.addr),
        sip_addr: sip_addr.to_string(),
        partner_domain: args.partner_domain.clone(),
        tool_partner_addr: partner_addr.to_string(),
        server_pid: pid,
        server_env: args
            .server_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        sessions: n,
        window: args.window,
        messages_per_sender: args.messages,
        duration_limit_s: args.duration,
        body_bytes: args.body_size.max(encode_body(run_id, 0, 0, 0).len()),
        users_created: registered.created,
        users_existing: registered.existing,
        register_s: registered.seconds,
        sign_in_s,
        inbound,
        outbound,
        memory: match (before, connected, end_memory) {
            (Some(b), Some(c), Some(e)) => Some(MemoryReport::new(b, c, e, k.max(1))),
            _ => None,
        },
        server_cpu_cores: cores(cpu_before, cpu_after, measured_s),
        bench_cpu_cores: cores(bench_cpu_before, bench_cpu_after, measured_s),
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
        sip: SipArgs,
    }

    fn args(extra: &[&str]) -> Result<SipArgs, clap::Error> {
        let mut argv = vec!["entente-bench", "--spawn", "x"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.sip)
    }

    #[test]
    fn arguments_are_bounded() {
        let a = args(&[]).unwrap();
        assert!(a.validate().is_ok());
        assert_eq!(a.direction, Direction::Both);
        assert_eq!(a.transport, SipTransport::Udp);
        assert!(args(&[
            "--direction",
            "in",
            "--transport",
            "tcp",
            "--senders",
            "250"
        ])
        .unwrap()
        .validate()
        .is_ok());
        for bad in [
            &["--senders", "0"][..],
            &["--senders", "251"],
            &["--sessions", "0"],
            &["--duration", "0"],
            &["--messages", "0"],
            &["--window", "0"],
            &["--body-size", "1001"],
            &["--partner-domain", "Bench.Test"],
            &["--partner-domain", "nodot"],
            &["--partner-domain", "a@b.test"],
            &["--user-prefix", "B"],
        ] {
            assert!(args(bad).unwrap().validate().is_err(), "{bad:?} accepted");
        }
        assert!(args(&["--direction", "sideways"]).is_err());
        assert!(Cli::try_parse_from(["entente-bench"]).is_err());
    }

    #[test]
    fn senders_have_their_own_loopback_addresses() {
        assert_eq!(sender_ip(0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(sender_ip(249), Ipv4Addr::new(127, 0, 1, 250));
        assert!((0..MAX_SENDERS).all(|k| sender_ip(k).is_loopback()));
    }

    #[test]
    fn requests_parse_and_are_answered_200_with_their_dialog_fields() {
        let body = encode_body(5, 2, 100, 64);
        let bytes = message_request(
            SipTransport::Udp,
            "127.0.1.1:4000".parse().unwrap(),
            "s1",
            "bench-sip.test",
            "bench0",
            "localhost",
            "5-1-2",
            3,
            &body,
        );
        let parser = SipxParser::default();
        let req = parser.parse_datagram(&bytes).expect("a valid request");
        assert_eq!(req.method().map(|m| m.as_str()), Some("MESSAGE"));
        assert_eq!(req.body().as_ref(), body.as_bytes());
        assert_eq!(req.header("Call-ID"), Some("5-1-2"));
        assert_eq!(uri_user(req.header("From").unwrap()), Some("s1"));
        let ok = parser
            .parse_datagram(&ok_response(&req).unwrap())
            .expect("a valid response");
        assert_eq!(ok.status(), Some(200));
        for h in ["Via", "From", "Call-ID", "CSeq"] {
            assert_eq!(ok.header(h), req.header(h), "{h}");
        }
        assert!(ok.header("To").unwrap().ends_with(";tag=bench"));
        let tcp = message_request(
            SipTransport::Tcp,
            "127.0.1.1:4000".parse().unwrap(),
            "s1",
            "p.test",
            "u",
            "h.test",
            "c",
            1,
            "x",
        );
        let mut framer = StreamFramer::new(Default::default());
        let framed = framer.push(&tcp).expect("frames");
        assert_eq!(framed.len(), 1);
        assert!(framed[0].header("Via").unwrap().starts_with("SIP/2.0/TCP"));
    }

    #[test]
    fn hub_senders_are_recognised() {
        assert_eq!(session_of("bench12", "bench"), Some(12));
        for user in ["bench", "benchx", "other1", "bench-1", "bench99999999"] {
            assert_eq!(session_of(user, "bench"), None, "{user}");
        }
        assert_eq!(
            uri_user("\"A\" <sip:bench3@localhost>;tag=x"),
            Some("bench3")
        );
        assert_eq!(uri_user("<tel:123>"), None);
    }

    fn shared(run: u64, sessions: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            run,
            partner: "bench-sip.test".into(),
            hub: "localhost".into(),
            user_prefix: "bench".into(),
            in_sent: AtomicU64::new(0),
            in_answered: AtomicU64::new(0),
            in_ok: AtomicU64::new(0),
            in_delivered: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            out_sent: AtomicU64::new(0),
            out_arrived: AtomicU64::new(0),
            arrived_from: (0..sessions).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..sessions).map(|_| Notify::new()).collect(),
            sessions_done: AtomicUsize::new(0),
        }
    }

    #[test]
    fn arrivals_are_counted_once_per_sender_sequence() {
        let shared = shared(9, 2);
        let mut out = PartnerOutcome {
            latency: report::latency_histogram(),
            arrived: 0,
            repeats: 0,
            stale: 0,
            other_requests: 0,
            last_arrival_us: None,
        };
        let mut last = HashMap::new();
        let parser = SipxParser::default();
        let req = |from: &str, run: u64, seq: u64| {
            let text = format!(
                "MESSAGE sip:r0@bench-sip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{seq}\r\nFrom: <sip:{from}@localhost>;tag=a\r\nTo: <sip:r0@bench-sip.test>\r\nCall-ID: c{seq}\r\nCSeq: 1 MESSAGE\r\nContent-Length: {}\r\n\r\n{}",
                encode_body(run, seq, 0, 0).len(),
                encode_body(run, seq, 0, 0)
            );
            parser.parse_datagram(text.as_bytes()).unwrap()
        };
        on_arrival(&req("bench1", 9, 0), &shared, &mut last, &mut out);
        on_arrival(&req("bench1", 9, 1), &shared, &mut last, &mut out);
        on_arrival(&req("bench1", 9, 1), &shared, &mut last, &mut out); // retransmitted
        on_arrival(&req("bench0", 9, 0), &shared, &mut last, &mut out);
        on_arrival(&req("bench0", 8, 5), &shared, &mut last, &mut out); // another run
        on_arrival(&req("carol", 9, 7), &shared, &mut last, &mut out); // not a hub session
        assert_eq!(out.arrived, 3);
        assert_eq!(out.repeats, 1);
        assert_eq!(out.stale, 2);
        assert_eq!(shared.arrived_from[1].load(Ordering::Relaxed), 2);
        assert_eq!(shared.arrived_from[0].load(Ordering::Relaxed), 1);
    }
}
