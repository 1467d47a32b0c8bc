//! A peer that does not play by the rules: each case must end in the right stream error (or
//! close), with nothing delivered that should not be.

mod common;

use std::time::{Duration, Instant};

use common::*;
use entente_model::{DomainKind, Event};
use entente_xmpp::dialback::dialback_key;
use entente_xmpp::{CloseReason, Inbound, Outbound, Output, StreamCondition};

const HEADER: &[u8] = include_bytes!("../testdata/peer_header.xml");
const STARTTLS: &[u8] = include_bytes!("../testdata/starttls.xml");
const AUTH: &[u8] = include_bytes!("../testdata/sasl_external_auth.xml");

struct Peer {
    inb: Inbound,
    now: Instant,
    wire: Vec<u8>,
    outputs: Vec<Output>,
}

impl Peer {
    fn new() -> Peer {
        let now = Instant::now();
        Peer {
            inb: Inbound::with_seed(config(A, DomainKind::Hub, b"secret"), now, Some(9)),
            now,
            wire: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.inb.handle_input(bytes, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(b) = self.inb.poll_transmit() {
            self.wire.extend_from_slice(&b);
        }
        while let Some(o) = self.inb.poll_event() {
            self.outputs.push(o);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.inb.handle_timeout(self.now);
        self.drain();
    }

    /// Header, STARTTLS, TLS done with `cert` identities, header again.
    fn secured(cert: &[&str]) -> Peer {
        let mut p = Peer::new();
        p.send(HEADER);
        p.send(STARTTLS);
        assert_eq!(p.outputs, vec![Output::StartTls]);
        p.inb
            .tls_established(cert.iter().map(|s| s.to_string()).collect(), p.now);
        p.send(HEADER);
        p
    }

    /// A stream on which corp-a.test → hub.test is authorised by SASL EXTERNAL.
    fn authenticated() -> Peer {
        let mut p = Peer::secured(&[B]);
        p.send(AUTH);
        assert!(text(&p.wire).ends_with("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"));
        p.send(HEADER);
        assert!(p.outputs.iter().any(|o| matches!(o, Output::Authorised(_))));
        p
    }

    fn wire(&self) -> String {
        text(&self.wire)
    }

    fn closed_with(&self, condition: StreamCondition) -> bool {
        self.inb.is_closed()
            && self
                .outputs
                .contains(&Output::Closed(CloseReason::Sent(condition)))
            && self.wire().contains(&format!(
                "<stream:error><{} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
                condition.as_str()
            ))
    }

    fn events(&self) -> Vec<&Event> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn billion_laughs_is_restricted_xml() {
    let mut p = Peer::new();
    p.send(include_bytes!("../testdata/billion_laughs.xml"));
    assert!(
        p.closed_with(StreamCondition::RestrictedXml),
        "{}",
        p.wire()
    );
    // The error travels inside a stream header of our own.
    assert!(p.wire().starts_with("<?xml version='1.0'?><stream:stream"));
}

#[test]
fn comments_and_processing_instructions_are_restricted_xml() {
    for bad in [&b"<!-- hello -->"[..], b"<?evil?>"] {
        let mut p = Peer::authenticated();
        p.send(bad);
        assert!(
            p.closed_with(StreamCondition::RestrictedXml),
            "{}",
            p.wire()
        );
    }
}

#[test]
fn deep_nesting_is_a_policy_violation() {
    let mut p = Peer::authenticated();
    let mut bomb = b"<message from='juliet@corp-a.test' to='alice@hub.test'>".to_vec();
    bomb.extend("<x>".repeat(10_000).bytes());
    p.send(&bomb);
    assert!(
        p.closed_with(StreamCondition::PolicyViolation),
        "{}",
        p.wire()
    );
    assert!(p.events().is_empty());
}

#[test]
fn ten_megabyte_stanza_is_a_policy_violation() {
    let mut p = Peer::authenticated();
    p.send(b"<message from='juliet@corp-a.test' to='alice@hub.test'><body>");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..160 {
        p.send(&chunk);
        if p.inb.is_closed() {
            break;
        }
    }
    assert!(
        p.closed_with(StreamCondition::PolicyViolation),
        "{}",
        p.wire()
    );
    assert!(p.events().is_empty());
}

#[test]
fn invalid_utf8_is_not_well_formed() {
    let mut p = Peer::authenticated();
    p.send(include_bytes!("../testdata/invalid_utf8.xml"));
    assert!(
        p.closed_with(StreamCondition::NotWellFormed),
        "{}",
        p.wire()
    );
    assert!(p.events().is_empty());
}

#[test]
fn spoofed_from_is_invalid_from_and_never_delivered() {
    let mut p = Peer::authenticated();
    p.send(
        b"<message from='mallory@evil.test' to='alice@hub.test'><body>trust me</body></message>",
    );
    assert!(p.closed_with(StreamCondition::InvalidFrom), "{}", p.wire());
    assert!(p.events().is_empty());
}

#[test]
fn stanza_for_an_unknown_host_is_host_unknown() {
    let mut p = Peer::authenticated();
    p.send(b"<message from='juliet@corp-a.test' to='x@elsewhere.test'><body>hi</body></message>");
    assert!(p.closed_with(StreamCondition::HostUnknown), "{}", p.wire());
}

#[test]
fn header_for_an_unknown_host_is_host_unknown() {
    let mut p = Peer::new();
    p.send(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='nobody.test' from='corp-a.test' version='1.0'>");
    assert!(p.closed_with(StreamCondition::HostUnknown), "{}", p.wire());
}

#[test]
fn stanza_before_tls_is_refused_and_not_delivered() {
    let mut p = Peer::new();
    p.send(HEADER);
    p.send(b"<message from='juliet@corp-a.test' to='alice@hub.test'><body>plain</body></message>");
    assert!(
        p.closed_with(StreamCondition::PolicyViolation),
        "{}",
        p.wire()
    );
    assert!(p.events().is_empty());
}

#[test]
fn plaintext_injected_after_starttls_is_dropped() {
    let mut p = Peer::new();
    p.send(HEADER);
    // One packet: the request and, behind it, stanzas an attacker slipped in before TLS.
    let mut packet = STARTTLS.to_vec();
    packet.extend_from_slice(AUTH);
    packet.extend_from_slice(
        b"<message from='juliet@corp-a.test' to='alice@hub.test'><body>injected</body></message>",
    );
    p.send(&packet);
    assert_eq!(p.outputs, vec![Output::StartTls]);
    assert!(p
        .wire()
        .ends_with("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    p.inb.tls_established(vec![B.to_string()], p.now);
    p.send(HEADER);
    // The injected <auth/> had no effect: SASL is still offered, nothing was delivered.
    assert!(p.wire().ends_with("<mechanism>EXTERNAL</mechanism></mechanisms><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"), "{}", p.wire());
    assert!(p.events().is_empty());
    assert!(!p.inb.is_closed());
}

#[test]
fn external_is_offered_only_for_a_certified_domain() {
    let p = Peer::secured(&["other.test"]);
    assert!(!p.wire().contains("EXTERNAL"), "{}", p.wire());
    let mut p = Peer::secured(&[]);
    p.send(AUTH);
    assert!(p.wire().ends_with(
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
    ));
    // The peer may still fall back to dialback on the same stream.
    assert!(!p.inb.is_closed());
}

#[test]
fn peer_that_stalls_mid_stanza_times_out() {
    let mut p = Peer::authenticated();
    p.send(b"<message from='juliet@corp-a.test' to='alice@hub.test'><body>hel");
    // Trickling a byte every 10 s keeps the connection busy but does not finish the stanza.
    for _ in 0..5 {
        p.advance(Duration::from_secs(10));
        p.send(b"l");
    }
    assert!(!p.inb.is_closed());
    p.advance(Duration::from_secs(10));
    assert!(
        p.closed_with(StreamCondition::ConnectionTimeout),
        "{}",
        p.wire()
    );
    assert!(p.events().is_empty());
}

#[test]
fn silent_peer_times_out() {
    let mut p = Peer::authenticated();
    let deadline = p.inb.poll_timeout().unwrap();
    assert!(deadline <= p.now + Duration::from_secs(60));
    // Keepalives go out, but nothing comes in for ten minutes.
    for _ in 0..9 {
        p.advance(Duration::from_secs(60));
        assert!(!p.inb.is_closed());
    }
    assert!(p.wire().ends_with(' '));
    p.advance(Duration::from_secs(60));
    assert!(
        p.closed_with(StreamCondition::ConnectionTimeout),
        "{}",
        p.wire()
    );
}

#[test]
fn never_finishing_negotiation_times_out() {
    let mut p = Peer::new();
    p.send(HEADER);
    p.advance(Duration::from_secs(61));
    assert!(
        p.closed_with(StreamCondition::ConnectionTimeout),
        "{}",
        p.wire()
    );
}

#[test]
fn db_verify_is_answered_for_every_served_domain() {
    let mut served = std::collections::BTreeMap::new();
    served.insert(A.to_string(), DomainKind::Hub);
    served.insert("sip.test".to_string(), DomainKind::Sip);
    let cfg = std::sync::Arc::new(entente_xmpp::Config::new(served, b"secret".to_vec()));
    let now = Instant::now();
    let mut inb = Inbound::new(cfg, now);
    inb.handle_input(HEADER, now);
    inb.handle_input(STARTTLS, now);
    inb.tls_established(vec![], now);
    inb.handle_input(HEADER, now);
    while inb.poll_transmit().is_some() {}
    let good_a = dialback_key(b"secret", B, A, "s1");
    let good_sip = dialback_key(b"secret", B, "sip.test", "s2");
    let request = format!(
        "<db:verify from='corp-a.test' to='hub.test' id='s1'>{good_a}</db:verify>\
         <db:verify from='corp-a.test' to='sip.test' id='s2'>{good_sip}</db:verify>\
         <db:verify from='corp-a.test' to='hub.test' id='s2'>{good_a}</db:verify>\
         <db:verify from='corp-a.test' to='nobody.test' id='s1'>{good_a}</db:verify>"
    );
    inb.handle_input(request.as_bytes(), now);
    let wire = text(&inb.poll_transmit().unwrap());
    assert_eq!(
        wire,
        "<db:verify from='hub.test' to='corp-a.test' id='s1' type='valid'/>\
         <db:verify from='sip.test' to='corp-a.test' id='s2' type='valid'/>\
         <db:verify from='hub.test' to='corp-a.test' id='s2' type='invalid'/>\
         <db:verify from='nobody.test' to='corp-a.test' id='s1' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>"
    );
}

#[test]
fn forged_dialback_key_is_refused_and_the_stream_closed() {
    // The real gateways A and B are up; mallory connects to B claiming to be hub.test.
    let cfg_a = config(A, DomainKind::Hub, b"secret of a");
    let cfg_b = config(B, DomainKind::Xmpp, b"secret of b");
    let mut h = Harness::new(cfg_a, cfg_b.clone(), vec![A.into()], vec![B.into()]);
    h.run();
    let mut evil = Inbound::with_seed(cfg_b, h.now, Some(77));
    let header = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' to='corp-a.test' from='hub.test' version='1.0'>";
    evil.handle_input(header, h.now);
    evil.handle_input(STARTTLS, h.now);
    evil.tls_established(vec![], h.now); // no certificate for hub.test
    evil.handle_input(header, h.now);
    let forged = dialback_key(b"guessed secret", B, A, evil.stream_id().unwrap());
    evil.handle_input(
        format!("<db:result from='hub.test' to='corp-a.test'>{forged}</db:result>").as_bytes(),
        h.now,
    );
    let mut request = None;
    while let Some(o) = evil.poll_event() {
        if let Output::VerifyDialback(r) = o {
            request = Some(r);
        }
    }
    let request = request.expect("B asks the authoritative server");
    // B asks A over B's own stream to A; A answers from its secret.
    h.ba.out.verify_dialback(request.clone(), h.now);
    h.run();
    let verdict =
        h.ba.out_outputs
            .iter()
            .find_map(|o| match o {
                Output::DialbackVerified { request: r, valid } if *r == request => Some(*valid),
                _ => None,
            })
            .expect("A answered");
    assert!(!verdict);
    evil.dialback_verified(&request, verdict, h.now);
    let mut wire = Vec::new();
    while let Some(b) = evil.poll_transmit() {
        wire.extend(b);
    }
    let wire = text(&wire);
    assert!(
        wire.contains("<db:result from='corp-a.test' to='hub.test' type='invalid'/>"),
        "{wire}"
    );
    assert!(wire.ends_with("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"), "{wire}");
    assert!(evil.is_closed());
    // A stanza squeezed in afterwards goes nowhere.
    evil.handle_input(
        b"<message from='alice@hub.test' to='bob@corp-a.test'><body>x</body></message>",
        h.now,
    );
    while let Some(o) = evil.poll_event() {
        assert!(!matches!(o, Output::Event(_)), "{o:?}");
    }
}

#[test]
fn plaintext_injected_after_proceed_is_dropped_by_the_initiator() {
    let now = Instant::now();
    let mut out = Outbound::with_seed(config(A, DomainKind::Hub, b"s"), A, B, now, Some(5));
    while out.poll_transmit().is_some() {}
    out.handle_input(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='corp-a.test' to='hub.test' id='abc' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>", now);
    assert_eq!(
        text(&out.poll_transmit().unwrap()),
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    // A man in the middle appends a fake dialback success behind <proceed/>.
    out.handle_input(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><db:result xmlns:db='jabber:server:dialback' from='corp-a.test' to='hub.test' type='valid'/>", now);
    assert_eq!(out.poll_event(), Some(Output::StartTls));
    assert_eq!(out.poll_event(), None);
    out.tls_established(vec![], now);
    let restart = text(&out.poll_transmit().unwrap());
    assert!(
        restart.starts_with("<?xml version='1.0'?><stream:stream"),
        "{restart}"
    );
    assert!(!out.is_closed());
}

#[test]
fn initiator_refuses_a_peer_without_starttls() {
    let now = Instant::now();
    let mut out = Outbound::new(config(A, DomainKind::Hub, b"s"), A, B, now);
    let event = Event::Message(entente_model::Message {
        id: "m1".into(),
        from: entente_model::Address::new("alice", A, DomainKind::Hub).unwrap(),
        to: entente_model::Address::new("bob", B, DomainKind::Xmpp).unwrap(),
        body: "hi".into(),
        thread: None,
        ts: time::OffsetDateTime::UNIX_EPOCH,
    });
    out.send(event.clone(), now).unwrap();
    out.handle_input(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='corp-a.test' id='abc' version='1.0'><stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", now);
    let mut wire = Vec::new();
    while let Some(b) = out.poll_transmit() {
        wire.extend(b);
    }
    assert!(text(&wire).ends_with("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"));
    assert!(!text(&wire).contains("<message"));
    let outputs: Vec<_> = std::iter::from_fn(|| out.poll_event()).collect();
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Refused { events, .. } if events == &vec![event.clone()])),
        "{outputs:?}"
    );
}

#[test]
fn a_flood_of_dialback_requests_is_a_policy_violation() {
    let mut p = Peer::secured(&[]);
    let mut flood = String::new();
    for i in 0..100 {
        flood.push_str(&format!(
            "<db:result from='d{i}.corp-a.test' to='hub.test'>abcdef</db:result>"
        ));
    }
    p.send(flood.as_bytes());
    let asked = p
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::VerifyDialback(_)))
        .count();
    assert_eq!(asked, 64);
    assert!(
        p.closed_with(StreamCondition::PolicyViolation),
        "{}",
        p.wire()
    );
}

#[test]
fn certified_domain_is_authorised_by_dialback_without_a_callback() {
    let mut p = Peer::secured(&[B]);
    p.send(format!("<db:result from='{B}' to='{A}'>anykey</db:result>").as_bytes());
    assert!(p
        .wire()
        .ends_with("<db:result from='hub.test' to='corp-a.test' type='valid'/>"));
    assert!(!p
        .outputs
        .iter()
        .any(|o| matches!(o, Output::VerifyDialback(_))));
    p.send(b"<message from='juliet@corp-a.test/r' to='alice@hub.test'><body>hi</body></message>");
    assert_eq!(p.events().len(), 1);
}

#[test]
fn quiet_outbound_stream_closes_politely_but_not_while_it_talks() {
    let message = |n: usize| {
        Event::Message(entente_model::Message {
            id: format!("m{n}"),
            from: entente_model::Address::new("alice", A, DomainKind::Hub).unwrap(),
            to: entente_model::Address::new("bob", B, DomainKind::Xmpp).unwrap(),
            body: "still here".into(),
            thread: None,
            ts: time::OffsetDateTime::UNIX_EPOCH,
        })
    };
    // A peer that never sends anything, not even keepalives.
    let now = Instant::now();
    let mut out = Outbound::with_seed(config(A, DomainKind::Hub, b"s"), A, B, now, Some(8));
    let mut t = now;
    out.handle_input(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' from='corp-a.test' id='s1' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", t);
    out.tls_established(vec![], t);
    out.handle_input(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' from='corp-a.test' id='s2' version='1.0'><stream:features/>", t);
    out.send(message(0), t).unwrap();
    out.handle_input(
        b"<db:result from='corp-a.test' to='hub.test' type='valid'/>",
        t,
    );
    assert!(text(
        &std::iter::from_fn(|| out.poll_transmit())
            .flatten()
            .collect::<Vec<u8>>()
    )
    .contains("<message"));
    // A message every 5 minutes keeps the stream open although the peer never says a word.
    for n in 1..5 {
        t += Duration::from_secs(300);
        out.handle_timeout(t);
        out.send(message(n), t).unwrap();
        assert!(!out.is_closed());
    }
    // Ten quiet minutes later it closes with a closing tag, not a stream error.
    t += Duration::from_secs(600);
    out.handle_timeout(t);
    let wire = text(
        &std::iter::from_fn(|| out.poll_transmit())
            .flatten()
            .collect::<Vec<u8>>(),
    );
    assert!(out.is_closed());
    assert!(
        wire.ends_with("</stream:stream>") && !wire.contains("stream:error"),
        "{wire}"
    );
}

#[test]
fn header_without_version_is_refused_when_tls_is_required() {
    let mut p = Peer::new();
    p.send(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' to='hub.test' from='corp-a.test'>");
    assert!(
        p.closed_with(StreamCondition::UnsupportedVersion),
        "{}",
        p.wire()
    );
}

#[test]
fn old_dialback_only_server_is_served_when_plaintext_is_allowed() {
    let mut served = std::collections::BTreeMap::new();
    served.insert(A.to_string(), DomainKind::Hub);
    let mut cfg = entente_xmpp::Config::new(served, b"secret".to_vec());
    cfg.require_tls = false;
    let now = Instant::now();
    let mut inb = Inbound::new(std::sync::Arc::new(cfg), now);
    inb.handle_input(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' to='hub.test' from='corp-a.test'>", now);
    let wire = text(&inb.poll_transmit().unwrap());
    assert!(!wire.contains("features"), "{wire}");
    inb.handle_input(
        b"<db:result from='corp-a.test' to='hub.test'>k3y</db:result>",
        now,
    );
    assert!(matches!(inb.poll_event(), Some(Output::VerifyDialback(_))));
}
