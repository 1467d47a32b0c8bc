//! Hostile input: lying lengths, unknown channels and families, truncated TLVs, huge counts, a
//! SNAC flood, and arbitrary bytes. Each gives a SNAC error, a sign-off or a close — never a panic.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{hex, snac_of, Client};
use entente_model::Address;
use entente_oscar::family::{feedbag, oservice};
use entente_oscar::wire::Reader;
use entente_oscar::{
    Account, Channel, CloseReason, DecodeError, Flap, Login, LoginConfig, LoginOutput, Session,
    SessionConfig, SessionOutput, Snac, SnacBody, SnacError, Tlv, TlvList,
};
use proptest::prelude::*;
use time::OffsetDateTime;

fn session_after_cookie() -> (Session, Client, Instant) {
    let now = Instant::now();
    let mut s = Session::new(
        SessionConfig::new("hub.example"),
        now,
        OffsetDateTime::UNIX_EPOCH,
    );
    let mut c = Client::new(100);
    s.handle_input(
        &c.signon(TlvList::new().with(Tlv::new(6, vec![1, 2, 3]))),
        now,
    );
    s.poll_event();
    s.answer_cookie(
        Some(Account {
            address: Address::parse("alice@hub.example").unwrap(),
            display_name: "alice".into(),
            feedbag: vec![],
            feedbag_modified: 0,
        }),
        now,
    );
    while s.poll_transmit().is_some() {}
    (s, c, now)
}

fn drain(s: &mut Session) -> (Vec<Flap>, Vec<SessionOutput>) {
    let mut frames = Vec::new();
    while let Some(b) = s.poll_transmit() {
        frames.push(common::frame(&b));
    }
    let mut outs = Vec::new();
    while let Some(o) = s.poll_event() {
        outs.push(o);
    }
    (frames, outs)
}

fn assert_signed_off(s: &mut Session, reason: impl Fn(&CloseReason) -> bool) {
    let (frames, outs) = drain(s);
    assert_eq!(frames.last().map(|f| f.channel), Some(Channel::SignOff));
    match outs.last() {
        Some(SessionOutput::Closed(r)) => assert!(reason(r), "unexpected reason {r:?}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(s.is_closed());
}

fn snac_error(f: &Flap) -> (u16, u32, u16) {
    let s = Snac::decode(&f.payload).unwrap();
    assert_eq!(s.header.subtype, 1, "an error SNAC");
    let e = SnacError::decode_body(&s.body).unwrap();
    (s.header.family, s.header.request_id, e.code)
}

#[test]
fn a_flap_length_past_the_limit_signs_off_at_once() {
    let (mut s, _, now) = session_after_cookie();
    // Only the header arrives: the lie is seen before any payload is buffered.
    s.handle_input(&hex("2A 02 00 01 FF FF"), now);
    assert_signed_off(&mut s, |r| {
        matches!(
            r,
            CloseReason::Protocol(DecodeError::FrameTooLarge { len: 0xFFFF, .. })
        )
    });
    // Further input is ignored.
    s.handle_input(&[0x2A; 100], now);
    assert!(s.poll_transmit().is_none());
}

#[test]
fn a_flap_shorter_than_its_snac_header_signs_off() {
    let (mut s, _, now) = session_after_cookie();
    s.handle_input(&hex("2A 02 00 01 00 05 00 01 00 0E 00"), now);
    assert_signed_off(&mut s, |r| {
        matches!(r, CloseReason::Protocol(DecodeError::Truncated(_)))
    });
}

#[test]
fn a_length_promising_more_than_arrives_waits_then_times_out() {
    let (mut s, _, now) = session_after_cookie();
    s.handle_input(&hex("2A 02 00 01 10 00 00 01"), now);
    let (frames, outs) = drain(&mut s);
    assert!(
        frames.is_empty() && outs.is_empty(),
        "incomplete is not an error"
    );
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline + Duration::from_millis(1));
    assert_signed_off(&mut s, |r| *r == CloseReason::Timeout);
}

#[test]
fn bad_markers_and_unknown_channels_sign_off() {
    let (mut s, _, now) = session_after_cookie();
    s.handle_input(b"GET / HTTP/1.1\r\n", now);
    assert_signed_off(&mut s, |r| {
        *r == CloseReason::Protocol(DecodeError::BadMarker(b'G'))
    });
    let (mut s, _, now) = session_after_cookie();
    s.handle_input(&hex("2A 09 00 01 00 00"), now);
    assert_signed_off(&mut s, |r| {
        *r == CloseReason::Protocol(DecodeError::UnknownChannel(9))
    });

    let now = Instant::now();
    let mut l = Login::new(
        LoginConfig::new("hub.example", "127.0.0.2:5190"),
        now,
        [1; 32],
    );
    l.handle_input(&hex("2A 07"), now);
    let mut last = None;
    while let Some(o) = l.poll_event() {
        last = Some(o);
    }
    assert_eq!(
        last,
        Some(LoginOutput::Closed(CloseReason::Protocol(
            DecodeError::UnknownChannel(7)
        )))
    );
}

#[test]
fn unknown_families_and_subtypes_get_snac_errors() {
    let (mut s, mut c, now) = session_after_cookie();
    let (b, rid) = c.raw_snac(0x0042, 0x0002, Bytes::new());
    s.handle_input(&b, now);
    let (b2, rid2) = c.raw_snac(0x0004, 0x0099, Bytes::new());
    s.handle_input(&b2, now);
    // BUCP is not served on a BOS connection.
    let (b3, rid3) = c.raw_snac(0x0017, 0x0006, Bytes::new());
    s.handle_input(&b3, now);
    let (frames, _) = drain(&mut s);
    assert_eq!(snac_error(&frames[0]), (0x42, rid, 0x06));
    assert_eq!(snac_error(&frames[1]), (0x04, rid2, 0x08));
    assert_eq!(snac_error(&frames[2]), (0x17, rid3, 0x06));
    assert!(!s.is_closed());
}

#[test]
fn truncated_tlvs_get_bad_format_errors() {
    let (mut s, mut c, now) = session_after_cookie();
    // 01,1E whose TLV claims 4 bytes but has 2.
    let (b, rid) = c.raw_snac(0x0001, 0x001E, Bytes::from(hex("00 06 00 04 00 00")));
    s.handle_input(&b, now);
    // 13,08 whose item attribute block claims more than remains.
    let (b, rid2) = c.raw_snac(
        0x0013,
        0x0008,
        Bytes::from(hex("00 01 61 00 01 00 02 00 00 00 FF 00 01")),
    );
    s.handle_input(&b, now);
    // 04,06 cut inside the cookie.
    let (b, rid3) = c.raw_snac(0x0004, 0x0006, Bytes::from(hex("01 02 03")));
    s.handle_input(&b, now);
    let (frames, _) = drain(&mut s);
    assert_eq!(snac_error(&frames[0]), (1, rid, 0x0E));
    assert_eq!(snac_error(&frames[1]), (0x13, rid2, 0x0E));
    assert_eq!(snac_error(&frames[2]), (4, rid3, 0x0E));
    assert!(s.feedbag().is_empty());
    assert!(!s.is_closed());
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // A counted TLV block claiming 65535 TLVs in 4 bytes.
    let b = hex("FF FF 00 01 00 00");
    assert_eq!(
        TlvList::decode_counted(&mut Reader::new(&b)),
        Err(DecodeError::TooMany("TLVs"))
    );
    // A user-info block with a huge TLV count (as in an arrival).
    let b = hex("03 62 6F 62 00 00 FF FF");
    assert!(matches!(
        entente_oscar::UserInfo::decode(&mut Reader::new(&b)),
        Err(DecodeError::TooMany(_))
    ));
    // A feedbag reply claiming 65535 items.
    let b = hex("00 FF FF 00 00 00 00");
    assert!(matches!(
        feedbag::Reply::decode_body(&b),
        Err(DecodeError::TooMany(_))
    ));
    // Rate classes.
    let b = hex("FF FF 00 01");
    assert!(matches!(
        oservice::RateParamsReply::decode_body(&b),
        Err(DecodeError::TooMany(_))
    ));
    // A TLV list of more TLVs than the limit, each empty.
    let mut many = BytesMut::new();
    for _ in 0..600 {
        many.put_u32(0x0001_0000);
    }
    assert_eq!(
        TlvList::decode_rest(&mut Reader::new(&many)),
        Err(DecodeError::TooMany("TLVs"))
    );
    // Odd-length lists of u16s.
    assert!(oservice::HostOnline::decode_body(&[0, 1, 0]).is_err());
}

#[test]
fn a_snac_flood_is_warned_limited_then_disconnected() {
    let (mut s, mut c, now) = session_after_cookie();
    let mut codes = Vec::new();
    let mut answered = 0;
    let mut refused = 0;
    for _ in 0..1000 {
        let (b, _) = c.snac(&oservice::SelfInfoQuery);
        s.handle_input(&b, now);
        while let Some(b) = s.poll_transmit() {
            let f = common::frame(&b);
            if f.channel != Channel::Snac {
                continue;
            }
            let snac = snac_of(&b);
            match snac.kind() {
                (1, 0x0A) => codes.push(snac.body_as::<oservice::RateChange>().unwrap().code),
                (1, 0x0F) => answered += 1,
                (1, 0x01) => {
                    // A request dropped while limited is answered with a rate error.
                    let e = entente_oscar::SnacError::decode_body(&snac.body).unwrap();
                    assert_eq!(e.code, entente_oscar::SnacErrorCode::RateToHost as u16);
                    refused += 1;
                }
                k => panic!("unexpected {k:?}"),
            }
        }
        if s.is_closed() {
            break;
        }
    }
    assert!(s.is_closed());
    assert_eq!(
        codes,
        vec![oservice::rate_code::WARNING, oservice::rate_code::LIMIT]
    );
    assert!(answered > 50 && answered < 200, "answered {answered}");
    assert!(refused > 0, "no dropped request was answered");
    let mut last = None;
    while let Some(o) = s.poll_event() {
        last = Some(o);
    }
    assert_eq!(last, Some(SessionOutput::Closed(CloseReason::RateLimited)));
}

#[test]
fn snacs_before_the_cookie_sign_off() {
    let now = Instant::now();
    let mut s = Session::new(
        SessionConfig::new("hub.example"),
        now,
        OffsetDateTime::UNIX_EPOCH,
    );
    let mut c = Client::new(1);
    let (b, _) = c.snac(&oservice::SelfInfoQuery);
    s.handle_input(&b, now);
    assert_signed_off(&mut s, |r| matches!(r, CloseReason::Unexpected(_)));
    // A channel-1 frame without a cookie.
    let mut s = Session::new(
        SessionConfig::new("hub.example"),
        now,
        OffsetDateTime::UNIX_EPOCH,
    );
    s.handle_input(&c.hello(), now);
    assert_signed_off(&mut s, |r| *r == CloseReason::BadCookie);
}

#[test]
fn login_refuses_other_families_and_lies() {
    let now = Instant::now();
    let mut l = Login::new(
        LoginConfig::new("hub.example", "127.0.0.2:5190"),
        now,
        [1; 32],
    );
    let mut c = Client::new(1);
    l.handle_input(&c.hello(), now);
    let (b, rid) = c.raw_snac(0x0001, 0x0006, Bytes::new());
    l.handle_input(&b, now);
    let (b, rid2) = c.raw_snac(0x0017, 0x0002, Bytes::from(hex("00 01 00 10 61")));
    l.handle_input(&b, now);
    l.poll_transmit();
    assert_eq!(
        snac_error(&common::frame(&l.poll_transmit().unwrap())),
        (1, rid, 0x06)
    );
    assert_eq!(
        snac_error(&common::frame(&l.poll_transmit().unwrap())),
        (0x17, rid2, 0x0E)
    );
    // 17,02 without a key handed out first is a wrong password, not a crash.
    let req = entente_oscar::family::bucp::LoginRequest {
        tlvs: TlvList::new()
            .with(Tlv::new(1, b"alice".to_vec()))
            .with(Tlv::new(0x25, vec![0; 16]))
            .with(Tlv::new(0x4C, vec![])),
    };
    l.handle_input(&c.snac(&req).0, now);
    let r = snac_of(&l.poll_transmit().unwrap());
    let r: entente_oscar::family::bucp::LoginReply = r.body_as().unwrap();
    assert_eq!(r.tlvs.get_u16(8), Some(5));
    // The login times out.
    l.handle_timeout(now + Duration::from_secs(61));
    assert!(l.is_closed());
}

fn arbitrary_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        1u8..=5,
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(ch, fam, sub, rid, body)| {
            let mut snac = BytesMut::new();
            snac.put_u16(fam % 0x20);
            snac.put_u16(sub % 0x20);
            snac.put_u16(0);
            snac.put_u32(rid as u32);
            snac.put_slice(&body);
            let payload = if ch == 2 {
                snac.freeze()
            } else {
                Bytes::from(body)
            };
            Flap {
                channel: Channel::from_u8(ch).unwrap(),
                seq: 0,
                payload,
            }
            .to_bytes()
            .to_vec()
        });
    proptest::collection::vec(frame, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_signed_on_session_survives_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (mut s, _, now) = session_after_cookie();
        s.handle_input(&raw, now);
        let (frames, _) = drain(&mut s);
        for f in frames {
            prop_assert!(f.payload.len() <= 0xFFFF);
        }
    }

    #[test]
    fn a_signed_on_session_survives_well_framed_garbage(raw in arbitrary_frames(), split in 0usize..400) {
        let (mut s, _, now) = session_after_cookie();
        let split = split.min(raw.len());
        s.handle_input(&raw[..split], now);
        s.handle_input(&raw[split..], now);
        drain(&mut s);
        s.handle_timeout(now + Duration::from_secs(1000));
        prop_assert!(s.is_closed());
    }

    #[test]
    fn login_survives_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..400), framed in arbitrary_frames()) {
        let now = Instant::now();
        for input in [raw, framed] {
            let mut l = Login::new(LoginConfig::new("hub.example", "127.0.0.2:5190"), now, [5; 32]);
            l.handle_input(&hex("2A 01 00 00 00 04 00 00 00 01"), now);
            l.handle_input(&input, now);
            while l.poll_transmit().is_some() {}
            while let Some(o) = l.poll_event() {
                if let LoginOutput::Request(_) = o {
                    l.answer(entente_oscar::AccountAnswer::Unavailable, now);
                }
            }
        }
    }
}
