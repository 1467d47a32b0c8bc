//! The BOS session machine, signed on, driven by arbitrary bytes in arbitrary chunks, with
//! driver answers, canonical deliveries and timers in between.
#![no_main]

use std::time::{Duration, Instant};

use entente_model::{Address, Event, Message, Presence, PresenceKind, Show};
use entente_oscar::{
    Account, Channel, Flap, Session, SessionConfig, SessionOutput, SessionRequest, Tlv, TlvList,
    UserDetails,
};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("hub.example"), now, OffsetDateTime::UNIX_EPOCH);
    let me = Address::parse("alice@hub.example").unwrap();
    let bob = Address::parse("bob@hub.example").unwrap();
    let mut cookie = BytesOf(vec![0, 0, 0, 1]);
    cookie.tlv(Tlv::new(6, vec![1, 2, 3]));
    let hello = Flap { channel: Channel::SignOn, seq: 0, payload: cookie.0.into() };
    s.handle_input(&hello.to_bytes(), now);
    while s.poll_event().is_some() {}
    s.answer_cookie(
        Some(Account {
            address: me.clone(),
            display_name: "alice".into(),
            feedbag: vec![],
            feedbag_modified: 0,
        }),
        now,
    );

    // First byte of each chunk: its length and what to do after it.
    let mut rest = data;
    let mut t = now;
    while let Some((&ctl, tail)) = rest.split_first() {
        let n = (ctl as usize % 64).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        t += Duration::from_millis(u64::from(ctl) * 3);
        s.handle_input(chunk, t);
        match ctl % 7 {
            0 => {
                s.handle_event(
                    Event::Message(Message {
                        id: "m".into(),
                        from: bob.clone(),
                        to: me.clone(),
                        body: String::from_utf8_lossy(chunk).into_owned(),
                        thread: None,
                        ts: OffsetDateTime::UNIX_EPOCH,
                    }),
                    t,
                );
            }
            1 => {
                s.handle_event(
                    Event::Presence(Presence {
                        from: bob.clone(),
                        to: None,
                        kind: PresenceKind::Available { show: Show::Away, status: None },
                    }),
                    t,
                );
            }
            2 => s.handle_timeout(t),
            _ => {}
        }
        while let Some(f) = s.poll_transmit() {
            assert!(Flap::peek(&f, 65535).unwrap().is_some());
        }
        while let Some(o) = s.poll_event() {
            if let SessionOutput::Request(SessionRequest::UserInfo { id, .. }) = o {
                let details = (ctl & 1 == 0).then(UserDetails::default);
                s.answer_user_info(id, details, t);
            }
        }
        if s.is_closed() {
            break;
        }
    }
});

struct BytesOf(Vec<u8>);

impl BytesOf {
    fn tlv(&mut self, t: Tlv) {
        let mut out = bytes::BytesMut::new();
        TlvList(vec![t]).encode(&mut out);
        self.0.extend_from_slice(&out);
    }
}
