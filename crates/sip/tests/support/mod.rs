//! Shared test helpers: a deterministic two-peer network with a virtual clock, and an
//! independent reference parser used to cross-check the production one.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use entente_model::{Address, DomainKind, Event};
use entente_sip::{Config, ConnectionId, Destination, Endpoint, Transmit, Transport};
use time::OffsetDateTime;

pub fn addr(s: &str) -> Address {
    Address::parse(s)
        .unwrap()
        .normalize(DomainKind::Sip)
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// One datagram or stream write seen on the virtual link.
#[derive(Debug, Clone)]
pub struct Packet {
    pub from: Side,
    pub at: Duration,
    pub text: String,
    pub dropped: bool,
}

impl Packet {
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
}

type DropRule = Box<dyn FnMut(&Packet) -> bool>;

/// Endpoint A (`hub.test`, 127.0.0.1:5060) and endpoint B (`corp-b.test`, 127.0.0.2:5060)
/// wired through a virtual link that can lose packets, driven by a virtual clock.
pub struct Net {
    pub a: Endpoint,
    pub b: Endpoint,
    pub t0: Instant,
    pub now: Instant,
    pub transport: Transport,
    pub drop: DropRule,
    pub log: Vec<Packet>,
    pub events_a: Vec<Event>,
    pub events_b: Vec<Event>,
}

pub const ADDR_A: &str = "127.0.0.1:5060";
pub const ADDR_B: &str = "127.0.0.2:5060";

pub fn config(host: &str, domain: &str, transport: Transport) -> Config {
    Config {
        local_host: host.into(),
        local_port: Some(5060),
        local_domains: vec![domain.into()],
        default_transport: transport,
        instance: format!("{}x", &domain[..1]),
        ..Config::default()
    }
}

impl Net {
    pub fn new(transport: Transport) -> Net {
        Net::with_configs(
            config("127.0.0.1", "hub.test", transport),
            config("127.0.0.2", "corp-b.test", transport),
            transport,
        )
    }

    pub fn with_configs(a: Config, b: Config, transport: Transport) -> Net {
        let t0 = Instant::now();
        let wall = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        Net {
            a: Endpoint::new(a, t0, wall),
            b: Endpoint::new(b, t0, wall),
            t0,
            now: t0,
            transport,
            drop: Box::new(|_| false),
            log: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
        }
    }

    fn target_of(&self, from: Side, d: &Destination) -> Side {
        let to_b = match d {
            Destination::Datagram(a) => *a == ADDR_B.parse::<SocketAddr>().unwrap(),
            Destination::Resolve { host, .. } => host == "corp-b.test" || host == "127.0.0.2",
            // A connection id is the id the receiving side gave it; here a connection always
            // leads to the other side.
            Destination::Connection(_) => from == Side::A,
        };
        if to_b {
            Side::B
        } else {
            Side::A
        }
    }

    /// Delivers every queued transmission (and those they cause) until both sides are quiet.
    pub fn flush(&mut self) {
        for _ in 0..10_000 {
            let (from, t) = match self.a.poll_transmit() {
                Some(t) => (Side::A, t),
                None => match self.b.poll_transmit() {
                    Some(t) => (Side::B, t),
                    None => break,
                },
            };
            self.deliver(from, t);
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    fn deliver(&mut self, from: Side, t: Transmit) {
        let to = self.target_of(from, &t.destination);
        assert_ne!(to, from, "a side sent to itself: {:?}", t.destination);
        let mut packet = Packet {
            from,
            at: self.now - self.t0,
            text: String::from_utf8_lossy(&t.payload).into_owned(),
            dropped: false,
        };
        packet.dropped = (self.drop)(&packet);
        self.log.push(packet.clone());
        if packet.dropped {
            return;
        }
        let (ep, src) = match to {
            Side::A => (&mut self.a, ADDR_B),
            Side::B => (&mut self.b, ADDR_A),
        };
        let r = match self.transport {
            Transport::Udp => ep.handle_datagram(src.parse().unwrap(), &t.payload, self.now),
            tr => ep.handle_stream_bytes(ConnectionId(1), tr, &t.payload, self.now),
        };
        r.unwrap_or_else(|e| panic!("{to:?} refused what {from:?} sent: {e}\n{}", packet.text));
    }

    pub fn send(&mut self, side: Side, event: Event) {
        let now = self.now;
        match side {
            Side::A => self.a.send(event, now).unwrap(),
            Side::B => self.b.send(event, now).unwrap(),
        }
        self.flush();
    }

    /// Advances the virtual clock by `d`, firing every timer on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.flush();
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.a.handle_timeout(now);
                    self.b.handle_timeout(now);
                    self.flush();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    pub fn sent(&self, from: Side, first_line_prefix: &str) -> Vec<&Packet> {
        self.log
            .iter()
            .filter(|p| p.from == from && p.first_line().starts_with(first_line_prefix))
            .collect()
    }
}

/// Start line, headers (lower-cased long names, unfolded values) and body.
pub type Parsed = (String, Vec<(String, String)>, Vec<u8>);

/// A deliberately simple second parser (RFC 3261 §7 read literally) to cross-check the
/// production parser on fixtures: start line, unfolded headers with compact names expanded,
/// body by Content-Length or to the end.
pub fn reference_parse(data: &[u8]) -> Option<Parsed> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..end]).ok()?;
    let rest = &data[end + 4..];
    let mut lines = head.split("\r\n");
    let start = lines.next()?.to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = headers.last_mut()?;
            last.1 = format!("{} {}", last.1, line.trim());
            continue;
        }
        let (k, v) = line.split_once(':')?;
        let k = k.trim();
        let long = match k.to_ascii_lowercase().as_str() {
            "v" => "via",
            "f" => "from",
            "t" => "to",
            "i" => "call-id",
            "m" => "contact",
            "l" => "content-length",
            "c" => "content-type",
            "o" => "event",
            "k" => "supported",
            "s" => "subject",
            "u" => "allow-events",
            other => other,
        }
        .to_string();
        headers.push((long.to_ascii_lowercase(), v.trim().to_string()));
    }
    let body = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => rest.get(..v.parse::<usize>().ok()?)?.to_vec(),
        None => rest.to_vec(),
    };
    headers.retain(|(k, _)| k != "content-length");
    Some((start, headers, body))
}
