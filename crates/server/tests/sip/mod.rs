//! Helpers for the SIP tests: the real peers (sipp, baresip) run from their scenario files and
//! templates in this folder, free loopback ports, and a raw SIP client for hostile input.
#![allow(dead_code)]

use entente_sip::wire::{SipParser, StreamDecoder};
use entente_sip::{SipMessage, SipxParser};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HUB: &str = "hub.test";
pub const PARTNER: &str = "corp-b.test";

/// Fails the test, loudly, when a peer program is missing (scripts/test.sh installs them).
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed: install the Debian package `{package}` \
         (scripts/test.sh does) to run the SIP interop tests"
    );
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// `[[partner]]` for the SIP partner domain.
pub fn partner_toml(domain: &str, address: Option<SocketAddr>, auth: &str) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!("[[partner]]\ndomain = \"{domain}\"\nprotocol = \"sip\"\n{address}auth = \"{auth}\"\n")
}

pub fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sip")
}

/// A scenario from this folder with its `@NAME@` placeholders filled in, written to `dir`.
pub fn scenario(dir: &Path, name: &str, fill: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(here().join(name)).unwrap();
    for (k, v) in fill {
        text = text.replace(&format!("@{k}@"), v);
    }
    assert!(
        !text.contains("@HUB@") && !text.contains("@BODY@"),
        "unfilled placeholder in {name}"
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A running sipp.
pub struct Sipp {
    child: tokio::process::Child,
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// How long sipp may run before it gives up by itself (a failure, not a performance bound).
pub const SIPP_TIMEOUT: &str = "60s";

impl Sipp {
    /// Starts sipp with `scenario` and extra arguments, in its own directory for logs.
    pub fn start(dir: tempfile::TempDir, scenario: &Path, args: &[&str]) -> Sipp {
        require("sipp", "sip-tester");
        let mut cmd = tokio::process::Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg("-sf")
            .arg(scenario)
            .args(args)
            .args([
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                SIPP_TIMEOUT,
                "-timeout_error",
                "-trace_msg",
                "-trace_err",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start sipp");
        Sipp {
            child,
            dir,
            name: scenario
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        }
    }

    /// A UAC towards the gateway, from a port of its own (sipp's `-p 0` means 5060).
    pub fn client(
        dir: tempfile::TempDir,
        scenario: &Path,
        gateway: SocketAddr,
        transport: &str,
        user: &str,
    ) -> Sipp {
        let target = gateway.to_string();
        let port = free_port().to_string();
        Sipp::start(
            dir,
            scenario,
            &[
                &target,
                "-s",
                user,
                "-t",
                transport,
                "-i",
                "127.0.0.1",
                "-p",
                &port,
            ],
        )
    }

    /// Waits for sipp to finish; panics with its logs unless it passed.
    pub async fn passes(mut self) {
        let status = self.child.wait().await.expect("sipp wait");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr).await;
        }
        if !status.success() {
            panic!(
                "sipp {} failed ({status}): {stderr}\n{}",
                self.name,
                self.logs()
            );
        }
    }

    /// Every log sipp wrote (messages exchanged, errors).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    out.push_str(&format!("==== {}\n", p.display()));
                    out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
        out
    }
}

/// Runs a UAC scenario against the gateway and checks it passes.
pub async fn sipp_uac(
    gateway: SocketAddr,
    transport: &str,
    name: &str,
    fill: &[(&str, &str)],
    user: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(dir.path(), name, fill);
    Sipp::client(dir, &path, gateway, transport, user)
        .passes()
        .await;
}

// ----- a raw SIP client ---------------------------------------------------------------------

pub fn parse(bytes: &[u8]) -> SipMessage {
    SipxParser::default()
        .parse_datagram(bytes)
        .unwrap_or_else(|e| {
            panic!(
                "unparseable answer ({e}): {}",
                String::from_utf8_lossy(bytes)
            )
        })
}

/// A request from `from_user@from_domain` to `to` with a fresh branch and Call-ID.
pub fn request(method: &str, to: &str, from: &str, via: &str, extra: &str, body: &str) -> Vec<u8> {
    let id: u64 = rand::random();
    format!(
        "{method} sip:{to} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK{id:x}\r\nMax-Forwards: 70\r\nFrom: <sip:{from}>;tag=f{id:x}\r\nTo: <sip:{to}>\r\nCall-ID: {id:x}@test\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A UDP socket on loopback speaking to the gateway.
pub struct UdpPeer {
    pub socket: tokio::net::UdpSocket,
    pub gateway: SocketAddr,
}

impl UdpPeer {
    pub async fn new(gateway: SocketAddr) -> UdpPeer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        UdpPeer { socket, gateway }
    }

    pub fn via(&self) -> String {
        format!("UDP {}", self.socket.local_addr().unwrap())
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.gateway).await.unwrap();
    }

    /// The next datagram, within `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<SipMessage> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(parse(&buf[..n]))
    }

    /// The next final response, skipping provisional ones and requests.
    pub async fn final_response(&self, wait: Duration) -> Option<SipMessage> {
        loop {
            let m = self.recv(wait).await?;
            if m.status().is_some_and(|s| s >= 200) {
                return Some(m);
            }
        }
    }
}

/// A TCP connection to the gateway with its own framer.
pub struct TcpPeer {
    pub stream: tokio::net::TcpStream,
    framer: entente_sip::StreamFramer,
    pending: Vec<SipMessage>,
}

impl TcpPeer {
    pub async fn connect(gateway: SocketAddr) -> TcpPeer {
        let stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
        TcpPeer {
            stream,
            framer: entente_sip::StreamFramer::new(Default::default()),
            pending: Vec::new(),
        }
    }

    pub fn via(&self) -> String {
        format!("TCP {}", self.stream.local_addr().unwrap())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next message, or `None` when the connection closes or nothing comes within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<SipMessage> {
        let mut buf = vec![0u8; 16_384];
        loop {
            if !self.pending.is_empty() {
                return Some(self.pending.remove(0));
            }
            let n = tokio::time::timeout(wait, self.stream.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.pending.extend(
                self.framer
                    .push(&buf[..n])
                    .expect("the gateway frames correctly"),
            );
        }
    }

    /// True when the gateway closes the connection within `wait`.
    pub async fn closed(&mut self, wait: Duration) -> bool {
        let mut buf = vec![0u8; 16_384];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

// ----- certificates ----------------------------------------------------------------------

/// A test CA and leaf certificates it issues, as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `domain`: (certificate, key) paths.
    pub fn leaf(&self, domain: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![domain.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let c = self.dir.path().join(format!("{domain}.pem"));
        let k = self.dir.path().join(format!("{domain}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

impl Pki {
    /// A leaf for `domain` as one PEM file holding the certificate and then its key (baresip's
    /// `sip_certificate`).
    pub fn leaf_with_key(&self, domain: &str) -> PathBuf {
        let (c, k) = self.leaf(domain);
        let both = self.dir.path().join(format!("{domain}.both.pem"));
        let text = std::fs::read_to_string(c).unwrap() + &std::fs::read_to_string(k).unwrap();
        std::fs::write(&both, text).unwrap();
        both
    }
}

// ----- baresip ------------------------------------------------------------------------------

/// A running baresip (Debian `baresip-core`) with the configuration from `baresip/`, its SIP
/// trace (`-s`) in a log file, and its ctrl_tcp port to command it.
pub struct Baresip {
    child: tokio::process::Child,
    pub dir: tempfile::TempDir,
    ctrl: tokio::net::TcpStream,
    token: u32,
}

impl Baresip {
    /// `transport` is `udp` or `tcp`; `gateway` the hub's `sip` listener (the outbound proxy).
    pub async fn start(sip_port: u16, gateway: SocketAddr, transport: &str) -> Baresip {
        Baresip::start_with(sip_port, gateway, transport, "").await
    }

    /// As [`Baresip::start`], with more configuration lines (`sip_certificate`, `sip_cafile`).
    /// Over TLS, baresip listens on `sip_port + 1`.
    pub async fn start_with(
        sip_port: u16,
        gateway: SocketAddr,
        transport: &str,
        extra: &str,
    ) -> Baresip {
        require("baresip", "baresip-core");
        let dir = tempfile::tempdir().unwrap();
        let ctrl_port = free_port();
        let fill = [
            ("SIP_PORT", sip_port.to_string()),
            ("CTRL_PORT", ctrl_port.to_string()),
            ("GATEWAY", gateway.to_string()),
            ("TRANSPORT", transport.to_string()),
            ("EXTRA", extra.to_string()),
        ];
        for name in ["config", "accounts", "contacts", "current_contact"] {
            let mut text = std::fs::read_to_string(here().join("baresip").join(name)).unwrap();
            for (k, v) in &fill {
                text = text.replace(&format!("@{k}@"), v);
            }
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let child = tokio::process::Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start baresip");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let ctrl = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", ctrl_port)).await {
                Ok(s) => break s,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!(
                    "baresip's ctrl_tcp never opened ({e}); log:\n{}",
                    std::fs::read_to_string(dir.path().join("baresip.log")).unwrap_or_default()
                ),
            }
        };
        Baresip {
            child,
            dir,
            ctrl,
            token: 0,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Waits until the log satisfies `pred`; panics with the log when it does not in time.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if pred(&log) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("baresip never showed {what}; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a ctrl_tcp command (JSON in a netstring), as typed at its prompt.
    pub async fn command(&mut self, command: &str, params: &str) {
        self.token += 1;
        let json = serde_json::json!({"command": command, "params": params, "token": self.token.to_string()})
            .to_string();
        let frame = format!("{}:{json},", json.len());
        self.ctrl.write_all(frame.as_bytes()).await.unwrap();
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
