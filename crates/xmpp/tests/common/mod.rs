//! A deterministic two-gateway harness: gateway A (hub.test) and gateway B (corp-a.test), each
//! with one outbound stream to the other, wired through memory and a virtual clock. TLS is
//! simulated: when both ends of a link asked for it, the harness reports the handshake as done
//! with the certificate identities the test chose, and bytes keep flowing in plaintext.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_model::{DomainKind, Event};
use entente_xmpp::{Config, Inbound, Outbound, Output};

pub const A: &str = "hub.test";
pub const B: &str = "corp-a.test";

pub fn config(domain: &str, kind: DomainKind, secret: &[u8]) -> Arc<Config> {
    let mut served = BTreeMap::new();
    served.insert(domain.to_string(), kind);
    let mut cfg = Config::new(served, secret.to_vec());
    cfg.wall_clock = || time::OffsetDateTime::UNIX_EPOCH;
    Arc::new(cfg)
}

/// One connection: `out` at one gateway, `inb` at the other.
pub struct Link {
    pub out: Outbound,
    pub inb: Inbound,
    /// Identities the inbound side's TLS layer verified for the outbound side's certificate.
    pub out_cert: Vec<String>,
    out_tls: bool,
    in_tls: bool,
    /// Everything each side wrote, for inspection.
    pub out_wire: Vec<u8>,
    pub in_wire: Vec<u8>,
    pub out_outputs: Vec<Output>,
    pub in_outputs: Vec<Output>,
}

impl Link {
    fn new(out: Outbound, inb: Inbound, out_cert: Vec<String>) -> Link {
        Link {
            out,
            inb,
            out_cert,
            out_tls: false,
            in_tls: false,
            out_wire: Vec::new(),
            in_wire: Vec::new(),
            out_outputs: Vec::new(),
            in_outputs: Vec::new(),
        }
    }
}

pub struct Harness {
    pub start: Instant,
    pub now: Instant,
    /// A's outbound stream to B (A.out, B.in).
    pub ab: Link,
    /// B's outbound stream to A (B.out, A.in).
    pub ba: Link,
    /// Events delivered to the router of A and of B.
    pub at_a: Vec<Event>,
    pub at_b: Vec<Event>,
}

impl Harness {
    /// `a_cert` / `b_cert`: the identities each gateway's certificate is verified for by the
    /// other (empty: no usable certificate, so dialback is needed).
    pub fn new(
        cfg_a: Arc<Config>,
        cfg_b: Arc<Config>,
        a_cert: Vec<String>,
        b_cert: Vec<String>,
    ) -> Harness {
        let start = Instant::now();
        let ab = Link::new(
            Outbound::with_seed(cfg_a.clone(), A, B, start, Some(1)),
            Inbound::with_seed(cfg_b.clone(), start, Some(2)),
            a_cert,
        );
        let ba = Link::new(
            Outbound::with_seed(cfg_b, B, A, start, Some(3)),
            Inbound::with_seed(cfg_a, start, Some(4)),
            b_cert,
        );
        Harness {
            start,
            now: start,
            ab,
            ba,
            at_a: Vec::new(),
            at_b: Vec::new(),
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        self.ab.out.handle_timeout(now);
        self.ab.inb.handle_timeout(now);
        self.ba.out.handle_timeout(now);
        self.ba.inb.handle_timeout(now);
        self.run();
    }

    /// Moves bytes and outputs until nothing changes.
    pub fn run(&mut self) {
        for _ in 0..1000 {
            let mut progress = false;
            progress |= pump(&mut self.ab, self.now);
            progress |= pump(&mut self.ba, self.now);
            progress |= self.route();
            if !progress {
                return;
            }
        }
        panic!("the two gateways never settled");
    }

    /// Acts on outputs the way a driver would.
    fn route(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;
        // (link, is_a_side_inbound)
        for which in [0, 1] {
            let (link, other, delivered) = if which == 0 {
                (&mut self.ab, &mut self.ba, &mut self.at_b)
            } else {
                (&mut self.ba, &mut self.ab, &mut self.at_a)
            };
            while let Some(o) = link.inb.poll_event() {
                progress = true;
                link.in_outputs.push(o.clone());
                match o {
                    Output::StartTls => link.in_tls = true,
                    Output::Event(e) => delivered.push(e),
                    // The reply goes out on the same gateway's outbound stream to the peer.
                    Output::Reply(r) => other.out.send_reply(r, now).unwrap(),
                    Output::VerifyDialback(req) => other.out.verify_dialback(req, now),
                    _ => {}
                }
            }
            while let Some(o) = link.out.poll_event() {
                progress = true;
                link.out_outputs.push(o.clone());
                match o {
                    Output::StartTls => link.out_tls = true,
                    Output::DialbackVerified { request, valid } => {
                        other.inb.dialback_verified(&request, valid, now)
                    }
                    _ => {}
                }
            }
            if link.out_tls && link.in_tls {
                link.out_tls = false;
                link.in_tls = false;
                link.inb.tls_established(link.out_cert.clone(), now);
                link.out.tls_established(Vec::new(), now);
                progress = true;
            }
        }
        progress
    }
}

fn pump(link: &mut Link, now: Instant) -> bool {
    let mut progress = false;
    while let Some(bytes) = link.out.poll_transmit() {
        progress = true;
        link.out_wire.extend_from_slice(&bytes);
        link.inb.handle_input(&bytes, now);
    }
    while let Some(bytes) = link.inb.poll_transmit() {
        progress = true;
        link.in_wire.extend_from_slice(&bytes);
        link.out.handle_input(&bytes, now);
    }
    progress
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
