//! OSCAR mode: N AIM-style clients sign on (BUCP login with the strong MD5 hash, then the BOS
//! sign-on), and send each other IMs in pairs or a ring. Measures sign-ons per second, IMs
//! delivered per second, send → delivery latency and the server's memory per BOS session.
//!
//! The client is built on the `entente-oscar` codec (FLAP framing, SNAC bodies, TLVs); the
//! accounts are hub accounts registered over HTTP first, as in the WebSocket mode.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use entente_oscar::family::bucp::{self, tlv};
use entente_oscar::family::{feedbag, icbm, oservice};
use entente_oscar::{Channel, Flap, FlapReader, FlapWriter, SignOnFrame, Snac, SnacBody};
use entente_oscar::{Tlv, TlvList};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::http;
use crate::process;
use crate::report::{
    self, server_section, LatencySummary, PerSecond, ServerLabels, Table, Thousands,
};
use crate::target::{HttpTarget, SpawnSettings, SpawnedServer};
use crate::ws::{decode_body, encode_body, peer_of, MemoryReport, Pattern, MAX_SESSIONS};

/// Time allowed for one HTTP request or one sign-on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest FLAP payload accepted from the server.
const MAX_FLAP_PAYLOAD: usize = 16 * 1024;
/// Frames skipped while waiting for one particular SNAC during sign-on.
const MAX_SKIPPED: usize = 256;
/// Longest screen name the tool builds (AIM allows 16 characters, the hub more).
const MAX_PREFIX: usize = 12;
/// Largest IM body: the server refuses longer ones, and the rate test is about count.
const MAX_BODY: usize = 4000;
/// The client identification sent with the login, as AIM 5.1 does.
const CLIENT_ID: &[u8] = b"AOL Instant Messenger, version 5.1.3036/WIN32";
/// Families and versions announced at sign-on, as AIM 5.x does.
const VERSIONS: [(u16, u16); 6] = [
    (0x13, 4),
    (0x09, 1),
    (0x04, 1),
    (0x03, 1),
    (0x02, 1),
    (0x01, 3),
];

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("server").required(true).args(["url", "spawn"])))]
pub struct OscarArgs {
    /// A running server's HTTP listener (for registration), e.g. http://127.0.0.1:8080.
    #[arg(long, requires = "oscar")]
    pub url: Option<String>,
    /// The running server's OSCAR listener, e.g. 127.0.0.1:5190 (with --url; loopback only).
    #[arg(long, value_name = "IP:PORT")]
    pub oscar: Option<SocketAddr>,
    /// Start this `entente` binary with a temporary configuration (HTTP and OSCAR listeners)
    /// and stop it with SIGTERM at the end.
    #[arg(long, value_name = "PATH")]
    pub spawn: Option<PathBuf>,
    /// Process id of the running server given with --url, to read its memory and CPU time.
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub server_pid: Option<u32>,
    /// Number of OSCAR sessions (and users).
    #[arg(long, default_value_t = 2)]
    pub sessions: usize,
    /// Who sends to whom.
    #[arg(long, value_enum, default_value_t = Pattern::Pairs)]
    pub pattern: Pattern,
    /// Seconds of sending; the run also ends when every session has sent --messages.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// IMs each session sends (default: as many as fit in --duration).
    #[arg(long)]
    pub messages: Option<u64>,
    /// IMs each session may have sent but not yet seen delivered to its peer (end to end,
    /// counted by the receiving session; host acks are measured but do not pace).
    #[arg(long, default_value_t = 1)]
    pub window: u32,
    /// IMs per second each session sends. The server's ICBM rate class warns a client whose
    /// average gap falls below 2 s and drops its IMs below 1.5 s (after a burst of about 80),
    /// so the default stays under it; `0` sends as fast as the window allows.
    #[arg(long, default_value_t = 0.4)]
    pub rate: f64,
    /// Size of each IM body in bytes (at least the timestamp header).
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
    /// Sign-ons in flight at once.
    #[arg(long, default_value_t = 16)]
    pub connect_concurrency: usize,
    /// Seconds to wait, once every session is signed on, before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds to wait after sending stops for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Environment variable for a spawned server, as KEY=VALUE; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::ws::parse_env_pair)]
    pub server_env: Vec<(String, String)>,
    /// Copy a spawned server's log (its stderr) to this file at the end.
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Also write the report as JSON to this file (`-` for stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl OscarArgs {
    /// Checks every bound before anything is started.
    pub fn validate(&self) -> Result<()> {
        if self.sessions < 2 || self.sessions > MAX_SESSIONS {
            bail!("--sessions must be between 2 and {MAX_SESSIONS}");
        }
        if self.pattern == Pattern::Pairs && self.sessions % 2 != 0 {
            bail!("--pattern pairs needs an even number of sessions");
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
        if !(0.0..=10_000.0).contains(&self.rate) {
            bail!("--rate must be between 0 (unpaced) and 10000 per second");
        }
        if self.body_size > MAX_BODY {
            bail!("--body-size must be at most {MAX_BODY}");
        }
        let prefix_ok = !self.user_prefix.is_empty()
            && self.user_prefix.len() <= MAX_PREFIX
            && self
                .user_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self
                .user_prefix
                .starts_with(|c: char| c.is_ascii_lowercase());
        if !prefix_ok {
            bail!("--user-prefix must be 1 to {MAX_PREFIX} lowercase letters and digits, starting with a letter");
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
        if let Some(addr) = self.oscar {
            if !addr.ip().is_loopback() || addr.port() == 0 {
                bail!("--oscar must be a loopback address with a port");
            }
        }
        if (!self.server_env.is_empty() || self.server_log.is_some()) && self.spawn.is_none() {
            bail!("--server-env and --server-log go with --spawn");
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

/// Why a sign-on failed.
#[derive(Debug, thiserror::Error)]
pub enum SignOnError {
    /// The login server refused with this BUCP error code (1 unknown name, 5 wrong password,
    /// 0x18 too many attempts).
    #[error("login refused with code {0:#04x}")]
    Refused(u16),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// One OSCAR connection of a client: FLAP framing over TCP, SNAC request ids.
pub struct OscarClient {
    stream: TcpStream,
    reader: FlapReader,
    writer: FlapWriter,
    next_rid: u32,
    chunk: Vec<u8>,
}

impl OscarClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        if !addr.ip().is_loopback() {
            bail!(
                "{addr} is not a loopback address: this tool only loads a server on this machine"
            );
        }
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).ok();
        Ok(Self {
            stream,
            reader: FlapReader::new(MAX_FLAP_PAYLOAD),
            writer: FlapWriter::new(0x1000),
            next_rid: 0,
            chunk: vec![0; 8192],
        })
    }

    pub async fn send_flap(&mut self, channel: Channel, payload: Bytes) -> Result<()> {
        let bytes = self.writer.frame(channel, payload);
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    /// Sends a SNAC with a fresh request id, and returns the id.
    pub async fn send_snac<T: SnacBody>(&mut self, body: &T) -> Result<u32> {
        self.next_rid = self.next_rid.wrapping_add(1);
        let bytes = body.to_snac(self.next_rid).to_bytes();
        self.send_flap(Channel::Snac, bytes).await?;
        Ok(self.next_rid)
    }

    /// The next frame already buffered, if complete.
    pub fn buffered_frame(&mut self) -> Result<Option<Flap>> {
        self.reader
            .next_frame()
            .map_err(|e| anyhow!("bad frame from the server: {e}"))
    }

    /// Reads once from the socket into the frame buffer; `false` at end of stream.
    pub async fn read_more(&mut self) -> Result<bool> {
        let n = self.stream.read(&mut self.chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        self.reader.push(&self.chunk[..n]);
        Ok(true)
    }

    /// The next frame; `None` when the server closes the connection.
    pub async fn next_frame(&mut self) -> Result<Option<Flap>> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Skips frames until a SNAC of this kind arrives (at most [`MAX_SKIPPED`] others).
    pub async fn expect(&mut self, family: u16, subtype: u16) -> Result<Snac> {
        for _ in 0..MAX_SKIPPED {
            let Some(frame) = self.next_frame().await? else {
                bail!("the server closed the connection before SNAC {family:02x},{subtype:02x}");
            };
            match frame.channel {
                Channel::Snac => {
                    let snac = Snac::decode(&frame.payload)
                        .map_err(|e| anyhow!("bad SNAC from the server: {e}"))?;
                    if snac.kind() == (family, subtype) {
                        return Ok(snac);
                    }
                }
                Channel::SignOff => {
                    bail!("signed off by the server before SNAC {family:02x},{subtype:02x}")
                }
                _ => {}
            }
        }
        bail!("no SNAC {family:02x},{subtype:02x} within {MAX_SKIPPED} frames")
    }
}

/// An IM (04,06, channel 1) asking for a host ack; the cookie carries `seq`.
pub fn im_to_host(to: &str, text: &str, seq: u64) -> icbm::ChannelMsgToHost {
    icbm::ChannelMsgToHost {
        cookie: seq.to_be_bytes(),
        channel: 1,
        screen_name: to.to_string(),
        tlvs: TlvList::new()
            .with(Tlv::new(
                icbm::msg_tlv::MESSAGE,
                icbm::ImMessage::from_text(text).encode(),
            ))
            .with(Tlv::new(icbm::msg_tlv::REQUEST_HOST_ACK, Vec::new())),
    }
}

/// BUCP login with the strong hash at `login_addr`, then the BOS sign-on at the address the
/// login names, up to the client-ready SNAC and a 04,04 → 04,05 round trip that shows the
/// session is running.
pub async fn sign_on(
    login_addr: SocketAddr,
    screen_name: &str,
    password: &str,
) -> Result<OscarClient, SignOnError> {
    let mut login = OscarClient::connect(login_addr).await?;
    login
        .send_flap(Channel::SignOn, Bytes::from_static(&[0, 0, 0, 1]))
        .await?;
    let screen = screen_name.as_bytes().to_vec();
    login
        .send_snac(&bucp::ChallengeRequest {
            tlvs: TlvList::new().with(Tlv::new(tlv::SCREEN_NAME, screen.clone())),
        })
        .await?;
    let challenge: bucp::Challenge = login
        .expect(0x17, 0x07)
        .await?
        .body_as()
        .map_err(|e| anyhow!("bad challenge: {e}"))?;
    let hash = bucp::strong_hash(&challenge.key, &bucp::md5_password(password.as_bytes()));
    login
        .send_snac(&bucp::LoginRequest {
            tlvs: TlvList::new()
                .with(Tlv::new(tlv::SCREEN_NAME, screen))
                .with(Tlv::new(tlv::PASSWORD_HASH, hash.to_vec()))
                .with(Tlv::new(tlv::STRONG_HASH, Vec::new()))
                .with(Tlv::new(tlv::CLIENT_ID_STRING, CLIENT_ID.to_vec())),
        })
        .await?;
    let reply: bucp::LoginReply = login
        .expect(0x17, 0x03)
        .await?
        .body_as()
        .map_err(|e| anyhow!("bad login reply: {e}"))?;
    if let Some(code) = reply.tlvs.get_u16(tlv::ERROR_CODE) {
        return Err(SignOnError::Refused(code));
    }
    let bos: SocketAddr = reply
        .tlvs
        .get_string(tlv::BOS_ADDRESS)
        .ok_or_else(|| anyhow!("login reply without a BOS address"))?
        .parse()
        .map_err(|_| anyhow!("the BOS address is not IP:PORT"))?;
    let cookie = reply
        .tlvs
        .get_bytes(tlv::COOKIE)
        .ok_or_else(|| anyhow!("login reply without a cookie"))?
        .clone();
    drop(login);

    let mut c = OscarClient::connect(bos).await?;
    let hello = SignOnFrame {
        version: 1,
        tlvs: TlvList::new().with(Tlv::new(tlv::COOKIE, cookie)),
    };
    c.send_flap(Channel::SignOn, hello.encode()).await?;
    c.expect(0x01, 0x03).await?;
    c.send_snac(&oservice::ClientVersions(oservice::Versions {
        versions: VERSIONS.to_vec(),
    }))
    .await?;
    c.expect(0x01, 0x18).await?;
    c.send_snac(&oservice::RateParamsQuery).await?;
    let rates: oservice::RateParamsReply = c
        .expect(0x01, 0x07)
        .await?
        .body_as()
        .map_err(|e| anyhow!("bad rate parameters: {e}"))?;
    c.send_snac(&oservice::RateParamsAck {
        classes: rates.classes.iter().map(|r| r.id).collect(),
    })
    .await?;
    c.send_snac(&feedbag::Query).await?;
    c.expect(0x13, 0x06).await?;
    c.send_snac(&feedbag::Use).await?;
    c.send_snac(&oservice::ClientReady {
        families: VERSIONS
            .iter()
            .map(|&(family, version)| oservice::FamilyTool {
                family,
                version,
                tool_id: 0x0110,
                tool_version: 0x164F,
            })
            .collect(),
    })
    .await?;
    c.send_snac(&icbm::ParamsQuery).await?;
    c.expect(0x04, 0x05).await?;
    Ok(c)
}

/// Where the whole run is; every session follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SigningOn,
    Sending,
    Draining,
    Finished,
}

/// State every session shares.
struct Shared {
    epoch: Instant,
    run: u64,
    sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    senders_done: AtomicUsize,
    disconnected: AtomicUsize,
    /// Per sender: IMs of this run its receiver has seen (the end-to-end window).
    delivered_from: Vec<AtomicU64>,
    /// Per sender: woken when its receiver sees one of its IMs.
    wake: Vec<Notify>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// What one session saw.
#[derive(Debug)]
pub struct Outcome {
    pub latency: Histogram<u64>,
    pub ack_latency: Histogram<u64>,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub failed: u64,
    pub stale: u64,
    pub out_of_order: u64,
    pub last_seq: Option<u64>,
    /// Rate-class changes (01,0A) by code: 1 changed, 2 warning, 3 limited, 4 cleared.
    pub rate_changes: BTreeMap<u16, u64>,
    pub last_delivery_us: Option<u64>,
    pub disconnect: Option<String>,
}

impl Outcome {
    pub fn new() -> Self {
        Self {
            latency: report::latency_histogram(),
            ack_latency: report::latency_histogram(),
            sent: 0,
            acked: 0,
            delivered: 0,
            failed: 0,
            stale: 0,
            out_of_order: 0,
            last_seq: None,
            rate_changes: BTreeMap::new(),
            last_delivery_us: None,
            disconnect: None,
        }
    }
}

impl Default for Outcome {
    fn default() -> Self {
        Self::new()
    }
}

/// What a frame from the BOS server means to a running session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// An IM (04,07) with this text.
    Im(String),
    /// The host accepted IM number `seq` (04,0C).
    HostAck(u64),
    /// An ICBM error (04,01): an IM was refused.
    ImError,
    /// A rate-class change (01,0A) with this code.
    RateChange(u16),
    /// Channel 4: the server signed the session off.
    SignedOff,
    /// Anything else (presence, keepalives, …).
    Other,
    /// A SNAC that does not decode.
    Unreadable,
}

/// Classifies one frame from the server.
pub fn classify(frame: &Flap) -> Seen {
    match frame.channel {
        Channel::SignOff => return Seen::SignedOff,
        Channel::Snac => {}
        _ => return Seen::Other,
    }
    let Ok(snac) = Snac::decode(&frame.payload) else {
        return Seen::Unreadable;
    };
    match snac.kind() {
        (0x04, 0x07) => match snac.body_as::<icbm::ChannelMsgToClient>() {
            Ok(m) => match m.message().and_then(|m| m.text()) {
                Ok(text) => Seen::Im(text),
                Err(_) => Seen::Unreadable,
            },
            Err(_) => Seen::Unreadable,
        },
        (0x04, 0x0C) => match snac.body_as::<icbm::HostAck>() {
            Ok(ack) => Seen::HostAck(u64::from_be_bytes(ack.cookie)),
            Err(_) => Seen::Unreadable,
        },
        (0x04, 0x01) => Seen::ImError,
        (0x01, 0x0A) => match snac.body_as::<oservice::RateChange>() {
            Ok(change) => Seen::RateChange(change.code),
            Err(_) => Seen::Unreadable,
        },
        _ => Seen::Other,
    }
}

/// Updates a session's counters for one IM text; returns whether it was one of this run's.
fn on_im(text: &str, shared: &Shared, sender: usize, out: &mut Outcome) -> bool {
    match decode_body(text) {
        Some(stamp) if stamp.run == shared.run => {
            let now = shared.now_us();
            report::record_latency(&mut out.latency, now.saturating_sub(stamp.sent_us));
            out.delivered += 1;
            out.last_delivery_us = Some(now);
            match out.last_seq {
                Some(last) if stamp.seq <= last => out.out_of_order += 1,
                _ => out.last_seq = Some(stamp.seq),
            }
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            if let (Some(count), Some(wake)) =
                (shared.delivered_from.get(sender), shared.wake.get(sender))
            {
                count.fetch_add(1, Ordering::Relaxed);
                wake.notify_one();
            }
            true
        }
        _ => {
            out.stale += 1;
            false
        }
    }
}

struct Plan {
    index: usize,
    count: usize,
    /// The session whose IMs this one receives.
    sender: usize,
    user: String,
    password: String,
    peer: String,
    login_addr: SocketAddr,
    window: u64,
    interval: Option<Duration>,
    max_messages: u64,
    body_size: usize,
}

async fn session(
    plan: Plan,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    gate: Arc<Semaphore>,
    signed_on: mpsc::Sender<Result<u64>>,
) -> Outcome {
    let mut out = Outcome::new();
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let attempt = tokio::time::timeout(
        REQUEST_TIMEOUT,
        sign_on(plan.login_addr, &plan.user, &plan.password),
    )
    .await;
    drop(permit);
    let mut client = match attempt {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let _ = signed_on.send(Err(anyhow!("`{}`: {e}", plan.user))).await;
            return out;
        }
        Err(_) => {
            let _ = signed_on
                .send(Err(anyhow!("`{}`: sign-on timed out", plan.user)))
                .await;
            return out;
        }
    };
    let _ = signed_on
        .send(Ok(started.elapsed().as_micros() as u64))
        .await;

    let mut sending = false;
    let mut done_sending = false;
    let mut in_flight_acks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut ticker: Option<tokio::time::Interval> = None;
    let mut due = false;
    'run: loop {
        // Frames already buffered first.
        loop {
            let frame = match client.buffered_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.disconnect = Some(e.to_string());
                    break 'run;
                }
            };
            match classify(&frame) {
                Seen::Im(text) => {
                    on_im(&text, &shared, plan.sender, &mut out);
                }
                Seen::HostAck(seq) => {
                    if let Some(sent_us) = in_flight_acks.remove(&seq) {
                        let now = shared.now_us();
                        report::record_latency(&mut out.ack_latency, now.saturating_sub(sent_us));
                        out.acked += 1;
                    }
                }
                Seen::ImError => {
                    out.failed += 1;
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
                Seen::RateChange(code) => *out.rate_changes.entry(code).or_default() += 1,
                Seen::SignedOff => {
                    out.disconnect = Some("signed off by the server (channel 4)".to_string());
                    break 'run;
                }
                Seen::Other | Seen::Unreadable => {}
            }
        }
        // Send while the window and the pace allow.
        let window_open = |sent: u64| {
            sent.saturating_sub(shared.delivered_from[plan.index].load(Ordering::Relaxed))
                < plan.window
        };
        while sending
            && out.sent < plan.max_messages
            && window_open(out.sent)
            && (ticker.is_none() || due)
        {
            due = false;
            let seq = out.sent;
            let now = shared.now_us();
            let body = encode_body(shared.run, seq, now, plan.body_size);
            in_flight_acks.insert(seq, now);
            if in_flight_acks.len() > 4096 {
                in_flight_acks.pop_first();
            }
            out.sent += 1;
            shared.sent.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = client.send_snac(&im_to_host(&plan.peer, &body, seq)).await {
                out.disconnect = Some(format!("send failed: {e}"));
                break 'run;
            }
        }
        if sending && !done_sending && out.sent >= plan.max_messages {
            done_sending = true;
            shared.senders_done.fetch_add(1, Ordering::Relaxed);
        }
        let want_tick = sending && out.sent < plan.max_messages && ticker.is_some() && !due;
        let want_wake = sending && out.sent < plan.max_messages && !window_open(out.sent);
        // Deliveries seen while sending may have opened the window already: then go round
        // again at once (after whatever else is ready), as no wake-up will come for them.
        let send_now = sending
            && out.sent < plan.max_messages
            && window_open(out.sent)
            && (ticker.is_none() || due);
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break 'run;
                }
                let now = *phase.borrow_and_update();
                match now {
                    Phase::SigningOn => {}
                    Phase::Sending => {
                        sending = true;
                        ticker = plan
                            .interval
                            .map(|period| crate::ws::staggered_ticker(period, plan.index, plan.count));
                    }
                    Phase::Draining => sending = false,
                    Phase::Finished => break 'run,
                }
            }
            read = client.read_more() => match read {
                Ok(true) => {}
                Ok(false) => {
                    out.disconnect = Some("connection closed".to_string());
                    break 'run;
                }
                Err(e) => {
                    out.disconnect = Some(format!("socket error: {e}"));
                    break 'run;
                }
            },
            _ = shared.wake[plan.index].notified(), if want_wake => {}
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            }, if want_tick => due = true,
            _ = std::future::ready(()), if send_now => {}
        }
    }
    if out.disconnect.is_some() {
        shared.disconnected.fetch_add(1, Ordering::Relaxed);
    } else {
        // Channel 4, as a client signing off does.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            client.send_flap(Channel::SignOff, Bytes::new()),
        )
        .await;
    }
    out
}

/// Everything one OSCAR run measured.
#[derive(Debug, Clone, Serialize)]
pub struct OscarReport {
    pub mode: &'static str,
    pub server_url: String,
    pub oscar_addr: String,
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
    pub register_s: f64,
    pub sign_on_s: f64,
    pub sign_ons_per_s: f64,
    pub sign_on_latency: Option<LatencySummary>,
    pub sending_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub failed: u64,
    pub undelivered: u64,
    pub stale: u64,
    pub out_of_order: u64,
    pub disconnects: usize,
    pub first_disconnect: Option<String>,
    pub rate_warnings: u64,
    pub rate_limited: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub latency: Option<LatencySummary>,
    pub ack_latency: Option<LatencySummary>,
    pub memory: Option<MemoryReport>,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_cores: Option<f64>,
    pub server_exit: Option<String>,
}

impl OscarReport {
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.section("entente-bench oscar")
            .row(
                "server",
                format!("{} (OSCAR {})", self.server_url, self.oscar_addr),
            )
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
            .row("window (end to end)", self.window)
            .row(
                "rate per session",
                self.rate_per_session
                    .map_or("unpaced".to_string(), |r| PerSecond(r).to_string()),
            )
            .row(
                "limit",
                match self.messages_per_session {
                    Some(m) => format!(
                        "{} IMs per session or {}s",
                        Thousands(m),
                        self.duration_limit_s
                    ),
                    None => format!("{}s", self.duration_limit_s),
                },
            )
            .row("body", format!("{} bytes", self.body_bytes));
        t.section("sign-on")
            .row(
                "users",
                format!(
                    "{} created, {} existing, in {:.1}s",
                    self.users_created, self.users_existing, self.register_s
                ),
            )
            .row("all signed on in", format!("{:.2}s", self.sign_on_s))
            .row("sign-ons", PerSecond(self.sign_ons_per_s));
        if let Some(s) = &self.sign_on_latency {
            t.row("sign-on p50/p99/p99.9/max", s.percentiles_line());
        }
        t.section("IMs")
            .row("sending time", format!("{:.2}s", self.sending_s))
            .row("sent", Thousands(self.sent))
            .row("host acks", Thousands(self.acked))
            .row("delivered", Thousands(self.delivered))
            .row("refused (04,01)", Thousands(self.failed))
            .row("not received by the end", Thousands(self.undelivered))
            .row("out of order or repeated", Thousands(self.out_of_order))
            .row("stale (earlier runs)", Thousands(self.stale))
            .row(
                "rate warnings / limited (01,0A)",
                format!("{} / {}", self.rate_warnings, self.rate_limited),
            )
            .row("disconnects", self.disconnects);
        if let Some(reason) = &self.first_disconnect {
            t.row("first disconnect", reason);
        }
        t.section("throughput")
            .row("sent", PerSecond(self.sent_per_s))
            .row("delivered", PerSecond(self.delivered_per_s));
        t.section("latency (p50 / p99 / p99.9 / max)");
        match &self.latency {
            Some(s) => t.row("send → delivery", s.percentiles_line()),
            None => t.row("send → delivery", "no IM delivered"),
        };
        match &self.ack_latency {
            Some(s) => t.row("send → host ack", s.percentiles_line()),
            None => t.row("send → host ack", "no ack received"),
        };
        server_section(
            &mut t,
            &ServerLabels {
                before: "RSS before sign-on",
                connected: "RSS all signed on, idle",
                per: "per session",
                no_memory: "not measured (no server pid)",
                cpu: "CPU while sending",
            },
            self,
        );
        t
    }
}

/// Runs the OSCAR benchmark and prints its report.
pub async fn run(args: OscarArgs) -> Result<()> {
    let report = execute(&args).await?;
    crate::ws::print_report(&report, &report.table(), args.json.as_deref())
}

/// Runs the OSCAR benchmark and returns its report (printing only progress on stderr).
pub async fn execute(args: &OscarArgs) -> Result<OscarReport> {
    args.validate()?;
    let mut spawned = None;
    let (target, oscar_addr) = match (&args.url, &args.spawn) {
        (Some(url), _) => (
            HttpTarget::parse(url)?,
            args.oscar.ok_or_else(|| anyhow!("--url needs --oscar"))?,
        ),
        (None, Some(binary)) => {
            let settings = SpawnSettings {
                env: args.server_env.clone(),
                oscar: true,
                ..SpawnSettings::default()
            };
            let server = SpawnedServer::start(binary, &settings).await?;
            let oscar = *server
                .listeners
                .get("oscar")
                .ok_or_else(|| anyhow!("the server announced no OSCAR listener"))?;
            eprintln!(
                "started {} (pid {}) on {} (OSCAR {oscar}), data in {}",
                binary.display(),
                server.pid(),
                server.http.addr,
                server.dir().display()
            );
            let target = server.http;
            spawned = Some(server);
            (target, oscar)
        }
        (None, None) => bail!("give --url or --spawn"),
    };
    let pid = spawned.as_ref().map(|s| s.pid()).or(args.server_pid);
    let result = measure(args, target, oscar_addr, pid, &mut spawned).await;
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

async fn measure(
    args: &OscarArgs,
    target: HttpTarget,
    oscar_addr: SocketAddr,
    pid: Option<u32>,
    spawned: &mut Option<SpawnedServer>,
) -> Result<OscarReport> {
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
    // Let the allocator settle after the password hashing of the registrations.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = crate::ws::read_memory(pid)?;

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run: run_id,
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        disconnected: AtomicUsize::new(0),
        delivered_from: (0..n).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..n).map(|_| Notify::new()).collect(),
    });
    eprintln!("signing on {n} OSCAR sessions…");
    let (phase_tx, phase_rx) = watch::channel(Phase::SigningOn);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let (signed_tx, mut signed_rx) = mpsc::channel(n);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let sign_on_started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        // The session whose IMs session i receives.
        let sender = (0..n)
            .find(|&s| peer_of(args.pattern, s, n) == i)
            .unwrap_or(i);
        let plan = Plan {
            index: i,
            count: n,
            sender,
            user: args.user(i),
            password: args.password.clone(),
            peer: args.user(peer_of(args.pattern, i, n)),
            login_addr: oscar_addr,
            window: u64::from(args.window),
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
    let mut sign_on_latency = report::latency_histogram();
    let mut signed = 0;
    while signed < n {
        let failure = match signed_rx.recv().await {
            Some(Ok(us)) => {
                report::record_latency(&mut sign_on_latency, us);
                signed += 1;
                continue;
            }
            Some(Err(e)) => e,
            None => anyhow!("sessions ended before signing on"),
        };
        let _ = phase_tx.send(Phase::Finished);
        for task in &tasks {
            task.abort();
        }
        let tail = spawned.as_ref().map(|s| s.log_tail()).unwrap_or_default();
        return Err(failure.context(format!(
            "{signed} of {n} sessions had signed on when one failed{tail}"
        )));
    }
    let sign_on_s = sign_on_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let connected = crate::ws::read_memory(pid)?;

    eprintln!("all {n} sessions signed on in {sign_on_s:.2}s; sending…");
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
            || shared.senders_done.load(Ordering::Relaxed) >= n
            || shared.disconnected.load(Ordering::Relaxed) >= n
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
        let expected = shared
            .sent
            .load(Ordering::Relaxed)
            .saturating_sub(shared.failed.load(Ordering::Relaxed));
        if shared.delivered.load(Ordering::Relaxed) >= expected
            || Instant::now() >= drain_deadline
            || shared.disconnected.load(Ordering::Relaxed) >= n
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

    let mut total = Outcome::new();
    let mut disconnects = 0;
    let mut first_disconnect = None;
    let outcomes = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .map_err(|_| anyhow!("sessions did not close within 30s"))?;
    for outcome in outcomes {
        let o = outcome.context("a session task failed")?;
        total.latency.add(&o.latency).ok();
        total.ack_latency.add(&o.ack_latency).ok();
        total.sent += o.sent;
        total.acked += o.acked;
        total.delivered += o.delivered;
        total.failed += o.failed;
        total.stale += o.stale;
        total.out_of_order += o.out_of_order;
        for (code, count) in o.rate_changes {
            *total.rate_changes.entry(code).or_default() += count;
        }
        total.last_delivery_us = total.last_delivery_us.max(o.last_delivery_us);
        if let Some(reason) = o.disconnect {
            disconnects += 1;
            first_disconnect.get_or_insert(reason);
        }
    }
    let measured_s = (end - start).as_secs_f64();
    let cores = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if measured_s > 0.0 => Some((a - b) / measured_s),
        _ => None,
    };
    let delivered_per_s = match total.last_delivery_us {
        Some(last) if last > start_us && total.delivered > 0 => {
            total.delivered as f64 / ((last - start_us) as f64 / 1e6)
        }
        _ => 0.0,
    };
    Ok(OscarReport {
        mode: "oscar",
        server_url: format!("http://{}", target.addr),
        oscar_addr: oscar_addr.to_string(),
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
        rate_per_session: (args.rate > 0.0).then_some(args.rate),
        messages_per_session: args.messages,
        duration_limit_s: args.duration,
        body_bytes: args.body_size.max(encode_body(run_id, 0, 0, 0).len()),
        users_created: registered.created,
        users_existing: registered.existing,
        register_s: registered.seconds,
        sign_on_s,
        sign_ons_per_s: if sign_on_s > 0.0 {
            n as f64 / sign_on_s
        } else {
            0.0
        },
        sign_on_latency: LatencySummary::from_histogram(&sign_on_latency),
        sending_s,
        sent: total.sent,
        acked: total.acked,
        delivered: total.delivered,
        failed: total.failed,
        undelivered: total
            .sent
            .saturating_sub(total.failed)
            .saturating_sub(total.delivered),
        stale: total.stale,
        out_of_order: total.out_of_order,
        disconnects,
        first_disconnect,
        rate_warnings: total.rate_changes.get(&2).copied().unwrap_or(0),
        rate_limited: total.rate_changes.get(&3).copied().unwrap_or(0),
        sent_per_s: if sending_s > 0.0 {
            total.sent as f64 / sending_s
        } else {
            0.0
        },
        delivered_per_s,
        latency: LatencySummary::from_histogram(&total.latency),
        ack_latency: LatencySummary::from_histogram(&total.ack_latency),
        memory: match (before, connected, end_memory) {
            (Some(b), Some(c), Some(e)) => Some(MemoryReport::new(b, c, e, n)),
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
    use entente_oscar::UserInfo;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        oscar: OscarArgs,
    }

    fn args(extra: &[&str]) -> Result<OscarArgs, clap::Error> {
        let mut argv = vec!["entente-bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.oscar)
    }

    fn snac_frame<T: SnacBody>(body: &T) -> Flap {
        Flap {
            channel: Channel::Snac,
            seq: 1,
            payload: body.to_snac(7).to_bytes(),
        }
    }

    fn shared(run: u64, sessions: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            run,
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            disconnected: AtomicUsize::new(0),
            delivered_from: (0..sessions).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..sessions).map(|_| Notify::new()).collect(),
        }
    }

    #[test]
    fn an_im_to_the_host_carries_text_cookie_and_ack_request() {
        let body = encode_body(0xabc, 41, 1_000, 64);
        let im = im_to_host("bench1", &body, 41);
        let bytes = im.to_snac(3).to_bytes();
        let snac = Snac::decode(&bytes).unwrap();
        assert_eq!(snac.kind(), (0x04, 0x06));
        let decoded: icbm::ChannelMsgToHost = snac.body_as().unwrap();
        assert_eq!(decoded.screen_name, "bench1");
        assert_eq!(decoded.channel, 1);
        assert!(decoded.wants_host_ack());
        assert_eq!(u64::from_be_bytes(decoded.cookie), 41);
        assert_eq!(decoded.message().unwrap().text().unwrap(), body);
    }

    #[test]
    fn server_frames_are_classified() {
        let body = encode_body(5, 0, 10, 40);
        let im = icbm::ChannelMsgToClient::text([0; 8], UserInfo::name_only("bench0"), &body);
        assert_eq!(classify(&snac_frame(&im)), Seen::Im(body));
        let ack = icbm::HostAck {
            cookie: 9u64.to_be_bytes(),
            channel: 1,
            screen_name: "bench1".into(),
        };
        assert_eq!(classify(&snac_frame(&ack)), Seen::HostAck(9));
        let signoff = Flap {
            channel: Channel::SignOff,
            seq: 2,
            payload: Bytes::new(),
        };
        assert_eq!(classify(&signoff), Seen::SignedOff);
        assert_eq!(
            classify(&snac_frame(&oservice::RateParamsQuery)),
            Seen::Other
        );
        // Truncated or garbage SNACs are unreadable, never a panic.
        let im_bytes = im.to_snac(1).to_bytes();
        for cut in [0, 3, 10, 12, im_bytes.len() - 1] {
            let frame = Flap {
                channel: Channel::Snac,
                seq: 3,
                payload: im_bytes.slice(..cut),
            };
            let seen = classify(&frame);
            assert!(
                matches!(seen, Seen::Unreadable | Seen::Im(_)),
                "cut {cut}: {seen:?}"
            );
        }
        let garbage = Flap {
            channel: Channel::Snac,
            seq: 4,
            payload: Bytes::from_static(&[0, 0x04, 0, 0x07, 0, 0, 0, 0, 0, 1, 0xff]),
        };
        assert_eq!(classify(&garbage), Seen::Unreadable);
    }

    #[test]
    fn ims_update_counters_and_wake_the_sender() {
        let shared = shared(7, 3);
        let mut out = Outcome::new();
        assert!(on_im(&encode_body(7, 0, 0, 0), &shared, 2, &mut out));
        assert!(on_im(&encode_body(7, 1, 0, 0), &shared, 2, &mut out));
        assert!(on_im(&encode_body(7, 1, 0, 0), &shared, 2, &mut out));
        assert!(!on_im(&encode_body(6, 5, 0, 0), &shared, 2, &mut out));
        assert!(!on_im("hello", &shared, 2, &mut out));
        // A sender index out of range is counted but wakes nobody.
        assert!(on_im(&encode_body(7, 2, 0, 0), &shared, 99, &mut out));
        assert_eq!(out.delivered, 4);
        assert_eq!(out.out_of_order, 1);
        assert_eq!(out.stale, 2);
        assert_eq!(out.latency.len(), 4);
        assert_eq!(shared.delivered_from[2].load(Ordering::Relaxed), 3);
        assert_eq!(shared.delivered_from[0].load(Ordering::Relaxed), 0);
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn arguments_are_bounded() {
        assert!(args(&["--spawn", "x"]).unwrap().validate().is_ok());
        assert!(args(&[
            "--url",
            "http://127.0.0.1:1",
            "--oscar",
            "127.0.0.1:5190",
            "--server-pid",
            "4"
        ])
        .unwrap()
        .validate()
        .is_ok());
        // --url needs --oscar; one of --url and --spawn.
        assert!(args(&["--url", "http://127.0.0.1:1"]).is_err());
        assert!(args(&[]).is_err());
        assert!(
            args(&["--url", "http://127.0.0.1:1", "--oscar", "10.0.0.1:5190"])
                .unwrap()
                .validate()
                .is_err()
        );
        for bad in [
            &["--sessions", "1"][..],
            &["--sessions", "3"],
            &["--sessions", "20002"],
            &["--duration", "0"],
            &["--messages", "0"],
            &["--window", "0"],
            &["--rate=-1"],
            &["--rate", "NaN"],
            &["--body-size", "5000"],
            &["--user-prefix", "averyveryverylongprefix"],
            &["--user-prefix", "Bench"],
            &["--password", ""],
            &["--connect-concurrency", "0"],
        ] {
            let mut argv = vec!["--spawn", "x"];
            argv.extend_from_slice(bad);
            assert!(args(&argv).unwrap().validate().is_err(), "{bad:?} accepted");
        }
        let ring = args(&[
            "--spawn",
            "x",
            "--sessions",
            "3",
            "--pattern",
            "ring",
            "--rate",
            "0",
        ])
        .unwrap();
        assert!(ring.validate().is_ok());
    }

    #[tokio::test]
    async fn sign_on_refuses_other_hosts_and_reports_a_closed_server() {
        assert!(OscarClient::connect("192.0.2.1:5190".parse().unwrap())
            .await
            .is_err());
        // A server that closes at once: an error, not a hang or a panic.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        match sign_on(addr, "bench0", "pw").await {
            Err(SignOnError::Other(_)) => {}
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => panic!("signed on against a closed socket"),
        }
    }

    #[tokio::test]
    async fn hostile_frames_during_sign_on_are_errors() {
        // A length field beyond the payload limit; something that is not FLAP at all.
        let hostile: [&'static [u8]; 2] =
            [&[0x2A, 2, 0, 1, 0xFF, 0xFF], b"HTTP/1.1 400 Bad\r\n\r\n"];
        for bytes in hostile {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.write_all(bytes).await;
                let _ = s.write_all(&[0u8; 1024]).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
            let result =
                tokio::time::timeout(Duration::from_secs(20), sign_on(addr, "bench0", "pw"))
                    .await
                    .expect("the client gives up on its own");
            assert!(matches!(result, Err(SignOnError::Other(_))));
        }
    }
}

impl crate::report::ServerFigures for OscarReport {
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
