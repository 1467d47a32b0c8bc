//! Property tests: decode(encode(x)) == x for every codec in the crate.

use entente_model::{Address, DomainKind, PresenceKind, Show};
use entente_sip::headers::{address_to_uri, quote, uri_to_address, NameAddr};
use entente_sip::iscomposing::{self, IsComposing};
use entente_sip::{pidf, Header, Method, SipMessage, SipParser, SipxParser, StreamDecoder};
use proptest::prelude::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Message),
        Just(Method::Subscribe),
        Just(Method::Notify),
        Just(Method::Publish),
        Just(Method::Options),
        "[A-Z]{3,10}".prop_map(|m| Method::parse(&m).unwrap()),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("Via".to_string()),
            Just("v".to_string()),
            Just("Subject".to_string()),
            Just("Event".to_string()),
            "X-[A-Za-z0-9-]{1,12}",
        ],
        // Printable text, including quotes, commas, angle brackets and non-ASCII.
        "[ -~\u{a0}-\u{2fff}]{1,60}",
    )
        .prop_filter("value must survive trimming", |(_, v)| !v.trim().is_empty())
}

fn message() -> impl Strategy<Value = SipMessage> {
    (
        prop::bool::ANY,
        method(),
        "[a-z0-9]{1,10}",
        "[a-z]{1,10}\\.test",
        100u16..700,
        "[ -~]{0,30}",
        proptest::collection::vec(header(), 0..12),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(is_req, method, user, host, code, reason, headers, body)| {
                let mut m = if is_req {
                    SipMessage::request(method, &format!("sip:{user}@{host}")).unwrap()
                } else {
                    SipMessage::response(code, &reason).unwrap()
                };
                for (n, v) in headers {
                    m.push(&n, v).unwrap();
                }
                if !body.is_empty() {
                    m.set_body("application/octet-stream", body).unwrap();
                }
                m
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn messages_round_trip_over_datagrams_and_streams(
        msgs in proptest::collection::vec(message(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let parser = SipxParser::default();
        let mut stream = Vec::new();
        for m in &msgs {
            let bytes = m.to_bytes();
            prop_assert_eq!(&parser.parse_datagram(&bytes).unwrap(), m);
            stream.extend_from_slice(&bytes);
        }
        // The concatenation, cut anywhere, frames back into the same messages.
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut framer = parser.framer();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            got.extend(framer.push(&stream[last..p]).unwrap());
            last = p;
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(framer.pending(), 0);
    }

    #[test]
    fn any_text_is_either_refused_or_exactly_one_header_line(value in "\\PC{0,40}|[\\x00-\\x1f\\x7f a-z]{0,20}") {
        match Header::new("Subject", value.clone()) {
            Ok(h) => {
                prop_assert!(!h.value().contains(['\r', '\n', '\0']));
                let mut m = SipMessage::request(Method::Message, "sip:a@b.test").unwrap();
                m.push_header(h);
                let bytes = m.to_bytes();
                let text = String::from_utf8_lossy(&bytes);
                // start line + Subject + Content-Length + blank line
                prop_assert_eq!(text.matches("\r\n").count(), 4);
            }
            Err(_) => prop_assert!(value.chars().any(|c| c.is_control() && c != '\t')),
        }
    }

    #[test]
    fn display_names_round_trip_through_quoting(name in "\\PC{0,30}") {
        let n = NameAddr {
            display: Some(name.clone()),
            uri: "sip:carol@corp-b.test".into(),
            params: vec![("tag".into(), Some("x".into()))],
        };
        let value = n.to_value();
        prop_assert!(Header::new("From", value.clone()).is_ok());
        let back = NameAddr::parse(&value).unwrap();
        prop_assert_eq!(back.display.clone(), Some(name));
        prop_assert_eq!(&back.uri, &n.uri);
        prop_assert_eq!(back.tag(), Some("x"));
        prop_assert!(quote("a\"b").contains("\\\""));
    }

    #[test]
    fn sip_addresses_round_trip_through_uris(local in "[A-Za-z0-9._~!$&'()*+,;=%-]{1,20}", domain in "[a-z]{1,10}\\.(test|example)") {
        if let Ok(a) = Address::new(&local, &domain, DomainKind::Sip) {
            prop_assert_eq!(uri_to_address(&address_to_uri(&a)).unwrap(), a);
        }
    }

    #[test]
    fn presence_round_trips_through_pidf(
        show in prop_oneof![Just(None), Just(Some(Show::Available)), Just(Some(Show::Away)), Just(Some(Show::ExtendedAway)), Just(Some(Show::Dnd))],
        status in proptest::option::of("[^\\p{C}]{1,60}"),
    ) {
        let status = status.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let kind = match show {
            Some(show) => PresenceKind::Available { show, status },
            None => PresenceKind::Unavailable { status },
        };
        let body = pidf::build("sip:bob@hub.test", &kind).unwrap();
        let doc = pidf::parse(&body, &Default::default()).unwrap();
        prop_assert_eq!(doc.entity.as_str(), "sip:bob@hub.test");
        prop_assert_eq!(doc.presence_kind(), kind);
    }

    #[test]
    fn iscomposing_round_trips(active in any::<bool>(), refresh in proptest::option::of(1u32..100_000)) {
        let doc = IsComposing { active, refresh };
        prop_assert_eq!(iscomposing::parse(&iscomposing::build(doc), &Default::default()).unwrap(), doc);
    }
}
