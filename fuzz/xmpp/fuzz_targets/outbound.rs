//! The outbound s2s machine against an arbitrary peer: never a panic, never a stanza on the wire
//! before the stream was secured and its pair authorised.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_model::{Address, DomainKind, Event, Message};
use entente_xmpp::{Config, Outbound, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut served = BTreeMap::new();
    served.insert("hub.test".to_string(), DomainKind::Hub);
    let mut cfg = Config::new(served, b"fuzz".to_vec());
    cfg.limits.max_stanza_bytes = 8192;
    let mut now = Instant::now();
    let mut out = Outbound::with_seed(Arc::new(cfg), "hub.test", "corp-a.test", now, Some(1));
    let event = Event::Message(Message {
        id: "m1".into(),
        from: Address::new("alice", "hub.test", DomainKind::Hub).unwrap(),
        to: Address::new("bob", "corp-a.test", DomainKind::Xmpp).unwrap(),
        body: "hello".into(),
        thread: None,
        ts: time_zero(),
    });
    let _ = out.send(event, now);
    let mut authorised = false;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 4 {
            0 => out.tls_established(vec![], now),
            1 => {
                now += Duration::from_secs(u64::from(op >> 2));
                out.handle_timeout(now);
            }
            _ => {
                let Some((&len, tail)) = rest.split_first() else { break };
                let n = usize::from(len).min(tail.len());
                let (chunk, tail) = tail.split_at(n);
                rest = tail;
                out.handle_input(chunk, now);
            }
        }
        while let Some(o) = out.poll_event() {
            if matches!(o, Output::Authorised(_)) {
                authorised = true;
            }
        }
        while let Some(bytes) = out.poll_transmit() {
            if !authorised {
                assert!(
                    !bytes.windows(8).any(|w| w == b"<message"),
                    "stanza written before its pair was authorised"
                );
            }
        }
    }
});

fn time_zero() -> time::OffsetDateTime {
    time::OffsetDateTime::UNIX_EPOCH
}
