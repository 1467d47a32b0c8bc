//! A minimal blocking driver for trying the s2s machines against a real XMPP server over loopback.
//! Plaintext only (no TLS, so dialback authenticates every pair): for interop checks, never for
//! production. The real driver (tokio, rustls, DNS) lives in the server.
//!
//! It listens as `--domain` (default hub.test) on `--listen`, accepts streams from the peer,
//! checks their dialback keys by asking the peer at `--peer-addr` with `db:verify`, prints every
//! event it receives, and answers each message with an echo on its own outbound stream (which the
//! peer in turn verifies by connecting back). It exits 0 once `--messages` echoes were accepted.
//!
//! cargo run -p entente-xmpp --example s2s_peer -- --listen 127.0.0.1:5269 --peer corp-a.test \
//!     --peer-addr 127.0.0.1:5270 --messages 1

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_model::{Address, DomainKind, Event, Message};
use entente_xmpp::{Config, DialbackRequest, Inbound, Outbound, Output};

struct Args {
    listen: String,
    domain: String,
    peer: String,
    peer_addr: String,
    messages: usize,
    timeout: Duration,
}

fn args() -> Args {
    let mut a = Args {
        listen: "127.0.0.1:5269".into(),
        domain: "hub.test".into(),
        peer: "corp-a.test".into(),
        peer_addr: "127.0.0.1:5270".into(),
        messages: 1,
        timeout: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--listen" => a.listen = value,
            "--domain" => a.domain = value,
            "--peer" => a.peer = value,
            "--peer-addr" => a.peer_addr = value,
            "--messages" => a.messages = value.parse().unwrap_or(1),
            "--timeout" => a.timeout = Duration::from_secs(value.parse().unwrap_or(60)),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn log(tag: &str, what: &str) {
    println!("[{tag}] {what}");
}

/// The calls a driver makes, common to both machines.
trait Machine {
    fn input(&mut self, bytes: &[u8], now: Instant);
    fn eof(&mut self, now: Instant);
    fn transmit(&mut self) -> Option<Vec<u8>>;
    fn event(&mut self) -> Option<Output>;
    fn timeout(&self) -> Option<Instant>;
    fn on_timeout(&mut self, now: Instant);
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn input(&mut self, bytes: &[u8], now: Instant) {
                self.handle_input(bytes, now)
            }
            fn eof(&mut self, now: Instant) {
                self.handle_eof(now)
            }
            fn transmit(&mut self) -> Option<Vec<u8>> {
                self.poll_transmit()
            }
            fn event(&mut self) -> Option<Output> {
                self.poll_event()
            }
            fn timeout(&self) -> Option<Instant> {
                self.poll_timeout()
            }
            fn on_timeout(&mut self, now: Instant) {
                self.handle_timeout(now)
            }
        }
    };
}
machine!(Inbound);
machine!(Outbound);

/// Runs `m` on `sock`, calling `on_output` for each output; stops when it returns false or the
/// stream closes.
fn drive<M: Machine>(
    m: &mut M,
    sock: &mut TcpStream,
    tag: &str,
    mut on_output: impl FnMut(&mut M, Output) -> bool,
) {
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(bytes) = m.transmit() {
            log(tag, &format!(">>> {}", String::from_utf8_lossy(&bytes)));
            if sock.write_all(&bytes).is_err() {
                return;
            }
        }
        while let Some(o) = m.event() {
            let closed = matches!(o, Output::Closed(_));
            log(tag, &format!("output {o:?}"));
            if !on_output(m, o) {
                while let Some(bytes) = m.transmit() {
                    let _ = sock.write_all(&bytes);
                }
                return;
            }
            if closed {
                while let Some(bytes) = m.transmit() {
                    let _ = sock.write_all(&bytes);
                }
                return;
            }
        }
        match sock.read(&mut buf) {
            Ok(0) => m.eof(Instant::now()),
            Ok(n) => {
                let bytes = buf.get(..n).unwrap_or(&[]);
                log(tag, &format!("<<< {}", String::from_utf8_lossy(bytes)));
                m.input(bytes, Instant::now());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => m.eof(Instant::now()),
        }
        let now = Instant::now();
        if m.timeout().is_some_and(|t| now >= t) {
            m.on_timeout(now);
        }
    }
}

/// Asks the authoritative server at `addr` whether `request` carries a genuine key.
fn verify(cfg: &Arc<Config>, addr: &str, request: DialbackRequest) -> bool {
    let Ok(mut sock) = TcpStream::connect(addr) else {
        return false;
    };
    let mut out = Outbound::new(
        cfg.clone(),
        &request.receiving,
        &request.originating,
        Instant::now(),
    );
    out.verify_dialback(request, Instant::now());
    let mut verdict = false;
    drive(&mut out, &mut sock, "verify", |m, o| match o {
        Output::DialbackVerified { valid, .. } => {
            verdict = valid;
            m.close(Instant::now());
            true
        }
        _ => true,
    });
    verdict
}

fn main() {
    let a = args();
    let mut served = BTreeMap::new();
    served.insert(a.domain.clone(), DomainKind::Hub);
    let mut cfg = Config::new(served, b"example secret, not for production".to_vec());
    cfg.require_tls = false;
    cfg.offer_tls = false;
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind(&a.listen).expect("bind");
    log("main", &format!("{} listening on {}", a.domain, a.listen));
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    {
        let cfg = cfg.clone();
        let peer_addr = a.peer_addr.clone();
        std::thread::spawn(move || {
            for (n, sock) in listener.incoming().enumerate() {
                let Ok(mut sock) = sock else { continue };
                let cfg = cfg.clone();
                let peer_addr = peer_addr.clone();
                let events_tx = events_tx.clone();
                std::thread::spawn(move || {
                    let tag = format!("in{n}");
                    let mut inb = Inbound::new(cfg.clone(), Instant::now());
                    drive(&mut inb, &mut sock, &tag, |m, o| {
                        match o {
                            Output::VerifyDialback(request) => {
                                let valid = verify(&cfg, &peer_addr, request.clone());
                                m.dialback_verified(&request, valid, Instant::now());
                            }
                            Output::Event(e) => {
                                let _ = events_tx.send(e);
                            }
                            _ => {}
                        }
                        true
                    });
                });
            }
        });
    }
    let deadline = Instant::now() + a.timeout;
    let mut echoed = 0;
    while echoed < a.messages {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = events_rx.recv_timeout(left) else {
            log("main", "timed out");
            std::process::exit(1);
        };
        log("main", &format!("EVENT {event:?}"));
        let Event::Message(m) = event else { continue };
        let echo = Event::Message(Message {
            id: format!("echo-{}", m.id),
            from: Address::new(m.to.local(), m.to.domain(), DomainKind::Hub).expect("address"),
            to: m.from.clone(),
            body: format!("echo: {}", m.body),
            thread: m.thread.clone(),
            ts: m.ts,
        });
        let mut sock = TcpStream::connect(&a.peer_addr).expect("connect to peer");
        let mut out = Outbound::new(cfg.clone(), &a.domain, &a.peer, Instant::now());
        out.send(echo, Instant::now()).expect("send");
        let mut accepted = false;
        drive(&mut out, &mut sock, "out", |m, o| match o {
            Output::Authorised(_) => {
                accepted = true;
                // Give the peer the stanza, then close politely.
                m.close(Instant::now());
                true
            }
            Output::Refused { .. } => false,
            _ => true,
        });
        if !accepted {
            log("main", "echo refused");
            std::process::exit(1);
        }
        echoed += 1;
        log("main", &format!("ECHO ACCEPTED {echoed}"));
    }
}
