//! WebSocket mode: N hub client sessions sign in over `/api/v1/ws` and send each other messages
//! in pairs or a ring, for a duration or a message count. Measures delivered messages and acks
//! per second, end-to-end latency (the send time travels in the message body), and the server's
//! resident memory per connected session.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::{self, Registration};
use crate::process::{self, MemoryStatus};
use crate::report::{
    self, server_section, LatencySummary, PerSecond, ServerLabels, Table, Thousands,
};
use crate::target::{HttpTarget, SpawnSettings, SpawnedServer};

/// Most sessions one run may open.
pub const MAX_SESSIONS: usize = 20_000;
/// Longest run, in seconds.
pub const MAX_DURATION_S: f64 = 3_600.0;
/// Most messages one session may send in a run.
pub const MAX_MESSAGES: u64 = 100_000_000;
/// Most unacknowledged messages per session.
pub const MAX_WINDOW: u32 = 1_024;
/// Largest message body.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest WebSocket message or frame accepted from the server.
const MAX_INCOMING: usize = 1024 * 1024;
/// Time allowed for one HTTP request or one sign-in.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for closing all sessions at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session waits before sending again after a `rate_limited` answer.
const RATE_LIMIT_PAUSE: Duration = Duration::from_millis(200);
/// Marks a benchmark body: `eb RUN SEQ SENT_US padding`.
const BODY_TAG: &str = "eb";

/// Who sends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Sessions 0↔1, 2↔3, …: each sends to its partner (needs an even count).
    Pairs,
    /// Session i sends to session i+1, the last to the first.
    Ring,
}

/// The session that session `index` of `count` sends to.
pub fn peer_of(pattern: Pattern, index: usize, count: usize) -> usize {
    match pattern {
        Pattern::Pairs => index ^ 1,
        Pattern::Ring => (index + 1) % count,
    }
}

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("server").required(true).args(["url", "spawn"])))]
pub struct WsArgs {
    /// A running server's HTTP listener, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: Option<String>,
    /// Start this `entente` binary with a temporary configuration and data directory, and
    /// stop it with SIGTERM at the end.
    #[arg(long, value_name = "PATH")]
    pub spawn: Option<PathBuf>,
    /// Process id of the running server given with --url, to read its memory and CPU time.
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub server_pid: Option<u32>,
    /// Number of WebSocket sessions (and users).
    #[arg(long, default_value_t = 2)]
    pub sessions: usize,
    /// Who sends to whom.
    #[arg(long, value_enum, default_value_t = Pattern::Pairs)]
    pub pattern: Pattern,
    /// Seconds of sending; the run also ends when every session has sent --messages.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages each session sends (default: as many as fit in --duration).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Unacknowledged messages each session may have in flight.
    #[arg(long, default_value_t = 1)]
    pub window: u32,
    /// Messages per second each session sends (default: send as soon as the window allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Size of each message body in bytes (at least the timestamp header).
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Users are named PREFIX0, PREFIX1, …
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    /// Password of every benchmark user.
    #[arg(long, default_value = "bench-password-1")]
    pub password: String,
    /// Registrations in flight at once (password hashing is expensive on the server).
    #[arg(long, default_value_t = 4)]
    pub register_concurrency: usize,
    /// Sign-ins in flight at once.
    #[arg(long, default_value_t = 8)]
    pub connect_concurrency: usize,
    /// Sign-ins done and closed again before the baseline memory reading, so that memory the
    /// server's allocator keeps after password checks is not counted per session (default:
    /// every user signs in once; 0 to skip).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Seconds to wait, once every session is signed in, before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds to wait after sending stops for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Frames per second per connection written into a spawned server's configuration.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub spawn_connection_rate: f64,
    /// Token bucket size written into a spawned server's configuration.
    #[arg(long, default_value_t = 1_000_000)]
    pub spawn_connection_burst: u32,
    /// Environment variable for a spawned server, as KEY=VALUE; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub server_env: Vec<(String, String)>,
    /// Copy a spawned server's log (its stderr) to this file at the end.
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Also write the report as JSON to this file (`-` for stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl WsArgs {
    /// Checks every bound before anything is started.
    pub fn validate(&self) -> Result<()> {
        if self.sessions < 2 || self.sessions > MAX_SESSIONS {
            bail!("--sessions must be between 2 and {MAX_SESSIONS}");
        }
        if self.pattern == Pattern::Pairs && self.sessions % 2 != 0 {
            bail!("--pattern pairs needs an even number of sessions");
        }
        if !(self.duration > 0.0 && self.duration <= MAX_DURATION_S) {
            bail!("--duration must be more than 0 and at most {MAX_DURATION_S} seconds");
        }
        if let Some(m) = self.messages {
            if m == 0 || m > MAX_MESSAGES {
                bail!("--messages must be between 1 and {MAX_MESSAGES}");
            }
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            bail!("--window must be between 1 and {MAX_WINDOW}");
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                bail!("--rate must be more than 0 and at most 1000000 per second");
            }
        }
        if self.body_size > MAX_BODY {
            bail!("--body-size must be at most {MAX_BODY}");
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
        if !(0.0..=600.0).contains(&self.settle) {
            bail!("--settle must be between 0 and 600 seconds");
        }
        if !(0.0..=600.0).contains(&self.drain) {
            bail!("--drain must be between 0 and 600 seconds");
        }
        if !self.server_env.is_empty() && self.spawn.is_none() {
            bail!("--server-env goes with --spawn");
        }
        if self.server_log.is_some() && self.spawn.is_none() {
            bail!("--server-log goes with --spawn");
        }
        if self.server_pid.is_some() && self.url.is_none() {
            bail!("--server-pid goes with --url");
        }
        Ok(())
    }

    fn user(&self, index: usize) -> String {
        format!("{}{index}", self.user_prefix)
    }
}

/// A pacing ticker for sender `index` of `count`, created when sending starts: the first ticks
/// are spread over one period, so that paced senders do not all fire at the same instant.
pub(crate) fn staggered_ticker(
    period: Duration,
    index: usize,
    count: usize,
) -> tokio::time::Interval {
    let offset = period.mul_f64(index as f64 / count.max(1) as f64);
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Reads `KEY=VALUE` for --server-env.
pub(crate) fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))?;
    let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Err(format!("`{key}`: not an environment variable name"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A message body carrying the run, the sender's sequence number and the send time, padded
/// with `x` to `size` bytes.
pub fn encode_body(run: u64, seq: u64, sent_us: u64, size: usize) -> String {
    let mut body = format!("{BODY_TAG} {run:x} {seq} {sent_us} ");
    while body.len() < size {
        body.push('x');
    }
    body
}

/// What a received body says, if it comes from a benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStamp {
    pub run: u64,
    pub seq: u64,
    pub sent_us: u64,
}

/// Reads the stamp written by [`encode_body`]; `None` for any other text.
pub fn decode_body(body: &str) -> Option<BodyStamp> {
    let mut parts = body.splitn(5, ' ');
    if parts.next()? != BODY_TAG {
        return None;
    }
    let run = u64::from_str_radix(parts.next()?, 16).ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    Some(BodyStamp { run, seq, sent_us })
}

/// The fields of a server frame this tool looks at; the rest is ignored.
#[derive(Debug, Deserialize)]
struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Serialize)]
struct LoginFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    to: &'a str,
    body: &'a str,
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Where the whole run is; every session follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SigningIn,
    Sending,
    Draining,
    Finished,
    Aborted,
}

/// Counters every session updates, read by the coordinator to know when the run is over.
struct Shared {
    epoch: Instant,
    run: u64,
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    delivered: AtomicU64,
    senders_done: AtomicUsize,
    disconnected: AtomicUsize,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// What one session was told to do.
struct SessionPlan {
    /// This session's number and the number of sessions (to spread paced sends).
    index: usize,
    count: usize,
    user: String,
    password: String,
    peer_user: String,
    ws_url: String,
    window: u32,
    interval: Option<Duration>,
    max_messages: u64,
    body_size: usize,
}

struct SignedIn {
    address: String,
    login_us: u64,
}

/// What one session saw.
struct SessionOutcome {
    latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    sent: u64,
    acked: u64,
    failed: u64,
    delivered: u64,
    stale: u64,
    out_of_order: u64,
    last_seq: Option<u64>,
    errors: BTreeMap<String, u64>,
    last_delivery_us: Option<u64>,
    last_ack_us: Option<u64>,
    disconnect: Option<String>,
}

impl SessionOutcome {
    fn new() -> Self {
        Self {
            latency: report::latency_histogram(),
            ack_latency: report::latency_histogram(),
            sent: 0,
            acked: 0,
            failed: 0,
            delivered: 0,
            stale: 0,
            out_of_order: 0,
            last_seq: None,
            errors: BTreeMap::new(),
            last_delivery_us: None,
            last_ack_us: None,
            disconnect: None,
        }
    }
}

async fn sign_in(plan: &SessionPlan) -> Result<(Socket, String)> {
    // A small read buffer: tungstenite zero-fills the whole buffer before each read, and many
    // sessions share this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(plan.ws_url.as_str(), Some(config), true)
            .await
            .with_context(|| format!("opening {}", plan.ws_url))?;
    let login = serde_json::to_string(&LoginFrame {
        kind: "login",
        user: &plan.user,
        password: &plan.password,
    })?;
    ws.send(Message::text(login)).await?;
    loop {
        let frame = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => bail!(
                "the server closed the socket before `welcome`{}",
                close.map_or(String::new(), |c| format!(": {}", c.reason))
            ),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the server closed the socket before `welcome`"),
        };
        let frame: ServerFrame = serde_json::from_str(frame.as_str())
            .with_context(|| format!("unreadable frame before `welcome`: {}", frame.as_str()))?;
        match frame.kind.as_ref() {
            "welcome" => {
                let address = frame
                    .address
                    .ok_or_else(|| anyhow!("`welcome` without an address"))?;
                return Ok((ws, address));
            }
            "error" => {
                let code = frame.code.as_deref().unwrap_or("(no code)");
                let hint = if code == "not_authorized" {
                    " (does the account exist with this --password?)"
                } else {
                    ""
                };
                bail!(
                    "sign-in refused: {code} {}{hint}",
                    frame.text.as_deref().unwrap_or("")
                )
            }
            other => bail!("expected `welcome`, got `{other}`"),
        }
    }
}

/// A hub session over WebSocket for the other modes, which use hub users as receivers.
pub(crate) type HubSocket = Socket;

/// Opens a WebSocket to `ws_url` and signs in; returns the socket and the session's address.
pub(crate) async fn hub_sign_in(
    ws_url: &str,
    user: &str,
    password: &str,
) -> Result<(HubSocket, String)> {
    let plan = SessionPlan {
        index: 0,
        count: 1,
        user: user.to_string(),
        password: password.to_string(),
        peer_user: String::new(),
        ws_url: ws_url.to_string(),
        window: 1,
        interval: None,
        max_messages: 0,
        body_size: 0,
    };
    sign_in(&plan).await
}

/// A `message` frame from the hub: its sender and body. `None` for other frames.
pub(crate) fn hub_message(text: &str) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        body: Option<String>,
    }
    let frame: Frame = serde_json::from_str(text).ok()?;
    if frame.kind != "message" {
        return None;
    }
    Some((frame.from.unwrap_or_default(), frame.body?))
}

/// Handles one frame from the server while the session runs. Returns true when the server
/// answered `rate_limited`, so the session pauses before sending again.
fn on_frame(
    text: &str,
    shared: &Shared,
    in_flight: &mut HashMap<u64, u64>,
    out: &mut SessionOutcome,
) -> bool {
    let Ok(frame) = serde_json::from_str::<ServerFrame>(text) else {
        *out.errors
            .entry("unreadable_frame".to_string())
            .or_default() += 1;
        return false;
    };
    match frame.kind.as_ref() {
        "message" => {
            let stamp = frame.body.as_deref().and_then(decode_body);
            match stamp {
                Some(stamp) if stamp.run == shared.run => {
                    let now = shared.now_us();
                    report::record_latency(&mut out.latency, now.saturating_sub(stamp.sent_us));
                    out.delivered += 1;
                    out.last_delivery_us = Some(now);
                    // Each session hears from one sender, whose numbers only grow.
                    match out.last_seq {
                        Some(last) if stamp.seq <= last => out.out_of_order += 1,
                        _ => out.last_seq = Some(stamp.seq),
                    }
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
                _ => out.stale += 1,
            }
        }
        "ack" => {
            let sent = frame
                .id
                .as_deref()
                .and_then(|id| id.strip_prefix('m'))
                .and_then(|seq| seq.parse::<u64>().ok())
                .and_then(|seq| in_flight.remove(&seq));
            if let Some(sent_us) = sent {
                let now = shared.now_us();
                report::record_latency(&mut out.ack_latency, now.saturating_sub(sent_us));
                out.acked += 1;
                out.last_ack_us = Some(now);
                shared.acked.fetch_add(1, Ordering::Relaxed);
            } else {
                *out.errors.entry("unexpected_ack".to_string()).or_default() += 1;
            }
        }
        "error" => {
            let code = frame.code.as_deref().unwrap_or("(no code)").to_string();
            *out.errors.entry(code).or_default() += 1;
            let ours = frame
                .id
                .as_deref()
                .and_then(|id| id.strip_prefix('m'))
                .and_then(|seq| seq.parse::<u64>().ok())
                .and_then(|seq| in_flight.remove(&seq));
            if ours.is_some() {
                out.failed += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            return frame.code.as_deref() == Some("rate_limited");
        }
        _ => {}
    }
    false
}

/// One session: sign in, wait for the start, send and receive, drain, close.
async fn session(
    plan: SessionPlan,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    gate: Arc<Semaphore>,
    signed_in: mpsc::Sender<Result<SignedIn>>,
) -> SessionOutcome {
    let mut out = SessionOutcome::new();
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let attempt = tokio::time::timeout(REQUEST_TIMEOUT, sign_in(&plan)).await;
    drop(permit);
    let (mut ws, address) = match attempt {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            let _ = signed_in
                .send(Err(e.context(format!("session `{}`", plan.user))))
                .await;
            return out;
        }
        Err(_) => {
            let _ = signed_in
                .send(Err(anyhow!(
                    "session `{}`: no `welcome` within {}s",
                    plan.user,
                    REQUEST_TIMEOUT.as_secs()
                )))
                .await;
            return out;
        }
    };
    let login_us = started.elapsed().as_micros() as u64;
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let _ = signed_in.send(Ok(SignedIn { address, login_us })).await;
    let to = if domain.is_empty() {
        plan.peer_user.clone()
    } else {
        format!("{}@{domain}", plan.peer_user)
    };

    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut sending = false;
    let mut done_sending = false;
    let mut ticker: Option<tokio::time::Interval> = None;
    let window = plan.window as usize;
    let mut paused_until: Option<Instant> = None;

    'run: loop {
        if paused_until.is_some_and(|t| Instant::now() >= t) {
            paused_until = None;
        }
        // Send what the window allows when sending is not paced by a ticker.
        if sending && ticker.is_none() && paused_until.is_none() {
            while in_flight.len() < window && out.sent < plan.max_messages {
                if let Err(e) =
                    send_one(&mut ws, &plan, &to, &shared, &mut in_flight, &mut out).await
                {
                    out.disconnect = Some(format!("send failed: {e}"));
                    break 'run;
                }
            }
        }
        if sending && !done_sending && out.sent >= plan.max_messages {
            done_sending = true;
            shared.senders_done.fetch_add(1, Ordering::Relaxed);
        }
        let paced =
            sending && out.sent < plan.max_messages && ticker.is_some() && paused_until.is_none();
        let resume = paused_until.unwrap_or_else(Instant::now);
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break 'run;
                }
                let now = *phase.borrow_and_update();
                match now {
                    Phase::SigningIn => {}
                    Phase::Sending => {
                        sending = true;
                        ticker = plan
                            .interval
                            .map(|period| crate::ws::staggered_ticker(period, plan.index, plan.count));
                    }
                    Phase::Draining => sending = false,
                    Phase::Finished | Phase::Aborted => break 'run,
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if on_frame(text.as_str(), &shared, &mut in_flight, &mut out) {
                        paused_until = Some(Instant::now() + RATE_LIMIT_PAUSE);
                    }
                }
                Some(Ok(Message::Close(close))) => {
                    out.disconnect = Some(format!(
                        "closed by the server{}",
                        close.map_or(String::new(), |c| format!(": {} {}", c.code, c.reason))
                    ));
                    break 'run;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.disconnect = Some(format!("socket error: {e}"));
                    break 'run;
                }
                None => {
                    out.disconnect = Some("connection closed".to_string());
                    break 'run;
                }
            },
            _ = tokio::time::sleep_until(resume.into()), if paused_until.is_some() => {}
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            }, if paced => {
                if in_flight.len() < window {
                    if let Err(e) = send_one(&mut ws, &plan, &to, &shared, &mut in_flight, &mut out).await {
                        out.disconnect = Some(format!("send failed: {e}"));
                        break 'run;
                    }
                }
            }
        }
    }
    if out.disconnect.is_some() {
        shared.disconnected.fetch_add(1, Ordering::Relaxed);
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    out
}

async fn send_one(
    ws: &mut Socket,
    plan: &SessionPlan,
    to: &str,
    shared: &Shared,
    in_flight: &mut HashMap<u64, u64>,
    out: &mut SessionOutcome,
) -> Result<()> {
    let seq = out.sent;
    let now = shared.now_us();
    let body = encode_body(shared.run, seq, now, plan.body_size);
    let id = format!("m{seq}");
    let frame = serde_json::to_string(&MessageFrame {
        kind: "message",
        id: &id,
        to,
        body: &body,
    })?;
    in_flight.insert(seq, now);
    out.sent += 1;
    shared.sent.fetch_add(1, Ordering::Relaxed);
    ws.send(Message::text(frame)).await?;
    Ok(())
}

/// Memory of the server before and after the sessions connected, and at the end.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub before_kib: u64,
    pub connected_kib: u64,
    pub per_session_kib: f64,
    pub after_run_kib: u64,
    pub peak_kib: u64,
}

impl MemoryReport {
    pub fn new(
        before: MemoryStatus,
        connected: MemoryStatus,
        end: MemoryStatus,
        sessions: usize,
    ) -> Self {
        let delta = connected.rss_kib as f64 - before.rss_kib as f64;
        Self {
            before_kib: before.rss_kib,
            connected_kib: connected.rss_kib,
            per_session_kib: delta / sessions.max(1) as f64,
            after_run_kib: end.rss_kib,
            peak_kib: end.hwm_kib,
        }
    }
}

/// Everything one WebSocket run measured.
#[derive(Debug, Clone, Serialize)]
pub struct WsReport {
    pub mode: &'static str,
    pub server_url: String,
    pub server_pid: Option<u32>,
    pub spawned: bool,
    pub server_env: Vec<String>,
    pub sessions: usize,
    pub pattern: Pattern,
    pub window: u32,
    pub rate_per_session: Option<f64>,
    pub messages_per_session: Option<u64>,
    pub duration_limit_s: f64,
    pub body_bytes: usize,
    pub users_created: usize,
    pub users_existing: usize,
    pub registration_closed: bool,
    pub register_s: f64,
    pub warmup_sign_ins: usize,
    pub sign_in_s: f64,
    pub sign_in_latency: Option<LatencySummary>,
    pub sending_s: f64,
    pub measured_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub stale: u64,
    pub out_of_order: u64,
    pub disconnects: usize,
    pub first_disconnect: Option<String>,
    pub errors: BTreeMap<String, u64>,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub acks_per_s: f64,
    pub latency: Option<LatencySummary>,
    pub ack_latency: Option<LatencySummary>,
    pub memory: Option<MemoryReport>,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_cores: Option<f64>,
    pub server_exit: Option<String>,
}

impl WsReport {
    /// The report as a table for the terminal.
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.section("entente-bench ws")
            .row("server", &self.server_url)
            .row(
                "server pid",
                self.server_pid
                    .map_or("unknown (memory not measured)".to_string(), |p| {
                        format!("{p}{}", if self.spawned { " (spawned)" } else { "" })
                    }),
            )
            .row(
                "server environment",
                if self.server_env.is_empty() {
                    "inherited".to_string()
                } else {
                    self.server_env.join(" ")
                },
            )
            .row("sessions", self.sessions)
            .row("pattern", format!("{:?}", self.pattern).to_lowercase())
            .row("window", self.window)
            .row(
                "rate per session",
                self.rate_per_session
                    .map_or("unpaced".to_string(), |r| PerSecond(r).to_string()),
            )
            .row(
                "limit",
                match self.messages_per_session {
                    Some(m) => format!(
                        "{} messages per session or {}s",
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
                    "{} created, {} existing{}, in {:.1}s",
                    self.users_created,
                    self.users_existing,
                    if self.registration_closed {
                        " (registration closed: not registered)"
                    } else {
                        ""
                    },
                    self.register_s
                ),
            )
            .row("warm-up sign-ins", self.warmup_sign_ins)
            .row("sign-in", format!("{:.1}s for all", self.sign_in_s));
        if let Some(s) = &self.sign_in_latency {
            t.row("sign-in p50/p99/p99.9/max", s.percentiles_line());
        }
        t.section("messages")
            .row("sending time", format!("{:.2}s", self.sending_s))
            .row("measured time", format!("{:.2}s", self.measured_s))
            .row("sent", Thousands(self.sent))
            .row("acked", Thousands(self.acked))
            .row("failed (error frame)", Thousands(self.failed))
            .row("delivered", Thousands(self.delivered))
            .row(
                "not received by the end (sent, no error)",
                Thousands(self.undelivered),
            )
            .row("out of order or repeated", Thousands(self.out_of_order))
            .row("stale (earlier runs)", Thousands(self.stale))
            .row("disconnects", self.disconnects);
        if let Some(reason) = &self.first_disconnect {
            t.row("first disconnect", reason);
        }
        for (code, count) in &self.errors {
            t.row(format!("error `{code}`"), Thousands(*count));
        }
        t.section("throughput")
            .row("sent", PerSecond(self.sent_per_s))
            .row("delivered", PerSecond(self.delivered_per_s))
            .row("acks", PerSecond(self.acks_per_s));
        t.section("latency (p50 / p99 / p99.9 / max)");
        match &self.latency {
            Some(s) => t.row("send → delivery", s.percentiles_line()),
            None => t.row("send → delivery", "no message delivered"),
        };
        match &self.ack_latency {
            Some(s) => t.row("send → ack", s.percentiles_line()),
            None => t.row("send → ack", "no ack received"),
        };
        server_section(
            &mut t,
            &ServerLabels {
                before: "RSS before sign-in",
                connected: "RSS all signed in, idle",
                per: "per session",
                no_memory: "not measured (no server pid)",
                cpu: "CPU while running",
            },
            self,
        );
        t
    }
}

/// Runs the WebSocket benchmark and prints its report.
pub async fn run(args: WsArgs) -> Result<()> {
    let report = execute(&args).await?;
    print_report(&report, &report.table(), args.json.as_deref())
}

/// Prints a report as a table, and as JSON to `json` (`-`: JSON only, on stdout).
pub(crate) fn print_report<R: Serialize>(
    report: &R,
    table: &Table,
    json: Option<&std::path::Path>,
) -> Result<()> {
    match json {
        Some(path) if path.as_os_str() == "-" => {
            println!("{}", serde_json::to_string_pretty(report)?);
        }
        Some(path) => {
            print!("{table}");
            std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{table}"),
    }
    Ok(())
}

/// Stops a server this tool started (SIGTERM, then a kill after the drain timeout), copies its
/// log if asked, and says how it ended.
pub(crate) async fn stop_spawned(
    spawned: Option<SpawnedServer>,
    log_copy: Option<&std::path::Path>,
) -> Option<String> {
    let mut server = spawned?;
    let tail = server.log_tail();
    let log_source = server.log_path().to_path_buf();
    let exit = match server.stop().await {
        Ok(status) if status.success() => "0 after SIGTERM".to_string(),
        Ok(status) => format!("{status} after SIGTERM{tail}"),
        Err(e) => format!("{e:#}{tail}"),
    };
    if let Some(copy) = log_copy {
        if let Err(e) = std::fs::copy(&log_source, copy) {
            eprintln!("could not copy the server log to {}: {e}", copy.display());
        }
    }
    Some(exit)
}

/// Runs the WebSocket benchmark and returns its report (printing only progress on stderr).
pub async fn execute(args: &WsArgs) -> Result<WsReport> {
    args.validate()?;
    let mut spawned = None;
    let target = match (&args.url, &args.spawn) {
        (Some(url), _) => HttpTarget::parse(url)?,
        (None, Some(binary)) => {
            let settings = SpawnSettings {
                connection_rate: args.spawn_connection_rate,
                connection_burst: args.spawn_connection_burst,
                env: args.server_env.clone(),
                ..SpawnSettings::default()
            };
            let server = SpawnedServer::start(binary, &settings).await?;
            eprintln!(
                "started {} (pid {}) on {}, data in {}",
                binary.display(),
                server.pid(),
                server.http.addr,
                server.dir().display()
            );
            let target = server.http;
            spawned = Some(server);
            target
        }
        (None, None) => bail!("give --url or --spawn"),
    };
    let pid = spawned.as_ref().map(|s| s.pid()).or(args.server_pid);
    let result = measure(args, target, pid, &mut spawned).await;
    let server_exit = stop_spawned(spawned, args.server_log.as_deref()).await;
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

pub(crate) fn read_memory(pid: Option<u32>) -> Result<Option<MemoryStatus>> {
    match pid {
        Some(pid) => {
            Ok(Some(process::read_memory(pid).with_context(|| {
                format!("reading the memory of server pid {pid}")
            })?))
        }
        None => Ok(None),
    }
}

async fn measure(
    args: &WsArgs,
    target: HttpTarget,
    pid: Option<u32>,
    spawned: &mut Option<SpawnedServer>,
) -> Result<WsReport> {
    let n = args.sessions;

    // Users.
    eprintln!("registering {n} users…");
    let register_started = Instant::now();
    let mut users_created = 0;
    let mut users_existing = 0;
    // The first registration tells whether the server takes registrations at all.
    let first = http::register(target.addr, &args.user(0), &args.password, REQUEST_TIMEOUT).await?;
    let rest = if first == Registration::Closed {
        eprintln!(
            "registration is closed on this server: assuming {}0…{}{} exist with --password \
(create them with `entente user add`)",
            args.user_prefix,
            args.user_prefix,
            n - 1
        );
        0..0
    } else {
        1..n
    };
    let outcomes: Vec<Result<Registration>> = futures::stream::iter(rest)
        .map(|i| {
            let user = args.user(i);
            let password = args.password.clone();
            async move { http::register(target.addr, &user, &password, REQUEST_TIMEOUT).await }
        })
        .buffer_unordered(args.register_concurrency)
        .collect()
        .await;
    let register_s = register_started.elapsed().as_secs_f64();
    let registration_closed = first == Registration::Closed;
    for outcome in std::iter::once(Ok(first)).chain(outcomes) {
        match outcome? {
            Registration::Created => users_created += 1,
            Registration::AlreadyExists => users_existing += 1,
            Registration::Closed if registration_closed => {}
            Registration::Closed => bail!("the server closed registration during the run"),
        }
    }

    // Warm-up: sign-ins whose sessions are closed again before the baseline reading.
    let warmup = args.warmup.unwrap_or(n).min(n);
    if warmup > 0 {
        eprintln!("warming up with {warmup} sign-ins…");
        let results: Vec<Result<()>> = futures::stream::iter(0..warmup)
            .map(|i| {
                let plan = SessionPlan {
                    index: i,
                    count: n,
                    user: args.user(i),
                    password: args.password.clone(),
                    peer_user: String::new(),
                    ws_url: target.ws_url(),
                    window: 1,
                    interval: None,
                    max_messages: 0,
                    body_size: 0,
                };
                async move {
                    let (mut ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, sign_in(&plan))
                        .await
                        .map_err(|_| anyhow!("warm-up sign-in of `{}` timed out", plan.user))??;
                    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
                    Ok(())
                }
            })
            .buffer_unordered(args.connect_concurrency)
            .collect()
            .await;
        for result in results {
            result.context("warm-up sign-in")?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = read_memory(pid)?;

    // Sessions.
    eprintln!("signing in {n} sessions…");
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run: run_id,
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        disconnected: AtomicUsize::new(0),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::SigningIn);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let (signed_tx, mut signed_rx) = mpsc::channel(n);
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let sign_in_started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let plan = SessionPlan {
            index: i,
            count: n,
            user: args.user(i),
            password: args.password.clone(),
            peer_user: args.user(peer_of(args.pattern, i, n)),
            ws_url: target.ws_url(),
            window: args.window,
            interval,
            max_messages: args.messages.unwrap_or(u64::MAX),
            body_size: args.body_size,
        };
        tasks.push(tokio::spawn(session(
            plan,
            shared.clone(),
            phase_rx.clone(),
            gate.clone(),
            signed_tx.clone(),
        )));
    }
    drop(signed_tx);
    let mut sign_in_latency = report::latency_histogram();
    let mut signed = 0;
    let mut failure = None;
    while signed < n {
        match signed_rx.recv().await {
            Some(Ok(s)) => {
                report::record_latency(&mut sign_in_latency, s.login_us);
                signed += 1;
                if signed == 1 {
                    eprintln!("first session signed in as {}", s.address);
                }
            }
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            None => {
                failure = Some(anyhow!("sessions ended before signing in"));
                break;
            }
        }
    }
    if let Some(e) = failure {
        let _ = phase_tx.send(Phase::Aborted);
        for task in &tasks {
            task.abort();
        }
        let tail = spawned.as_ref().map(|s| s.log_tail()).unwrap_or_default();
        return Err(e.context(format!(
            "{signed} of {n} sessions had signed in when one failed{tail}"
        )));
    }
    let sign_in_s = sign_in_started.elapsed().as_secs_f64();

    // Memory once every session is signed in and idle.
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let connected = read_memory(pid)?;

    // Sending.
    eprintln!("all {n} sessions signed in; sending…");
    let cpu_before = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
    let bench_cpu_before = process::read_cpu_seconds(None).ok();
    let start_us = shared.now_us();
    let start = Instant::now();
    let _ = phase_tx.send(Phase::Sending);
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut check = tokio::time::interval(Duration::from_millis(20));
    loop {
        check.tick().await;
        if Instant::now() >= deadline || shared.senders_done.load(Ordering::Relaxed) >= n {
            break;
        }
        if shared.disconnected.load(Ordering::Relaxed) >= n {
            break;
        }
        if let Some(server) = spawned.as_mut() {
            if let Some(status) = server.exited() {
                let _ = phase_tx.send(Phase::Aborted);
                bail!(
                    "the server exited during the run: {status}{}",
                    server.log_tail()
                );
            }
        }
    }
    let _ = phase_tx.send(Phase::Draining);
    let sending_s = start.elapsed().as_secs_f64();

    // Draining: wait until every accepted message is delivered and every send answered.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        let sent = shared.sent.load(Ordering::Relaxed);
        let answered = shared.acked.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let accepted = shared.acked.load(Ordering::Relaxed);
        if (answered >= sent && delivered >= accepted) || Instant::now() >= drain_deadline {
            break;
        }
        if shared.disconnected.load(Ordering::Relaxed) >= n {
            break;
        }
        check.tick().await;
    }
    let end = Instant::now();
    let cpu_after = pid.and_then(|p| process::read_cpu_seconds(Some(p)).ok());
    let bench_cpu_after = process::read_cpu_seconds(None).ok();
    let end_memory = read_memory(pid)?;
    let _ = phase_tx.send(Phase::Finished);

    // Collect.
    let mut total = SessionOutcome::new();
    let mut disconnects = 0;
    let mut first_disconnect = None;
    let joined = tokio::time::timeout(CLOSE_TIMEOUT, futures::future::join_all(tasks)).await;
    let outcomes = joined
        .map_err(|_| anyhow!("sessions did not close within {}s", CLOSE_TIMEOUT.as_secs()))?;
    for outcome in outcomes {
        let o = outcome.context("a session task failed")?;
        total.latency.add(&o.latency).ok();
        total.ack_latency.add(&o.ack_latency).ok();
        total.sent += o.sent;
        total.acked += o.acked;
        total.failed += o.failed;
        total.delivered += o.delivered;
        total.stale += o.stale;
        total.out_of_order += o.out_of_order;
        for (code, count) in o.errors {
            *total.errors.entry(code).or_default() += count;
        }
        total.last_delivery_us = total.last_delivery_us.max(o.last_delivery_us);
        total.last_ack_us = total.last_ack_us.max(o.last_ack_us);
        if let Some(reason) = o.disconnect {
            disconnects += 1;
            first_disconnect.get_or_insert(reason);
        }
    }

    let measured_s = (end - start).as_secs_f64();
    let per_second = |count: u64, last_us: Option<u64>| match last_us {
        Some(last) if last > start_us && count > 0 => {
            count as f64 / ((last - start_us) as f64 / 1e6)
        }
        _ => 0.0,
    };
    let memory = match (before, connected, end_memory) {
        (Some(b), Some(c), Some(e)) => Some(MemoryReport::new(b, c, e, n)),
        _ => None,
    };
    let cores = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if measured_s > 0.0 => Some((a - b) / measured_s),
        _ => None,
    };
    Ok(WsReport {
        mode: "ws",
        server_url: format!("http://{}", target.addr),
        server_pid: pid,
        spawned: spawned.is_some(),
        server_env: args
            .server_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        sessions: n,
        pattern: args.pattern,
        window: args.window,
        rate_per_session: args.rate,
        messages_per_session: args.messages,
        duration_limit_s: args.duration,
        body_bytes: args.body_size.max(encode_body(run_id, 0, 0, 0).len()),
        users_created,
        users_existing,
        registration_closed,
        register_s,
        warmup_sign_ins: warmup,
        sign_in_s,
        sign_in_latency: LatencySummary::from_histogram(&sign_in_latency),
        sending_s,
        measured_s,
        sent: total.sent,
        acked: total.acked,
        failed: total.failed,
        delivered: total.delivered,
        undelivered: total
            .sent
            .saturating_sub(total.failed)
            .saturating_sub(total.delivered),
        stale: total.stale,
        out_of_order: total.out_of_order,
        disconnects,
        first_disconnect,
        errors: total.errors,
        sent_per_s: if sending_s > 0.0 {
            total.sent as f64 / sending_s
        } else {
            0.0
        },
        delivered_per_s: per_second(total.delivered, total.last_delivery_us),
        acks_per_s: per_second(total.acked, total.last_ack_us),
        latency: LatencySummary::from_histogram(&total.latency),
        ack_latency: LatencySummary::from_histogram(&total.ack_latency),
        memory,
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
        ws: WsArgs,
    }

    fn args(extra: &[&str]) -> Result<WsArgs, clap::Error> {
        let mut argv = vec!["entente-bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.ws)
    }

    #[test]
    fn pairs_and_ring_peers() {
        let pairs: Vec<usize> = (0..6).map(|i| peer_of(Pattern::Pairs, i, 6)).collect();
        assert_eq!(pairs, [1, 0, 3, 2, 5, 4]);
        let ring: Vec<usize> = (0..4).map(|i| peer_of(Pattern::Ring, i, 4)).collect();
        assert_eq!(ring, [1, 2, 3, 0]);
        // Every session receives from exactly one other in both patterns.
        for pattern in [Pattern::Pairs, Pattern::Ring] {
            let mut received = vec![0; 100];
            for i in 0..100 {
                let p = peer_of(pattern, i, 100);
                assert_ne!(p, i);
                received[p] += 1;
            }
            assert!(received.iter().all(|&r| r == 1));
        }
    }

    #[test]
    fn body_round_trip_and_padding() {
        let body = encode_body(0xdead_beef, 42, 123_456, 64);
        assert_eq!(body.len(), 64);
        assert_eq!(
            decode_body(&body),
            Some(BodyStamp {
                run: 0xdead_beef,
                seq: 42,
                sent_us: 123_456
            })
        );
        // A size below the header keeps the whole header.
        let short = encode_body(u64::MAX, u64::MAX, u64::MAX, 0);
        assert_eq!(
            decode_body(&short),
            Some(BodyStamp {
                run: u64::MAX,
                seq: u64::MAX,
                sent_us: u64::MAX
            })
        );
    }

    #[test]
    fn foreign_bodies_are_not_stamps() {
        for body in [
            "",
            "hello",
            "eb",
            "eb 1 2",
            "eb zz 1 2 ",
            "eb 1 -1 2 ",
            "eb 1 2 3.5 ",
            "EB 1 2 3 ",
            "eb 1 2 99999999999999999999999 ",
            "eb 10000000000000000 1 2 ",
        ] {
            assert_eq!(decode_body(body), None, "{body:?}");
        }
    }

    #[test]
    fn frames_update_counters() {
        let shared = Shared {
            epoch: Instant::now(),
            run: 7,
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            disconnected: AtomicUsize::new(0),
        };
        let mut in_flight = HashMap::from([(0, 0), (1, 0)]);
        let mut out = SessionOutcome::new();
        let ours = serde_json::json!({
            "type": "message", "id": "s1", "from": "bench1@localhost",
            "body": encode_body(7, 0, 0, 40), "ts": "2026-11-25T22:19:40Z", "offline": false
        })
        .to_string();
        on_frame(&ours, &shared, &mut in_flight, &mut out);
        let old = serde_json::json!({"type": "message", "body": encode_body(6, 0, 0, 0), "offline": true})
            .to_string();
        on_frame(&old, &shared, &mut in_flight, &mut out);
        on_frame(
            r#"{"type":"ack","id":"m0"}"#,
            &shared,
            &mut in_flight,
            &mut out,
        );
        on_frame(
            r#"{"type":"ack","id":"m0"}"#,
            &shared,
            &mut in_flight,
            &mut out,
        );
        assert!(on_frame(
            r#"{"type":"error","id":"m1","code":"rate_limited","text":"slow down"}"#,
            &shared,
            &mut in_flight,
            &mut out,
        ));
        on_frame(
            r#"{"type":"presence","from":"x@y","show":"available"}"#,
            &shared,
            &mut in_flight,
            &mut out,
        );
        on_frame("not json", &shared, &mut in_flight, &mut out);
        on_frame(r#"{"no":"type"}"#, &shared, &mut in_flight, &mut out);

        assert_eq!(out.delivered, 1);
        assert_eq!(out.latency.len(), 1);
        assert_eq!(out.stale, 1);
        assert_eq!(out.out_of_order, 0);

        // The next number is in order; a repeat and an older one are not.
        let stamped = |seq| {
            serde_json::json!({"type": "message", "body": encode_body(7, seq, 0, 0)}).to_string()
        };
        for seq in [1, 1, 0, 2] {
            assert!(!on_frame(&stamped(seq), &shared, &mut in_flight, &mut out));
        }
        assert_eq!(out.delivered, 5);
        assert_eq!(out.out_of_order, 2);
        assert_eq!(out.last_seq, Some(2));
        assert_eq!(out.acked, 1);
        assert_eq!(out.ack_latency.len(), 1);
        assert_eq!(out.failed, 1);
        assert!(in_flight.is_empty());
        assert_eq!(out.errors.get("rate_limited"), Some(&1));
        assert_eq!(out.errors.get("unexpected_ack"), Some(&1));
        assert_eq!(out.errors.get("unreadable_frame"), Some(&2));
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 5);
        assert_eq!(shared.acked.load(Ordering::Relaxed), 1);
        assert_eq!(shared.failed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn arguments_are_bounded() {
        assert!(args(&["--spawn", "/bin/entente"])
            .unwrap()
            .validate()
            .is_ok());
        assert!(args(&["--url", "http://127.0.0.1:1", "--server-pid", "5"])
            .unwrap()
            .validate()
            .is_ok());
        // One of --url and --spawn, not both.
        assert!(args(&[]).is_err());
        assert!(args(&["--url", "http://127.0.0.1:1", "--spawn", "x"]).is_err());
        assert!(args(&["--spawn", "x", "--server-pid", "5"]).is_err());
        for bad in [
            &["--sessions", "1"][..],
            &["--sessions", "3"],
            &["--sessions", "20002"],
            &["--duration", "0"],
            &["--duration", "3601"],
            &["--duration", "NaN"],
            &["--messages", "0"],
            &["--window", "0"],
            &["--window", "5000"],
            &["--rate", "0"],
            &["--body-size", "70000"],
            &["--user-prefix", "Bench"],
            &["--user-prefix", "1bench"],
            &["--user-prefix", "be nch"],
            &["--password", ""],
            &["--connect-concurrency", "0"],
            &["--drain=-1"],
        ] {
            let mut argv = vec!["--spawn", "x"];
            argv.extend_from_slice(bad);
            let parsed = args(&argv).unwrap();
            assert!(parsed.validate().is_err(), "{bad:?} was accepted");
        }
        let with_env = args(&[
            "--spawn",
            "x",
            "--server-env",
            "A_B=1=2",
            "--server-env",
            "C=",
        ])
        .unwrap();
        assert_eq!(
            with_env.server_env,
            [
                ("A_B".to_string(), "1=2".to_string()),
                ("C".to_string(), String::new())
            ]
        );
        assert!(args(&["--spawn", "x", "--server-env", "novalue"]).is_err());
        assert!(args(&["--spawn", "x", "--server-env", "=1"]).is_err());
        assert!(args(&["--spawn", "x", "--server-env", "A B=1"]).is_err());
        assert!(
            args(&["--url", "http://127.0.0.1:1", "--server-env", "A=1"])
                .unwrap()
                .validate()
                .is_err()
        );
        // An odd count is fine in a ring.
        assert!(
            args(&["--spawn", "x", "--sessions", "3", "--pattern", "ring"])
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    fn sample_report() -> WsReport {
        let mut latency = report::latency_histogram();
        for us in [100, 200, 300, 5_000] {
            report::record_latency(&mut latency, us);
        }
        WsReport {
            mode: "ws",
            server_url: "http://127.0.0.1:4000".to_string(),
            server_pid: Some(42),
            spawned: true,
            server_env: vec!["MALLOC_ARENA_MAX=2".to_string()],
            sessions: 100,
            pattern: Pattern::Ring,
            window: 4,
            rate_per_session: None,
            messages_per_session: Some(1_000),
            duration_limit_s: 30.0,
            body_bytes: 64,
            users_created: 100,
            users_existing: 0,
            registration_closed: false,
            register_s: 3.25,
            warmup_sign_ins: 8,
            sign_in_s: 4.5,
            sign_in_latency: None,
            sending_s: 10.0,
            measured_s: 10.5,
            sent: 100_000,
            acked: 99_990,
            failed: 10,
            delivered: 99_990,
            undelivered: 0,
            stale: 0,
            out_of_order: 0,
            disconnects: 0,
            first_disconnect: None,
            errors: BTreeMap::from([("rate_limited".to_string(), 10)]),
            sent_per_s: 10_000.0,
            delivered_per_s: 9_999.0,
            acks_per_s: 9_999.0,
            latency: LatencySummary::from_histogram(&latency),
            ack_latency: None,
            memory: Some(MemoryReport::new(
                MemoryStatus {
                    rss_kib: 10_240,
                    hwm_kib: 10_240,
                },
                MemoryStatus {
                    rss_kib: 30_240,
                    hwm_kib: 31_000,
                },
                MemoryStatus {
                    rss_kib: 35_000,
                    hwm_kib: 40_960,
                },
                100,
            )),
            server_cpu_cores: Some(1.234),
            bench_cpu_cores: Some(0.5),
            server_exit: Some("0 after SIGTERM".to_string()),
        }
    }

    #[test]
    fn memory_per_session_is_the_idle_delta_over_sessions() {
        let m = sample_report().memory.unwrap();
        assert_eq!(m.per_session_kib, 200.0);
        assert_eq!(m.peak_kib, 40_960);
        assert_eq!(m.after_run_kib, 35_000);
    }

    #[test]
    fn table_shows_the_figures() {
        let text = sample_report().table().to_string();
        for expected in [
            "pattern",
            "ring",
            "1,000 messages per session or 30s",
            "99,990",
            "error `rate_limited`",
            "9,999.0/s",
            "200 µs / 5.00 ms / 5.00 ms / 5.00 ms",
            "no ack received",
            "200.0 KiB",
            "40.0 MiB",
            "1.23 cores",
            "42 (spawned)",
            "0 after SIGTERM",
            "MALLOC_ARENA_MAX=2",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn json_report_has_stable_field_names() {
        let value = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(value["mode"], "ws");
        assert_eq!(value["pattern"], "ring");
        assert_eq!(value["delivered_per_s"], 9_999.0);
        assert_eq!(value["memory"]["per_session_kib"], 200.0);
        assert_eq!(value["latency"]["p50_us"], 200);
        assert!(value["latency"]["p999_us"].is_u64());
        assert!(value["ack_latency"].is_null());
        assert_eq!(value["errors"]["rate_limited"], 10);
    }
}

impl crate::report::ServerFigures for WsReport {
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
