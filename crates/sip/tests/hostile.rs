//! Hostile input: garbage, truncation, Content-Length lies, NUL bytes, oversize, mangled
//! headers, and CR/LF smuggled in from the canonical side. Nothing may panic; everything that
//! can be answered is answered with the right status.

mod support;

use std::time::{Duration, Instant};

use entente_model::{Event, Message, Presence, PresenceKind, Show};
use entente_sip::{
    Config, ConnectionId, Endpoint, ParseError, SipMessage, SipParser, SipxParser, StreamDecoder,
    Transport,
};
use proptest::prelude::*;
use support::addr;
use time::OffsetDateTime;

const MESSAGE: &[u8] = include_bytes!("../testdata/sipp_message_udp.sip");
const PUBLISH: &[u8] = include_bytes!("../testdata/publish_pidf_busy_udp.sip");

fn parser() -> SipxParser {
    SipxParser::default()
}

fn endpoint() -> (Endpoint, Instant) {
    let t0 = Instant::now();
    let config = Config {
        local_host: "127.0.0.1".into(),
        local_domains: vec!["hub.test".into()],
        message_answer_delay: Duration::ZERO,
        ..Config::default()
    };
    (Endpoint::new(config, t0, OffsetDateTime::UNIX_EPOCH), t0)
}

fn request(extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKh1\r\nFrom: <sip:carol@corp-b.test>;tag=1\r\nTo: <sip:bob@hub.test>\r\nCall-ID: h1\r\nCSeq: 1 MESSAGE\r\n{extra_headers}\r\n{body}"
    )
    .into_bytes()
}

/// The status of the single answer the endpoint sends to `data`, if any.
fn answer(data: &[u8]) -> (Option<u16>, Vec<Event>, Option<SipMessage>) {
    let (mut ep, t0) = endpoint();
    let _ = ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), data, t0);
    let events: Vec<Event> = std::iter::from_fn(|| ep.poll_event()).collect();
    let resp = ep
        .poll_transmit()
        .map(|t| parser().parse_datagram(&t.payload).unwrap());
    (resp.as_ref().and_then(|r| r.status()), events, resp)
}

#[test]
fn content_length_lies() {
    // Too long on UDP: refused. Too short: the body is cut at the declared length.
    assert!(matches!(
        parser().parse_datagram(&request("Content-Length: 500\r\n", "short")),
        Err(ParseError::Framing(_))
    ));
    let m = parser()
        .parse_datagram(&request("Content-Length: 2\r\n", "hello"))
        .unwrap();
    assert_eq!(m.body().as_ref(), b"he");
    for bad in ["-5", "five", "", "1 2", "0x10", "99999999999999999999999"] {
        assert!(
            parser()
                .parse_datagram(&request(&format!("Content-Length: {bad}\r\n"), ""))
                .is_err(),
            "{bad:?}"
        );
    }
    // Two Content-Lengths, even agreeing ones, are a smuggling shape: refused.
    assert!(parser()
        .parse_datagram(&request("Content-Length: 0\r\nl: 0\r\n", ""))
        .is_err());
    // On a stream a too-long length just waits for more bytes.
    let mut f = parser().framer();
    assert!(f
        .push(&request("Content-Length: 500\r\n", "short"))
        .unwrap()
        .is_empty());
    assert!(f.pending() > 0);
    // A too-short length on a stream leaves garbage that cannot frame the next message.
    let mut f = parser().framer();
    let data = request("Content-Length: 2\r\n", "hello\r\n\r\n");
    let r = f.push(&data);
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|m| m.len() == 1),
        "{r:?}"
    );
}

#[test]
fn limits_hold() {
    let big = "x".repeat(70 * 1024);
    assert_eq!(
        parser().parse_datagram(&request("", &big)),
        Err(ParseError::Limit("message size"))
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        parser().parse_datagram(&request(&many, "")),
        Err(ParseError::Limit("header count"))
    );
    let long = format!("Subject: {}\r\n", "y".repeat(9000));
    assert_eq!(
        parser().parse_datagram(&request(&long, "")),
        Err(ParseError::Limit("header line length"))
    );
    // A stream that never ends its header section is cut off at the message limit.
    let mut f = parser().framer();
    let mut result = Ok(Vec::new());
    for _ in 0..100 {
        result = f.push(&[b'a'; 1024]);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(ParseError::Limit(_))));
    assert!(f.push(b"\r\n\r\n").is_err(), "a failed stream stays failed");
    // A stream announcing a body above the limit is refused before buffering it.
    let mut f = parser().framer();
    assert!(matches!(
        f.push(&request("Content-Length: 10000000\r\n", "")),
        Err(ParseError::Limit(_))
    ));
}

#[test]
fn nul_bytes_and_bad_encodings() {
    assert_eq!(
        parser().parse_datagram(&request("Subject: a\0b\r\n", "")),
        Err(ParseError::BadBytes)
    );
    let mut data = request("Content-Length: 3\r\n", "a\0b");
    assert!(
        parser().parse_datagram(&data).is_ok(),
        "NUL in a body is framing-neutral"
    );
    // ...but a text message carrying NUL is refused.
    let (status, events, _) = answer(&data);
    assert_eq!(status, Some(400));
    assert!(events.is_empty());
    data = request(
        "Content-Type: text/plain\r\nContent-Length: 2\r\n",
        "\u{ff}",
    );
    data.truncate(data.len() - 2);
    data.extend_from_slice(b"\xff\xfe");
    assert_eq!(answer(&data).0, Some(400));
    assert!(parser()
        .parse_datagram(b"MESSAGE sip:bob@hub.test SIP/2.0\r\nSubject: \xc3\x28\r\n\r\n")
        .is_err());
}

#[test]
fn mangled_headers() {
    // Bare LF line ends are a smuggling shape and are refused outright.
    assert!(parser()
        .parse_datagram(b"MESSAGE sip:bob@hub.test SIP/2.0\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\n\n")
        .is_err());
    // Whitespace before the colon and around the Via slashes is legal.
    let data = b"MESSAGE sip:bob@hub.test SIP/2.0\r\nVia  :  SIP / 2.0 / UDP 192.0.2.1:5060;branch=z9hG4bKw\r\nFrom\t: <sip:carol@corp-b.test>;tag=1\r\nTo:<sip:bob@hub.test>\r\nCall-ID:w1\r\nCSeq:   1    MESSAGE\r\nContent-Length: 2\r\n\r\nhi";
    let (status, events, _) = answer(data);
    assert_eq!(status, Some(200));
    assert_eq!(events.len(), 1);
    // Duplicate From/To/Call-ID: the first wins, and the message is still answered.
    let (status, events, resp) = answer(&request(
        "From: <sip:mallory@evil.test>;tag=2\r\nCall-ID: other\r\nContent-Length: 1\r\n",
        "x",
    ));
    assert_eq!(status, Some(200));
    let Event::Message(m) = &events[0] else {
        panic!()
    };
    assert_eq!(m.from, addr("carol@corp-b.test"));
    assert_eq!(resp.unwrap().header("Call-ID"), Some("h1"));
    // A header section starting with a continuation line.
    assert!(parser()
        .parse_datagram(b"MESSAGE sip:bob@hub.test SIP/2.0\r\n  folded: x\r\n\r\n")
        .is_err());
}

#[test]
fn requests_that_cannot_be_answered_are_dropped_and_others_get_statuses() {
    // No Via: nowhere to answer.
    let (status, events, _) = answer(
        b"MESSAGE sip:bob@hub.test SIP/2.0\r\nFrom: <sip:a@b.test>;tag=1\r\nTo: <sip:bob@hub.test>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\nhi",
    );
    assert_eq!((status, events.len()), (None, 0));
    // CSeq method disagreeing with the request line.
    let (status, _, _) = answer(&request("", "").replace_cseq("1 OPTIONS"));
    assert_eq!(status, None);
    // Unknown domain, unsupported media, oversize body, bad From, foreign event package.
    let other_domain = String::from_utf8(request("Content-Length: 0\r\n", ""))
        .unwrap()
        .replace("To: <sip:bob@hub.test>", "To: <sip:bob@elsewhere.test>");
    assert_eq!(answer(other_domain.as_bytes()).0, Some(404));
    let (status, _, resp) = answer(&request(
        "Content-Type: image/png\r\nContent-Length: 1\r\n",
        "x",
    ));
    assert_eq!(status, Some(415));
    assert!(resp.unwrap().header("Accept").is_some());
    let big = "z".repeat(20 * 1024);
    let (status, events, _) = answer(&request(
        &format!("Content-Length: {}\r\n", big.len()),
        &big,
    ));
    assert_eq!((status, events.len()), (Some(413), 0));
    let tel_from = String::from_utf8(request("Content-Length: 0\r\n", ""))
        .unwrap()
        .replace("<sip:carol@corp-b.test>", "<tel:+15551234>");
    assert_eq!(answer(tel_from.as_bytes()).0, Some(400));
    let sub = b"SUBSCRIBE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs\r\nFrom: <sip:carol@corp-b.test>;tag=1\r\nTo: <sip:bob@hub.test>\r\nCall-ID: s\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:carol@192.0.2.1>\r\nEvent: dialog\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(answer(sub).0, Some(489));
    let brief = String::from_utf8(sub.to_vec())
        .unwrap()
        .replace("Event: dialog", "Event: presence\r\nExpires: 5");
    let (status, _, resp) = answer(brief.as_bytes());
    assert_eq!(status, Some(423));
    assert_eq!(resp.unwrap().header("Min-Expires"), Some("60"));
    let notify = String::from_utf8(sub.to_vec())
        .unwrap()
        .replace("SUBSCRIBE", "NOTIFY")
        .replace(
            "Event: dialog",
            "Event: presence\r\nSubscription-State: active",
        );
    assert_eq!(answer(notify.as_bytes()).0, Some(481));
    let invite = String::from_utf8(request("Content-Length: 0\r\n", ""))
        .unwrap()
        .replace("MESSAGE", "INVITE");
    let (status, _, resp) = answer(invite.as_bytes());
    assert_eq!(status, Some(405));
    assert!(resp.unwrap().header("Allow").unwrap().contains("MESSAGE"));
}

trait ReplaceCseq {
    fn replace_cseq(&self, cseq: &str) -> Vec<u8>;
}

impl ReplaceCseq for Vec<u8> {
    fn replace_cseq(&self, cseq: &str) -> Vec<u8> {
        String::from_utf8(self.clone())
            .unwrap()
            .replace("CSeq: 1 MESSAGE", &format!("CSeq: {cseq}"))
            .into_bytes()
    }
}

#[test]
fn publish_with_hostile_pidf_is_refused() {
    let text = String::from_utf8(PUBLISH.to_vec()).unwrap();
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    let head = head
        .split("\r\n")
        .filter(|l| !l.starts_with("Content-Length"))
        .collect::<Vec<_>>()
        .join("\r\n");
    for body in [
        "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><presence xmlns=\"urn:ietf:params:xml:ns:pidf\">&b;</presence>".to_string(),
        format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\">{}{}</presence>", "<x>".repeat(50), "</x>".repeat(50)),
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"><tuple>".to_string(),
        "not xml at all".to_string(),
    ] {
        let data = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let (status, events, _) = answer(data.as_bytes());
        assert_eq!(status, Some(400), "{body}");
        assert!(events.is_empty());
    }
}

#[test]
fn canonical_values_cannot_inject_headers() {
    let (mut ep, t0) = endpoint();
    let evil = "hi\r\n\r\nINVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP evil\r\n\r\n";
    ep.send(
        Event::Message(Message {
            id: "e1\r\nX-Id: 1".into(),
            from: addr("bob@hub.test"),
            to: addr("carol@corp-b.test"),
            body: evil.into(),
            thread: Some("t\r\nX-Thread: 1".into()),
            ts: OffsetDateTime::UNIX_EPOCH,
        }),
        t0,
    )
    .unwrap();
    let t = ep.poll_transmit().unwrap();
    let m = parser().parse_datagram(&t.payload).unwrap();
    assert_eq!(m.body().as_ref(), evil.as_bytes());
    assert_eq!(m.count("Via"), 1);
    assert!(m.headers().iter().all(|h| !h.name().starts_with("X-")));
    // The same bytes framed on a stream give one message, the body intact.
    let mut f = parser().framer();
    assert_eq!(f.push(&t.payload).unwrap(), vec![m]);
    assert_eq!(f.pending(), 0);

    // Presence notes land escaped inside the PIDF body, never in a header.
    let sub = b"SUBSCRIBE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs\r\nFrom: <sip:carol@corp-b.test>;tag=1\r\nTo: <sip:bob@hub.test>\r\nCall-ID: s\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:carol@192.0.2.1>\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n";
    ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), sub, t0)
        .unwrap();
    while ep.poll_transmit().is_some() {}
    ep.send(
        Event::Subscription(entente_model::Subscription {
            from: addr("bob@hub.test"),
            to: addr("carol@corp-b.test"),
            kind: entente_model::SubscriptionKind::Subscribed,
        }),
        t0,
    )
    .unwrap();
    ep.send(
        Event::Presence(Presence {
            from: addr("bob@hub.test"),
            to: None,
            kind: PresenceKind::Available {
                show: Show::Away,
                status: Some("</note><x/>\r\nVia: evil\0".into()),
            },
        }),
        t0,
    )
    .unwrap();
    let notify = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| parser().parse_datagram(&t.payload).unwrap())
        .last()
        .unwrap();
    assert_eq!(notify.count("Via"), 1);
    let doc = entente_sip::pidf::parse(notify.body(), &Default::default()).unwrap();
    assert_eq!(doc.note.as_deref(), Some("</note><x/>  Via: evil"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parser().parse_datagram(&data);
        let mut f = parser().framer();
        let _ = f.push(&data);
        let (mut ep, t0) = endpoint();
        let _ = ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), &data, t0);
        let _ = ep.handle_stream_bytes(ConnectionId(1), Transport::Tcp, &data, t0);
        while ep.poll_transmit().is_some() {}
        ep.handle_timeout(t0 + Duration::from_secs(60));
    }

    #[test]
    fn mutated_real_messages_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        for base in [MESSAGE, PUBLISH] {
            let mut data = base.to_vec();
            for (i, b) in &edits {
                let i = i % data.len();
                data[i] = *b;
            }
            data.truncate(cut % (data.len() + 1));
            let (mut ep, t0) = endpoint();
            let _ = ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), &data, t0);
            let _ = ep.handle_stream_bytes(ConnectionId(1), Transport::Tcp, &data, t0);
            while ep.poll_transmit().is_some() {}
            while ep.poll_event().is_some() {}
        }
    }

    #[test]
    fn every_truncation_is_incomplete_or_refused(cut in 0usize..384) {
        let data = &MESSAGE[..cut.min(MESSAGE.len())];
        let mut f = parser().framer();
        let got = f.push(data);
        if cut < MESSAGE.len() {
            prop_assert!(got.map(|m| m.is_empty()).unwrap_or(true));
        }
        // A datagram cut inside its body is too short for its Content-Length.
        if cut < MESSAGE.len() {
            prop_assert!(parser().parse_datagram(data).is_err());
        }
    }
}

#[test]
fn floods_hit_the_state_limits_not_the_memory() {
    let t0 = Instant::now();
    let config = Config {
        local_domains: vec!["hub.test".into()],
        max_transactions: 50,
        max_subscriptions: 20,
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, t0, OffsetDateTime::UNIX_EPOCH);
    let mut statuses = Vec::new();
    for i in 0..100 {
        let sub = format!("SUBSCRIBE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKf{i}\r\nFrom: <sip:carol@corp-b.test>;tag={i}\r\nTo: <sip:bob@hub.test>\r\nCall-ID: flood{i}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:carol@192.0.2.1>\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n");
        ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), sub.as_bytes(), t0)
            .unwrap();
        while let Some(t) = ep.poll_transmit() {
            let m = parser().parse_datagram(&t.payload).unwrap();
            if let Some(code) = m.status() {
                statuses.push(code);
            }
        }
    }
    assert_eq!(statuses.len(), 100);
    assert_eq!(statuses.iter().filter(|&&c| c == 200).count(), 20);
    assert_eq!(statuses.iter().filter(|&&c| c == 503).count(), 80);
    // The canonical side is refused too, rather than growing state.
    assert_eq!(
        ep.send(
            Event::Subscription(entente_model::Subscription {
                from: addr("bob@hub.test"),
                to: addr("dave@corp-b.test"),
                kind: entente_model::SubscriptionKind::Subscribe,
            }),
            t0
        ),
        Err(entente_sip::SendError::Busy)
    );
}

#[test]
fn messages_sharing_a_call_id_are_answered_separately() {
    let t0 = Instant::now();
    let config = Config {
        local_domains: vec!["hub.test".into()],
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, t0, OffsetDateTime::UNIX_EPOCH);
    for n in 1..=2 {
        let m = format!("MESSAGE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsame{n}\r\nFrom: <sip:carol@corp-b.test>;tag=1\r\nTo: <sip:bob@hub.test>\r\nCall-ID: shared\r\nCSeq: {n} MESSAGE\r\nContent-Length: 2\r\n\r\nm{n}");
        ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), m.as_bytes(), t0)
            .unwrap();
    }
    let ids: Vec<String> = std::iter::from_fn(|| ep.poll_event())
        .map(|e| match e {
            Event::Message(m) => m.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    ep.send(
        Event::Failure(entente_model::Failure {
            from: addr("bob@hub.test"),
            to: addr("carol@corp-b.test"),
            id: ids[0].clone(),
            code: entente_model::ErrorCode::RecipientUnavailable,
            text: "offline".into(),
        }),
        t0,
    )
    .unwrap();
    ep.handle_timeout(t0 + Duration::from_secs(1));
    let answers: Vec<(u16, String)> = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| parser().parse_datagram(&t.payload).unwrap())
        .map(|m| (m.status().unwrap(), m.header("CSeq").unwrap().to_string()))
        .collect();
    assert_eq!(
        answers,
        vec![
            (480, "1 MESSAGE".to_string()),
            (200, "2 MESSAGE".to_string())
        ]
    );
}

#[test]
fn prechecks_answer_before_any_method_logic() {
    let (status, events, _) = answer(&request("Max-Forwards: 0\r\nContent-Length: 1\r\n", "x"));
    assert_eq!((status, events.len()), (Some(483), 0));
    let (status, _, resp) = answer(&request(
        "Require: 100rel, timer\r\nContent-Length: 1\r\n",
        "x",
    ));
    assert_eq!(status, Some(420));
    assert_eq!(resp.unwrap().header("Unsupported"), Some("100rel, timer"));
    let tel = String::from_utf8(request("Content-Length: 0\r\n", ""))
        .unwrap()
        .replace("MESSAGE sip:bob@hub.test", "MESSAGE tel:+15551234");
    assert_eq!(answer(tel.as_bytes()).0, Some(416));
}

#[test]
fn charsets_are_honoured_or_refused() {
    let latin1 = {
        let mut d = request(
            "Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Length: 4\r\n",
            "",
        );
        d.extend_from_slice(b"caf\xe9");
        d
    };
    let (status, events, _) = answer(&latin1);
    assert_eq!(status, Some(200));
    let Event::Message(m) = &events[0] else {
        panic!()
    };
    assert_eq!(m.body, "café");
    let (status, events, _) = answer(&request(
        "Content-Type: text/plain;charset=\"KOI8-R\"\r\nContent-Length: 1\r\n",
        "x",
    ));
    assert_eq!((status, events.len()), (Some(415), 0));
}

#[test]
fn crlf_keepalive_pings_get_pongs_on_streams_only() {
    let (mut ep, t0) = endpoint();
    ep.handle_stream_bytes(ConnectionId(3), Transport::Tcp, b"\r\n\r\n", t0)
        .unwrap();
    let pong = ep.poll_transmit().unwrap();
    assert_eq!(
        pong.destination,
        entente_sip::Destination::Connection(ConnectionId(3))
    );
    assert_eq!(pong.payload.as_ref(), b"\r\n");
    assert!(ep.poll_transmit().is_none());
    // A flood of pings is answered boundedly per read; a datagram keep-alive gets nothing.
    let flood = b"\r\n".repeat(1000);
    ep.handle_stream_bytes(ConnectionId(3), Transport::Tcp, &flood, t0)
        .unwrap();
    assert_eq!(std::iter::from_fn(|| ep.poll_transmit()).count(), 16);
    ep.handle_datagram("192.0.2.1:5060".parse().unwrap(), b"\r\n\r\n", t0)
        .unwrap();
    assert!(ep.poll_transmit().is_none());
}
