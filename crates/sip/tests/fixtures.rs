//! Captured and hand-written wire fixtures: cross-checked against a second parser, round
//! tripped through our serialiser, and driven through the endpoint.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use entente_model::{ChatState, Event, PresenceKind, Show, SubscriptionKind};
use entente_sip::{
    Config, ConnectionId, Destination, Endpoint, SipMessage, SipParser, SipxParser, StartLine,
    StreamDecoder, Transport,
};
use support::{addr, reference_parse};
use time::OffsetDateTime;

const FIXTURES: &[(&str, &[u8])] = &[
    (
        "sipp_message_udp",
        include_bytes!("../testdata/sipp_message_udp.sip"),
    ),
    (
        "sipp_message_tcp",
        include_bytes!("../testdata/sipp_message_tcp.sip"),
    ),
    (
        "sipp_subscribe_udp",
        include_bytes!("../testdata/sipp_subscribe_udp.sip"),
    ),
    (
        "sipp_subscribe_tcp",
        include_bytes!("../testdata/sipp_subscribe_tcp.sip"),
    ),
    (
        "sipp_unsubscribe_udp",
        include_bytes!("../testdata/sipp_unsubscribe_udp.sip"),
    ),
    (
        "sipp_unsubscribe_tcp",
        include_bytes!("../testdata/sipp_unsubscribe_tcp.sip"),
    ),
    (
        "sipp_notify_200_udp",
        include_bytes!("../testdata/sipp_notify_200_udp.sip"),
    ),
    (
        "baresip_message_udp",
        include_bytes!("../testdata/baresip_message_udp.sip"),
    ),
    (
        "baresip_message_tcp",
        include_bytes!("../testdata/baresip_message_tcp.sip"),
    ),
    (
        "baresip_subscribe_udp",
        include_bytes!("../testdata/baresip_subscribe_udp.sip"),
    ),
    (
        "baresip_subscribe_tcp",
        include_bytes!("../testdata/baresip_subscribe_tcp.sip"),
    ),
    (
        "baresip_unsubscribe_udp",
        include_bytes!("../testdata/baresip_unsubscribe_udp.sip"),
    ),
    (
        "baresip_notify_200_udp",
        include_bytes!("../testdata/baresip_notify_200_udp.sip"),
    ),
    (
        "listener_notify_pidf_udp",
        include_bytes!("../testdata/listener_notify_pidf_udp.sip"),
    ),
    (
        "compact_comma_via_ipv6_udp_no_length",
        include_bytes!("../testdata/compact_comma_via_ipv6_udp_no_length.sip"),
    ),
    (
        "folded_repeated_headers_tcp",
        include_bytes!("../testdata/folded_repeated_headers_tcp.sip"),
    ),
    (
        "publish_pidf_busy_udp",
        include_bytes!("../testdata/publish_pidf_busy_udp.sip"),
    ),
    (
        "message_cpim_tcp",
        include_bytes!("../testdata/message_cpim_tcp.sip"),
    ),
    (
        "iscomposing_udp",
        include_bytes!("../testdata/iscomposing_udp.sip"),
    ),
    ("options_udp", include_bytes!("../testdata/options_udp.sip")),
];

fn fixture(name: &str) -> &'static [u8] {
    FIXTURES.iter().find(|(n, _)| *n == name).unwrap().1
}

fn start_line_text(m: &SipMessage) -> String {
    match m.start() {
        StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0"),
        StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}"),
    }
}

fn parse_any(name: &str, data: &[u8]) -> SipMessage {
    let parser = SipxParser::default();
    if name.ends_with("_tcp") {
        let mut framer = parser.framer();
        let mut got = Vec::new();
        // A byte at a time: the framer must not care how the stream is cut.
        for b in data {
            got.extend(framer.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(framer.pending(), 0, "{name}");
        got.pop().unwrap()
    } else {
        parser.parse_datagram(data).unwrap()
    }
}

#[test]
fn every_fixture_agrees_with_the_reference_parser_and_round_trips() {
    let parser = SipxParser::default();
    for (name, data) in FIXTURES {
        let ours = parse_any(name, data);
        let (start, headers, body) = reference_parse(data).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(start_line_text(&ours), start, "{name}");
        let our_headers: Vec<(String, String)> = ours
            .headers()
            .iter()
            .map(|h| (h.name().to_ascii_lowercase(), h.value().to_string()))
            .collect();
        assert_eq!(our_headers, headers, "{name}");
        assert_eq!(ours.body().as_ref(), &body[..], "{name}");
        // Serialise and parse again: the same message, over either transport.
        let bytes = ours.to_bytes();
        assert_eq!(parser.parse_datagram(&bytes).unwrap(), ours, "{name}");
        let mut framer = parser.framer();
        assert_eq!(framer.push(&bytes).unwrap(), vec![ours.clone()], "{name}");
    }
}

#[test]
fn compact_forms_comma_joined_via_and_ipv6() {
    let m = parse_any("x", fixture("compact_comma_via_ipv6_udp_no_length"));
    let vias = entente_sip::headers::vias(&m).unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].host, "[2001:db8::9]");
    assert_eq!(vias[0].port, Some(5062));
    assert_eq!(vias[0].branch(), Some("z9hG4bKproxy1"));
    assert_eq!(vias[1].host, "[2001:db8::10]");
    assert_eq!(m.header("Call-ID"), Some("compact-1@[2001:db8::10]"));
    assert_eq!(m.body().as_ref(), b"no length header here");
    let from = entente_sip::headers::name_addr(&m, "f").unwrap();
    assert_eq!(from.display.as_deref(), Some("Carol, C."));
}

#[test]
fn folded_and_repeated_headers() {
    let m = parse_any("x_tcp", fixture("folded_repeated_headers_tcp"));
    assert_eq!(m.header("Subject"), Some("a subject folded over two lines"));
    assert_eq!(m.count("Via"), 2);
    assert_eq!(m.header_values("Via").len(), 2);
    let from = entente_sip::headers::name_addr(&m, "From").unwrap();
    assert_eq!(from.uri, "sip:carol@corp-b.test");
    assert_eq!(from.tag(), Some("b2"));
}

// ----- through the endpoint ------------------------------------------------------------------

struct Gw {
    ep: Endpoint,
    t0: Instant,
}

const PEER: &str = "127.0.0.1:5061";

impl Gw {
    fn new() -> Gw {
        let t0 = Instant::now();
        let config = Config {
            local_host: "127.0.0.1".into(),
            local_port: Some(5060),
            local_domains: vec!["hub.test".into()],
            message_answer_delay: Duration::ZERO,
            ..Config::default()
        };
        Gw {
            ep: Endpoint::new(config, t0, OffsetDateTime::UNIX_EPOCH),
            t0,
        }
    }

    fn feed(&mut self, name: &str, data: &[u8]) {
        let now = self.t0;
        if name.ends_with("_tcp") {
            self.ep
                .handle_stream_bytes(ConnectionId(7), Transport::Tcp, data, now)
                .unwrap();
        } else {
            self.ep
                .handle_datagram(PEER.parse().unwrap(), data, now)
                .unwrap();
        }
    }

    fn out(&mut self) -> Vec<(Destination, SipMessage)> {
        let mut v = Vec::new();
        while let Some(t) = self.ep.poll_transmit() {
            let m = SipxParser::default().parse_datagram(&t.payload).unwrap();
            v.push((t.destination, m));
        }
        v
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }
}

#[test]
fn sipp_and_baresip_messages_become_canonical_messages() {
    for (name, body) in [
        ("sipp_message_udp", "hello bob from sipp over UDP\r\n"),
        ("sipp_message_tcp", "hello bob from sipp over TCP\r\n"),
        ("baresip_message_udp", "hello bob from baresip via -e"),
        ("baresip_message_tcp", "hello bob from baresip via -e"),
        ("message_cpim_tcp", "wrapped hello"),
        (
            "compact_comma_via_ipv6_udp_no_length",
            "no length header here",
        ),
        ("folded_repeated_headers_tcp", "hello"),
    ] {
        let mut gw = Gw::new();
        gw.feed(name, fixture(name));
        let events = gw.events();
        let [Event::Message(m)] = &events[..] else {
            panic!("{name}: {events:?}")
        };
        assert_eq!(m.body, body, "{name}");
        assert_eq!(m.from, addr("carol@corp-b.test"), "{name}");
        assert_eq!(m.to, addr("bob@hub.test"), "{name}");
        let out = gw.out();
        assert_eq!(out.len(), 1, "{name}");
        let (dest, resp) = &out[0];
        assert_eq!(resp.status(), Some(200), "{name}");
        if name.ends_with("_tcp") {
            assert_eq!(*dest, Destination::Connection(ConnectionId(7)));
        } else if name.starts_with("baresip") || name.starts_with("sipp") {
            // rport (baresip) answers the source; sipp's Via names its port.
            assert_eq!(
                *dest,
                Destination::Datagram(PEER.parse().unwrap()),
                "{name}"
            );
        }
        let request = parse_any(name, fixture(name));
        assert_eq!(
            resp.header_values("Via"),
            request.header_values("Via"),
            "{name}"
        );
        assert_eq!(resp.header("Call-ID"), request.header("Call-ID"));
        assert_eq!(resp.header("CSeq"), request.header("CSeq"));
        let to = entente_sip::headers::name_addr(resp, "To").unwrap();
        assert!(to.tag().is_some(), "{name}: a To tag is added");
    }
}

#[test]
fn udp_answers_go_to_the_via_port_without_rport() {
    let mut gw = Gw::new();
    // The Via says 127.0.0.1:5061 and has no rport: answer there, whatever the source port.
    gw.ep
        .handle_datagram(
            "127.0.0.1:40000".parse().unwrap(),
            fixture("sipp_message_udp"),
            gw.t0,
        )
        .unwrap();
    let out = gw.out();
    assert_eq!(
        out[0].0,
        Destination::Datagram("127.0.0.1:5061".parse::<SocketAddr>().unwrap())
    );
}

fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(data.to_vec()).unwrap();
    text.replace(from, to).into_bytes()
}

#[test]
fn sipp_subscribe_and_unsubscribe_as_notifier() {
    for (sub, unsub, old_tag, transport) in [
        (
            "sipp_subscribe_udp",
            "sipp_unsubscribe_udp",
            "f3456c26",
            "UDP",
        ),
        (
            "sipp_subscribe_tcp",
            "sipp_unsubscribe_tcp",
            "3e2053ad",
            "TCP",
        ),
        (
            "baresip_subscribe_udp",
            "baresip_unsubscribe_udp",
            "a8478e37",
            "UDP",
        ),
    ] {
        let mut gw = Gw::new();
        gw.feed(sub, fixture(sub));
        assert_eq!(
            gw.events(),
            vec![Event::Subscription(entente_model::Subscription {
                from: addr("carol@corp-b.test"),
                to: addr("bob@hub.test"),
                kind: SubscriptionKind::Subscribe,
            })],
            "{sub}"
        );
        let out = gw.out();
        assert_eq!(out.len(), 2, "{sub}: 200 then NOTIFY");
        let ok = &out[0].1;
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.header("Expires"), Some("600"));
        let tag = entente_sip::headers::name_addr(ok, "To")
            .unwrap()
            .tag()
            .unwrap()
            .to_string();
        let (dest, notify) = &out[1];
        assert_eq!(
            notify.header("Subscription-State"),
            Some("pending;expires=600")
        );
        assert_eq!(notify.header("Event"), Some("presence"));
        assert!(notify
            .header("Via")
            .unwrap()
            .contains(&format!("SIP/2.0/{transport} ")));
        if transport == "UDP" {
            let port = if sub.starts_with("sipp") { 5061 } else { 5072 };
            assert_eq!(
                *dest,
                Destination::Resolve {
                    host: "127.0.0.1".into(),
                    port: Some(port),
                    transport: Transport::Udp
                },
                "{sub}: in-dialog requests go to the Contact"
            );
        } else {
            assert_eq!(*dest, Destination::Connection(ConnectionId(7)));
        }
        // The watcher is approved: an active NOTIFY follows (no presence known yet, no body).
        gw.ep
            .send(
                Event::Subscription(entente_model::Subscription {
                    from: addr("bob@hub.test"),
                    to: addr("carol@corp-b.test"),
                    kind: SubscriptionKind::Subscribed,
                }),
                gw.t0,
            )
            .unwrap();
        let out = gw.out();
        assert!(out[0]
            .1
            .header("Subscription-State")
            .unwrap()
            .starts_with("active"));
        // Then the recorded un-SUBSCRIBE, carrying our To tag instead of the listener's: the
        // dialog ends, the approval does not (no event for the router).
        let data = replace(fixture(unsub), old_tag, &tag);
        gw.feed(unsub, &data);
        assert_eq!(gw.events(), Vec::<Event>::new(), "{unsub}");
        let out = gw.out();
        assert_eq!(out[0].1.status(), Some(200), "{unsub}");
        assert_eq!(out[0].1.header("Expires"), Some("0"));
        assert_eq!(
            out[1].1.header("Subscription-State"),
            Some("terminated;reason=timeout")
        );
    }
}

#[test]
fn listener_notify_with_pidf_reaches_the_subscriber() {
    let mut gw = Gw::new();
    gw.ep
        .send(
            Event::Subscription(entente_model::Subscription {
                from: addr("carol@corp-b.test"),
                to: addr("bob@hub.test"),
                kind: SubscriptionKind::Subscribe,
            }),
            gw.t0,
        )
        .unwrap();
    // (carol is not a local user here, but the endpoint subscribes to whoever it is asked to)
    let out = gw.out();
    let subscribe = &out[0].1;
    assert_eq!(subscribe.request_uri(), Some("sip:bob@hub.test"));
    let call_id = subscribe.header("Call-ID").unwrap().to_string();
    let tag = entente_sip::headers::name_addr(subscribe, "From")
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    let data = replace(
        fixture("listener_notify_pidf_udp"),
        "1-29156@127.0.0.1",
        &call_id,
    );
    let data = replace(&data, "29156SIPpTag011", &tag);
    gw.feed("notify", &data);
    let events = gw.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0],
        Event::Subscription(entente_model::Subscription {
            from: addr("bob@hub.test"),
            to: addr("carol@corp-b.test"),
            kind: SubscriptionKind::Subscribed,
        })
    );
    let Event::Presence(p) = &events[1] else {
        panic!()
    };
    assert_eq!(p.from, addr("bob@hub.test"));
    assert_eq!(p.to, Some(addr("carol@corp-b.test")));
    assert_eq!(
        p.kind,
        PresenceKind::Available {
            show: Show::Available,
            status: None
        }
    );
    assert_eq!(gw.out()[0].1.status(), Some(200));
}

#[test]
fn publish_with_etag_refresh_modify_and_expiry() {
    let mut gw = Gw::new();
    gw.feed("publish", fixture("publish_pidf_busy_udp"));
    let events = gw.events();
    let [Event::Presence(p)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(p.from, addr("carol@corp-b.test"));
    assert_eq!(p.to, None);
    assert_eq!(
        p.kind,
        PresenceKind::Available {
            show: Show::Dnd,
            status: Some("In a meeting & busy".into())
        }
    );
    let out = gw.out();
    let ok = &out[0].1;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("Expires"), Some("600"));
    let etag = ok.header("SIP-ETag").unwrap().to_string();

    // Refresh: SIP-If-Match and no body. New entity tag, no new event.
    let refresh = format!(
        "PUBLISH sip:carol@corp-b.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKpub2;rport\r\nFrom: <sip:carol@corp-b.test>;tag=p1\r\nTo: <sip:carol@corp-b.test>\r\nCall-ID: publish-2@192.0.2.7\r\nCSeq: 2 PUBLISH\r\nEvent: presence\r\nSIP-If-Match: {etag}\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    gw.ep
        .handle_datagram(PEER.parse().unwrap(), refresh.as_bytes(), gw.t0)
        .unwrap();
    assert!(gw.events().is_empty());
    let out = gw.out();
    assert_eq!(out[0].1.status(), Some(200));
    let etag2 = out[0].1.header("SIP-ETag").unwrap().to_string();
    assert_ne!(etag, etag2);

    // The old tag is spent: 412.
    let stale = refresh
        .replace("pub2", "pub3")
        .replace("CSeq: 2", "CSeq: 3");
    gw.ep
        .handle_datagram(PEER.parse().unwrap(), stale.as_bytes(), gw.t0)
        .unwrap();
    assert_eq!(gw.out()[0].1.status(), Some(412));

    // Not refreshed again: after 600 s carol is unavailable.
    gw.ep.handle_timeout(gw.t0 + Duration::from_secs(599));
    assert!(gw.events().is_empty());
    gw.ep.handle_timeout(gw.t0 + Duration::from_secs(600));
    let events = gw.events();
    let [Event::Presence(p)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(p.kind, PresenceKind::Unavailable { status: None });
}

#[test]
fn iscomposing_and_options() {
    let mut gw = Gw::new();
    gw.feed("iscomposing_udp", fixture("iscomposing_udp"));
    let events = gw.events();
    let [Event::Typing(t)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(t.state, ChatState::Composing);
    assert_eq!(gw.out()[0].1.status(), Some(200));
    // The indication said refresh 60: without a new one it lapses to paused.
    gw.ep.handle_timeout(gw.t0 + Duration::from_secs(59));
    assert!(gw.events().is_empty());
    gw.ep.handle_timeout(gw.t0 + Duration::from_secs(60));
    let events = gw.events();
    let [Event::Typing(t)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(t.state, ChatState::Paused);

    gw.feed("options_udp", fixture("options_udp"));
    assert!(gw.events().is_empty());
    let out = gw.out();
    let ok = &out[0].1;
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header("Allow").unwrap().contains("MESSAGE"));
    assert!(ok.header("Accept").unwrap().contains("text/plain"));
}

#[test]
fn responses_to_unknown_transactions_are_ignored() {
    let mut gw = Gw::new();
    gw.feed("sipp_notify_200_udp", fixture("sipp_notify_200_udp"));
    gw.feed("baresip_notify_200_udp", fixture("baresip_notify_200_udp"));
    assert!(gw.events().is_empty());
    assert!(gw.out().is_empty());
}
