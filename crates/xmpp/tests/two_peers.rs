//! Two gateways negotiate with each other through memory and exchange messages both ways.

mod common;

use common::*;
use entente_model::{
    Address, ChatState, DomainKind, ErrorCode, Event, Message, Presence, PresenceKind, Receipt,
    Show, Subscription, SubscriptionKind, Typing,
};
use entente_xmpp::{DomainPair, Output};

fn hub(name: &str) -> Address {
    Address::new(name, A, DomainKind::Hub).unwrap()
}

fn xmpp(name: &str) -> Address {
    Address::new(name, B, DomainKind::Xmpp).unwrap()
}

fn message(id: &str, from: Address, to: Address, body: &str) -> Event {
    Event::Message(Message {
        id: id.into(),
        from,
        to,
        body: body.into(),
        thread: Some("t1".into()),
        ts: time::OffsetDateTime::UNIX_EPOCH,
    })
}

fn harness(certs: bool) -> Harness {
    let cfg_a = config(A, DomainKind::Hub, b"secret of a");
    let cfg_b = config(B, DomainKind::Xmpp, b"secret of b");
    let (a_cert, b_cert) = if certs {
        (vec![A.to_string()], vec![B.to_string()])
    } else {
        (vec![], vec![])
    };
    Harness::new(cfg_a, cfg_b, a_cert, b_cert)
}

fn exchange_both_ways(h: &mut Harness) {
    h.run();
    let to_b = message("m1", hub("alice"), xmpp("bob"), "hello bob <&>");
    h.ab.out.send(to_b.clone(), h.now).unwrap();
    let to_a = message("m2", xmpp("bob"), hub("alice"), "hi alice");
    h.ba.out.send(to_a.clone(), h.now).unwrap();
    h.run();
    assert_eq!(h.at_b, vec![to_b]);
    assert_eq!(h.at_a, vec![to_a]);
}

#[test]
fn sasl_external_both_ways() {
    let mut h = harness(true);
    exchange_both_ways(&mut h);
    let wire = text(&h.ab.out_wire);
    assert!(wire.contains("mechanism='EXTERNAL'"), "{wire}");
    assert!(!wire.contains("db:result"), "{wire}");
    let pair = DomainPair {
        local: A.into(),
        remote: B.into(),
    };
    assert!(h.ab.out_outputs.contains(&Output::Authorised(pair.clone())));
    // Both ends of the stream know the pair came by SASL EXTERNAL, not dialback.
    assert_eq!(h.ab.out.sasl_pair(), Some(&pair));
    assert_eq!(
        h.ab.inb.sasl_pair(),
        Some(&DomainPair {
            local: B.into(),
            remote: A.into()
        })
    );
    // The stanza went out after TLS and SASL: after the third stream header.
    let headers: Vec<_> = wire.match_indices("<stream:stream").collect();
    assert_eq!(headers.len(), 3, "{wire}");
    assert!(wire.find("<message").unwrap() > headers[2].0);
}

#[test]
fn dialback_both_ways() {
    let mut h = harness(false);
    exchange_both_ways(&mut h);
    let a_out = text(&h.ab.out_wire);
    assert!(
        a_out.contains("<db:result from='hub.test' to='corp-a.test'>"),
        "{a_out}"
    );
    assert!(!a_out.contains("EXTERNAL"), "{a_out}");
    assert!(h.ab.out_outputs.contains(&Output::Authorised(DomainPair {
        local: A.into(),
        remote: B.into()
    })));
    assert_eq!(h.ab.out.sasl_pair(), None);
    assert_eq!(h.ab.inb.sasl_pair(), None);
    // B asked A (over B's own outbound stream) whether A's key is genuine.
    let b_out = text(&h.ba.out_wire);
    assert!(
        b_out.contains("<db:verify from='corp-a.test' to='hub.test'"),
        "{b_out}"
    );
    let a_in = text(&h.ba.in_wire);
    assert!(a_in.contains("type='valid'"), "{a_in}");
    // Both streams went through STARTTLS before any dialback.
    assert!(a_out.find("<starttls").unwrap() < a_out.find("<db:result").unwrap());
}

#[test]
fn every_event_kind_crosses() {
    let mut h = harness(true);
    h.run();
    let events = vec![
        Event::Typing(Typing {
            from: hub("alice"),
            to: xmpp("bob"),
            state: ChatState::Composing,
        }),
        Event::Receipt(Receipt {
            from: hub("alice"),
            to: xmpp("bob"),
            id: "m7".into(),
        }),
        Event::Presence(Presence {
            from: hub("alice"),
            to: Some(xmpp("bob")),
            kind: PresenceKind::Available {
                show: Show::Dnd,
                status: Some("busy".into()),
            },
        }),
        Event::Presence(Presence {
            from: hub("alice"),
            to: Some(xmpp("bob")),
            kind: PresenceKind::Unavailable { status: None },
        }),
        Event::Presence(Presence {
            from: hub("alice"),
            to: Some(xmpp("bob")),
            kind: PresenceKind::Probe,
        }),
        Event::Subscription(Subscription {
            from: hub("alice"),
            to: xmpp("bob"),
            kind: SubscriptionKind::Subscribe,
        }),
        Event::Subscription(Subscription {
            from: hub("alice"),
            to: xmpp("bob"),
            kind: SubscriptionKind::Unsubscribed,
        }),
        Event::Failure(entente_model::Failure {
            from: hub("alice"),
            to: xmpp("bob"),
            id: "m9".into(),
            code: ErrorCode::RecipientUnavailable,
            text: "offline".into(),
        }),
    ];
    for e in &events {
        h.ab.out.send(e.clone(), h.now).unwrap();
    }
    h.run();
    assert_eq!(h.at_b, events);
}

#[test]
fn one_stream_carries_several_domain_pairs() {
    let mut served = std::collections::BTreeMap::new();
    served.insert(A.to_string(), DomainKind::Hub);
    served.insert("sip.test".to_string(), DomainKind::Sip);
    let mut cfg = entente_xmpp::Config::new(served, b"secret of a".to_vec());
    cfg.wall_clock = || time::OffsetDateTime::UNIX_EPOCH;
    let cfg_a = std::sync::Arc::new(cfg);
    let cfg_b = config(B, DomainKind::Xmpp, b"secret of b");
    let mut h = Harness::new(cfg_a, cfg_b, vec![A.into()], vec![B.into()]);
    h.run();
    let from_sip = Address::new("carol", "sip.test", DomainKind::Sip).unwrap();
    let first = message("s1", from_sip.clone(), xmpp("bob"), "from sip");
    h.ab.out.send(first.clone(), h.now).unwrap();
    h.run();
    // SASL covered hub.test only; sip.test was added by dialback on the same stream.
    let wire = text(&h.ab.out_wire);
    assert!(
        wire.contains("<db:result from='sip.test' to='corp-a.test'>"),
        "{wire}"
    );
    assert_eq!(h.at_b, vec![first]);
    let both: Vec<_> =
        h.ab.in_outputs
            .iter()
            .filter(|o| matches!(o, Output::Authorised(_)))
            .collect();
    assert_eq!(both.len(), 2, "{both:?}");
}

#[test]
fn disco_and_ping_are_answered_on_the_other_stream() {
    let mut h = harness(true);
    h.run();
    // B's user asks A's server for disco#info and pings it, on B's outbound stream.
    let disco = b"<iq type='get' id='d1' from='bob@corp-a.test/res' to='hub.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>\
<iq type='get' id='p1' from='corp-a.test' to='hub.test'><ping xmlns='urn:xmpp:ping'/></iq>\
<iq type='set' id='v1' from='bob@corp-a.test/res' to='alice@hub.test'><query xmlns='jabber:iq:version'/></iq>";
    // Written by hand into B's stream: the harness drives the same Inbound the driver would.
    h.ba.inb.handle_input(disco, h.now);
    h.run();
    let answers = text(&h.ab.out_wire);
    assert!(answers.contains("id='d1'"), "{answers}");
    assert!(answers.contains("urn:xmpp:receipts"), "{answers}");
    assert!(
        answers.contains("http://jabber.org/protocol/chatstates"),
        "{answers}"
    );
    assert!(answers.contains("id='p1'"), "{answers}");
    assert!(answers.contains("service-unavailable"), "{answers}");
    assert!(h.at_a.is_empty());
}

#[test]
fn keepalives_keep_quiet_streams_open() {
    let mut h = harness(true);
    h.run();
    let before = h.ab.out_wire.len();
    h.advance(std::time::Duration::from_secs(61));
    assert_eq!(&h.ab.out_wire[before..], b" ");
    // Twenty minutes without a stanza, longer than the idle timeout: the keepalives each side
    // sends count as traffic for the other, so both streams stay open.
    for _ in 0..20 {
        h.advance(std::time::Duration::from_secs(60));
    }
    assert!(!h.ab.out.is_closed());
    assert!(!h.ab.inb.is_closed());
}
