//! The endpoint state machine driven by arbitrary datagrams, stream bytes, canonical events and
//! clock jumps, decided byte by byte.
#![no_main]

use std::time::{Duration, Instant};

use entente_model::{
    Address, ChatState, DomainKind, Event, Message, Presence, PresenceKind, Show, Subscription,
    SubscriptionKind, Typing,
};
use entente_sip::{Config, ConnectionId, Endpoint, Transport};
use libfuzzer_sys::fuzz_target;

fn addr(s: &str) -> Address {
    Address::parse(s)
        .and_then(|a| a.normalize(DomainKind::Sip))
        .expect("valid test address")
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let config = Config {
        local_domains: vec!["hub.test".into()],
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, t0, time::OffsetDateTime::UNIX_EPOCH);
    let bob = addr("bob@hub.test");
    let carol = addr("carol@corp-b.test");
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(tail.first().copied().unwrap_or(0)).min(tail.len().saturating_sub(1));
        let chunk = tail.get(1..1 + len).unwrap_or(&[]);
        rest = tail.get(1 + len..).unwrap_or(&[]);
        match op % 8 {
            0 => {
                let _ = ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), chunk, now);
            }
            1 => {
                let _ = ep.handle_stream_bytes(
                    ConnectionId(u64::from(op >> 4)),
                    Transport::Tcp,
                    chunk,
                    now,
                );
            }
            2 => now += Duration::from_millis(u64::from(op) * 250),
            3 => {
                let _ = ep.send(
                    Event::Message(Message {
                        id: "m".into(),
                        from: bob.clone(),
                        to: carol.clone(),
                        body: String::from_utf8_lossy(chunk).into_owned(),
                        thread: None,
                        ts: time::OffsetDateTime::UNIX_EPOCH,
                    }),
                    now,
                );
            }
            4 => {
                let kind = [
                    SubscriptionKind::Subscribe,
                    SubscriptionKind::Subscribed,
                    SubscriptionKind::Unsubscribe,
                    SubscriptionKind::Unsubscribed,
                ][usize::from(op >> 6)];
                let _ = ep.send(
                    Event::Subscription(Subscription {
                        from: bob.clone(),
                        to: carol.clone(),
                        kind,
                    }),
                    now,
                );
            }
            5 => {
                let kind = match op >> 6 {
                    0 => PresenceKind::Probe,
                    1 => PresenceKind::Unavailable { status: None },
                    _ => PresenceKind::Available {
                        show: Show::Away,
                        status: Some(String::from_utf8_lossy(chunk).into_owned()),
                    },
                };
                let to = (op & 0x20 != 0).then(|| carol.clone());
                let _ = ep.send(
                    Event::Presence(Presence {
                        from: bob.clone(),
                        to,
                        kind,
                    }),
                    now,
                );
            }
            6 => {
                let _ = ep.send(
                    Event::Typing(Typing {
                        from: bob.clone(),
                        to: carol.clone(),
                        state: ChatState::Composing,
                    }),
                    now,
                );
            }
            _ => ep.handle_connection_closed(ConnectionId(u64::from(op >> 4))),
        }
        if let Some(t) = ep.poll_timeout() {
            if t <= now {
                ep.handle_timeout(now);
            }
        }
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});
