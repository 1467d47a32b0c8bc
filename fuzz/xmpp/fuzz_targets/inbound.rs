//! The inbound s2s machine driven by an arbitrary sequence of peer bytes, TLS results, dialback
//! verdicts, timer ticks and EOF. It must never panic, never emit an event before a pair is
//! authorised, and go quiet once closed.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_model::DomainKind;
use entente_xmpp::{Config, Inbound, Output};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    to='hub.test' from='corp-a.test' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let mut served = BTreeMap::new();
    served.insert("hub.test".to_string(), DomainKind::Hub);
    served.insert("sip.test".to_string(), DomainKind::Sip);
    let mut cfg = Config::new(served, b"fuzz".to_vec());
    cfg.limits.max_stanza_bytes = 8192;
    let start = Instant::now();
    let mut now = start;
    let mut inb = Inbound::with_seed(Arc::new(cfg), now, Some(1));
    let mut authorised = false;
    let mut closed = false;
    let mut requests = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            0 => inb.handle_input(HEADER, now),
            1 => inb.handle_input(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", now),
            2 => {
                let ids = if op & 0x10 != 0 { vec!["corp-a.test".to_string()] } else { vec![] };
                inb.tls_established(ids, now);
            }
            3 => {
                if let Some(r) = requests.pop() {
                    inb.dialback_verified(&r, op & 0x10 != 0, now);
                }
            }
            4 => {
                now += Duration::from_secs(u64::from(op >> 3));
                inb.handle_timeout(now);
            }
            5 => inb.handle_eof(now),
            _ => {
                // Arbitrary peer bytes: a length byte, then that many bytes.
                let Some((&len, tail)) = rest.split_first() else { break };
                let n = usize::from(len).min(tail.len());
                let (chunk, tail) = tail.split_at(n);
                rest = tail;
                inb.handle_input(chunk, now);
            }
        }
        while inb.poll_transmit().is_some() {}
        while let Some(o) = inb.poll_event() {
            assert!(!closed, "output after Closed: {o:?}");
            match o {
                Output::Authorised(_) => authorised = true,
                Output::Event(_) | Output::Reply(_) => {
                    assert!(authorised, "stanza delivered before any pair was authorised")
                }
                Output::VerifyDialback(r) => requests.push(r),
                Output::Closed(_) => closed = true,
                _ => {}
            }
        }
        if let Some(t) = inb.poll_timeout() {
            assert!(t >= start);
        }
    }
});
