//! Throughput of the codec and the machines, on one core, with a virtual clock:
//! `cargo bench -p entente-oscar`. Prints operations per second; asserts nothing about speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use entente_model::{Address, Event, Message};
use entente_oscar::family::{bucp, icbm, oservice};
use entente_oscar::{
    Account, AccountAnswer, Channel, Credential, Flap, Login, LoginConfig, LoginOutput, Session,
    SessionConfig, SessionOutput, Snac, SnacBody, Tlv, TlvList,
};
use time::OffsetDateTime;

fn run(name: &str, iters: u64, mut f: impl FnMut(u64)) {
    for i in 0..iters / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let dt = t.elapsed();
    println!(
        "{name:<44} {:>12.0} ops/s  ({:.2} µs/op)",
        iters as f64 / dt.as_secs_f64(),
        dt.as_secs_f64() * 1e6 / iters as f64
    );
}

fn flap(seq: u16, channel: Channel, payload: Bytes) -> Vec<u8> {
    Flap {
        channel,
        seq,
        payload,
    }
    .to_bytes()
    .to_vec()
}

fn im_bytes(seq: u16, rid: u32, text: &str) -> Vec<u8> {
    let m = icbm::ChannelMsgToHost {
        cookie: rid.to_be_bytes().repeat(2).try_into().unwrap(),
        channel: 1,
        screen_name: "bob".into(),
        tlvs: TlvList::new()
            .with(Tlv::new(2, icbm::ImMessage::from_text(text).encode()))
            .with(Tlv::new(3, vec![])),
    };
    flap(seq, Channel::Snac, m.to_snac(rid).to_bytes())
}

fn signed_on(now: Instant) -> Session {
    let mut s = Session::new(
        SessionConfig::new("hub.example"),
        now,
        OffsetDateTime::UNIX_EPOCH,
    );
    let mut p = BytesMut::new();
    p.put_u32(1);
    Tlv::new(6, vec![1]).encode(&mut p);
    s.handle_input(&flap(0, Channel::SignOn, p.freeze()), now);
    while s.poll_event().is_some() {}
    s.answer_cookie(
        Some(Account {
            address: Address::parse("alice@hub.example").unwrap(),
            display_name: "alice".into(),
            feedbag: vec![],
            feedbag_modified: 0,
        }),
        now,
    );
    let ready = oservice::ClientReady { families: vec![] }.to_snac(1);
    s.handle_input(&flap(1, Channel::Snac, ready.to_bytes()), now);
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    s
}

fn main() {
    let text = "<HTML><BODY><FONT COLOR=\"#000000\">Are we still on for lunch &amp; the review at 2?</FONT></BODY></HTML>";
    let frame = im_bytes(1, 7, text);
    run("decode FLAP + SNAC + 04,06 + text", 500_000, |_| {
        let (f, _) = Flap::peek(black_box(&frame), 8192).unwrap().unwrap();
        let s = Snac::decode(&f.payload).unwrap();
        let m: icbm::ChannelMsgToHost = s.body_as().unwrap();
        black_box(m.message().unwrap().text().unwrap());
    });

    let t0 = Instant::now();
    let mut s = signed_on(t0);
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| im_bytes((i + 2) as u16, i + 10, text))
        .collect();
    run("session: 04,06 in -> Message event + 04,0C", 200_000, |i| {
        // Paced like a person typing (3 s apart on the virtual clock): no rate limit.
        let now = t0 + Duration::from_secs(3 * (i + 1));
        s.handle_input(&frames[(i % 1000) as usize], now);
        while let Some(b) = s.poll_transmit() {
            black_box(b);
        }
        while let Some(o) = s.poll_event() {
            black_box(o);
        }
    });

    let mut s = signed_on(t0);
    let alice = Address::parse("alice@hub.example").unwrap();
    let bob = Address::parse("bob@hub.example").unwrap();
    run("session: Message delivered -> 04,07 bytes", 200_000, |i| {
        let e = Event::Message(Message {
            id: i.to_string(),
            from: bob.clone(),
            to: alice.clone(),
            body: "Are we still on for lunch & the review at 2?".into(),
            thread: None,
            ts: OffsetDateTime::UNIX_EPOCH,
        });
        s.handle_event(e, t0);
        while let Some(b) = s.poll_transmit() {
            black_box(b);
        }
        while let Some(o) = s.poll_event() {
            if let SessionOutput::Event(e) = o {
                black_box(e);
            }
        }
    });

    let md5 = bucp::md5_password(b"s3cret");
    run("login: BUCP strong-hash sign-on, end to end", 20_000, |i| {
        let mut l = Login::new(
            LoginConfig::new("hub.example", "127.0.0.2:5190"),
            t0,
            [i as u8; 32],
        );
        let req = bucp::ChallengeRequest {
            tlvs: TlvList::new().with(Tlv::new(1, b"alice".to_vec())),
        };
        let mut first = flap(0, Channel::SignOn, Bytes::from_static(&[0, 0, 0, 1]));
        first.extend(flap(1, Channel::Snac, req.to_snac(1).to_bytes()));
        l.handle_input(&first, t0);
        l.poll_transmit();
        let ch = Snac::decode(
            &Flap::peek(&l.poll_transmit().unwrap(), 8192)
                .unwrap()
                .unwrap()
                .0
                .payload,
        )
        .unwrap();
        let key = ch.body_as::<bucp::Challenge>().unwrap().key;
        let login = bucp::LoginRequest {
            tlvs: TlvList::new()
                .with(Tlv::new(1, b"alice".to_vec()))
                .with(Tlv::new(0x25, bucp::strong_hash(&key, &md5).to_vec()))
                .with(Tlv::new(0x4C, vec![])),
        };
        l.handle_input(&flap(2, Channel::Snac, login.to_snac(2).to_bytes()), t0);
        assert!(matches!(l.poll_event(), Some(LoginOutput::Request(_))));
        l.answer(
            AccountAnswer::Found {
                display_name: "alice".into(),
                credential: Credential::Md5Password(md5),
            },
            t0,
        );
        assert!(matches!(
            l.poll_event(),
            Some(LoginOutput::Authenticated { .. })
        ));
        black_box(l.poll_transmit());
    });
}
