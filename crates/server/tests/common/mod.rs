//! Test harness: runs the real `entente` binary on loopback with its own data directory and
//! talks to it over the hub client protocol.
#![allow(dead_code)]

pub mod dns;
pub mod oscar;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a test waits for something that should happen before it fails (not a performance bound).
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Option<Child>,
    pub http: SocketAddr,
    /// Every listener the server printed, by name.
    pub listeners: std::collections::HashMap<String, SocketAddr>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: String,
    listen: String,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_entente")
}

/// The test configuration: `extra` is appended, and replaces the default `[hub]` or `[limits]`
/// table when it has its own.
fn config_text(dir: &Path, extra: &str, listen: &str) -> String {
    let mut text = String::new();
    if !extra.contains("[hub]") {
        text.push_str("[hub]\ndomain = \"hub.test\"\nregistration = \"open\"\n");
    }
    text.push_str(&format!(
        "[storage]\ndata_dir = \"{}\"\n[listen]\nhttp = \"127.0.0.1:0\"\n{listen}",
        dir.join("data").display()
    ));
    if !extra.contains("[limits]") {
        text.push_str("[limits]\nconnection_rate = 200.0\nconnection_burst = 400\n");
    }
    text.push_str(extra);
    text
}

impl Server {
    /// Starts a server; `extra` is appended to the test configuration.
    pub fn start(extra: &str) -> Server {
        Server::start_listening(extra, "")
    }

    /// Starts a server with more listeners (`listen` holds `name = "127.0.0.1:0"` lines).
    pub fn start_listening(extra: &str, listen: &str) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server {
            child: None,
            http: "127.0.0.1:1".parse().unwrap(),
            listeners: Default::default(),
            dir,
            _tmp: Some(tmp),
            extra: extra.into(),
            listen: listen.into(),
        };
        s.launch();
        s
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("entente.toml")
    }

    fn launch(&mut self) {
        std::fs::write(
            self.config_path(),
            config_text(&self.dir, &self.extra, &self.listen),
        )
        .unwrap();
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env(
                "ENTENTE_LOG",
                std::env::var("ENTENTE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start entente");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        self.listeners.clear();
        let expected = 1 + self.listen.lines().filter(|l| l.contains('=')).count();
        while self.listeners.len() < expected {
            let line = lines
                .next()
                .expect("entente exited before listening")
                .unwrap();
            if let Some((name, addr)) = line
                .strip_prefix("listening ")
                .and_then(|r| r.split_once(' '))
            {
                self.listeners
                    .insert(name.to_string(), addr.trim().parse().unwrap());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.http = self.listeners["http"];
        self.child = Some(child);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        child.wait().unwrap()
    }

    /// SIGKILL: no chance to drain.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.launch();
    }

    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env("ENTENTE_CONFIG", self.config_path())
            .env("ENTENTE_LOG", "warn");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// A plain HTTP request; returns (status, body).
    pub async fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.http_with(method, path, body, "").await
    }

    /// As [`Server::http`], with extra header lines (each ending in `\r\n`).
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &str,
    ) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.http).await.unwrap();
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
            self.http,
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut resp))
            .await
            .unwrap()
            .unwrap();
        let resp = String::from_utf8_lossy(&resp).to_string();
        let status = resp.split(' ').nth(1).unwrap_or("0").parse().unwrap();
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub async fn register(&self, user: &str, password: &str) -> u16 {
        let body = json!({"user": user, "password": password}).to_string();
        self.http("POST", "/api/v1/register", Some(&body)).await.0
    }

    pub async fn connect(&self) -> Client {
        let url = format!("ws://{}/api/v1/ws", self.http);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        Client { ws }
    }

    /// Registers (if needed) and signs in; returns the client after `welcome`.
    pub async fn login(&self, user: &str) -> Client {
        let status = self.register(user, "password1").await;
        assert!(status == 201 || status == 409, "register {user}: {status}");
        let mut c = self.connect().await;
        c.send(json!({"type": "login", "user": user, "password": "password1"}))
            .await;
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(WsMessage::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame; panics when none comes in time or the socket closes.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(PATIENCE).await.expect("a frame in time")
    }

    /// The next JSON frame, or `None` on close or when nothing arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match m {
                WsMessage::Text(t) => return Some(serde_json::from_str(&t).expect("JSON frame")),
                WsMessage::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Skips frames until one matches; panics if none does in time.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(v) if pred(&v) => return v,
                Some(v) => seen.push(v),
                None => panic!("no frame matching {what}; saw {seen:?}"),
            }
        }
    }

    pub async fn expect_type(&mut self, ty: &str) -> Value {
        self.expect(ty, |v| v["type"] == ty).await
    }

    /// True when the server closes the socket (within the patience window).
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(WsMessage::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Sends a message and returns the server's answer (`ack` or `error`) for its id.
    pub async fn message(&mut self, id: &str, to: &str, body: &str) -> Value {
        self.send(json!({"type": "message", "id": id, "to": to, "body": body}))
            .await;
        self.expect(&format!("answer to {id}"), |v| {
            v["id"] == id && (v["type"] == "ack" || v["type"] == "error")
        })
        .await
    }

    /// Makes `self` (user a) and `other` (user b) see each other's presence.
    pub async fn befriend(&mut self, a: &str, other: &mut Client, b: &str) {
        self.send(json!({"type": "subscribe", "to": b})).await;
        other
            .expect("request", |v| {
                v["type"] == "subscription_request" && v["from"] == a
            })
            .await;
        other.send(json!({"type": "approve", "to": a})).await;
        self.expect("subscribed", |v| {
            v["type"] == "subscribed" && v["from"] == b
        })
        .await;
        other.send(json!({"type": "subscribe", "to": a})).await;
        self.expect("request", |v| {
            v["type"] == "subscription_request" && v["from"] == b
        })
        .await;
        self.send(json!({"type": "approve", "to": b})).await;
        other
            .expect("subscribed", |v| {
                v["type"] == "subscribed" && v["from"] == a
            })
            .await;
    }
}
