//! Replays bytes captured from real Prosody 0.12 and ejabberd 23.01 servers (see
//! testdata/prosody/README.md and testdata/ejabberd/README.md).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use common::text;
use entente_model::{Address, DomainKind, Event, Message};
use entente_xmpp::{Config, DomainPair, Inbound, Outbound, Output};

const SECRET: &[u8] = b"example secret, not for production";

fn plaintext_config() -> Arc<Config> {
    let mut served = BTreeMap::new();
    served.insert("hub.test".to_string(), DomainKind::Hub);
    let mut cfg = Config::new(served, SECRET.to_vec());
    cfg.require_tls = false;
    cfg.offer_tls = false;
    cfg.wall_clock = || time::OffsetDateTime::UNIX_EPOCH;
    Arc::new(cfg)
}

fn drain_wire(f: &mut dyn FnMut() -> Option<Vec<u8>>) -> String {
    let mut all = Vec::new();
    while let Some(b) = f() {
        all.extend(b);
    }
    text(&all)
}

#[test]
fn prosody_stream_to_the_gateway() {
    let now = Instant::now();
    let mut inb = Inbound::with_seed(plaintext_config(), now, Some(1));
    inb.handle_input(include_bytes!("../testdata/prosody/in_header.xml"), now);
    let wire = drain_wire(&mut || inb.poll_transmit());
    assert!(wire.contains("from='hub.test' to='corp-a.test'"), "{wire}");
    assert!(wire.ends_with("<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"), "{wire}");

    inb.handle_input(include_bytes!("../testdata/prosody/in_db_result.xml"), now);
    let Some(Output::VerifyDialback(request)) = inb.poll_event() else {
        panic!("a dialback key to verify")
    };
    assert_eq!(request.originating, "corp-a.test");
    assert_eq!(request.receiving, "hub.test");
    assert_eq!(
        request.key,
        "1db17bc1022360c661e534477770cbc2c41a85a7683ae5edfbbe62fedf8869b7"
    );
    inb.dialback_verified(&request, true, now);
    assert_eq!(
        drain_wire(&mut || inb.poll_transmit()),
        "<db:result from='hub.test' to='corp-a.test' type='valid'/>"
    );
    assert_eq!(
        inb.poll_event(),
        Some(Output::Authorised(DomainPair {
            local: "hub.test".into(),
            remote: "corp-a.test".into()
        }))
    );

    inb.handle_input(include_bytes!("../testdata/prosody/in_message.xml"), now);
    assert_eq!(
        inb.poll_event(),
        Some(Output::Event(Event::Message(Message {
            id: "9df60002df994b2dba02c99611ebe554".into(),
            from: Address::new("alice", "corp-a.test", DomainKind::Xmpp).unwrap(),
            to: Address::new("bob", "hub.test", DomainKind::Hub).unwrap(),
            body: "hello from alice via s2s".into(),
            thread: None,
            ts: time::OffsetDateTime::UNIX_EPOCH,
        })))
    );

    // Prosody checking the key of the gateway's own outbound stream: the stateless key verifies.
    inb.handle_input(include_bytes!("../testdata/prosody/in_db_verify.xml"), now);
    assert_eq!(
        drain_wire(&mut || inb.poll_transmit()),
        "<db:verify from='hub.test' to='corp-a.test' id='9f24561d-4ee8-46c0-bfa2-60947bf603ba' type='valid'/>"
    );
}

#[test]
fn gateway_stream_to_prosody() {
    let now = Instant::now();
    let mut out = Outbound::with_seed(plaintext_config(), "hub.test", "corp-a.test", now, Some(1));
    let echo = Event::Message(Message {
        id: "echo-9df60002df994b2dba02c99611ebe554".into(),
        from: Address::new("bob", "hub.test", DomainKind::Hub).unwrap(),
        to: Address::new("alice", "corp-a.test", DomainKind::Xmpp).unwrap(),
        body: "echo: hello from alice via s2s".into(),
        thread: None,
        ts: time::OffsetDateTime::UNIX_EPOCH,
    });
    out.send(echo, now).unwrap();
    let header = drain_wire(&mut || out.poll_transmit());
    assert!(
        header.starts_with("<?xml version='1.0'?><stream:stream"),
        "{header}"
    );
    out.handle_input(
        include_bytes!("../testdata/prosody/out_header_features.xml"),
        now,
    );
    // Same secret, same stream id: the very key Prosody accepted.
    assert_eq!(
        drain_wire(&mut || out.poll_transmit()),
        "<db:result from='hub.test' to='corp-a.test'>47e1e44080cd9335b6f60551bf5d08cb930c9fe8eaea2acbc3e5f178b098fa10</db:result>"
    );
    out.handle_input(
        include_bytes!("../testdata/prosody/out_db_result_valid.xml"),
        now,
    );
    let stanza = drain_wire(&mut || out.poll_transmit());
    assert!(
        stanza.starts_with("<message xmlns='jabber:server'"),
        "{stanza}"
    );
    assert!(
        stanza.contains("<body>echo: hello from alice via s2s</body>"),
        "{stanza}"
    );
    assert_eq!(
        out.poll_event(),
        Some(Output::Authorised(DomainPair {
            local: "hub.test".into(),
            remote: "corp-a.test".into()
        }))
    );
}

#[test]
fn ejabberd_stream_to_the_gateway() {
    let now = Instant::now();
    let mut inb = Inbound::with_seed(plaintext_config(), now, Some(1));
    inb.handle_input(include_bytes!("../testdata/ejabberd/in_header.xml"), now);
    inb.handle_input(include_bytes!("../testdata/ejabberd/in_db_result.xml"), now);
    let Some(Output::VerifyDialback(request)) = inb.poll_event() else {
        panic!("a dialback key to verify")
    };
    assert_eq!(
        request.key,
        "d1c1eb10a2420d549ba8e6f06ca0e0d15238048fb9d39098206429bbcfb5d3fb"
    );
    inb.dialback_verified(&request, true, now);
    assert!(matches!(inb.poll_event(), Some(Output::Authorised(_))));
    inb.handle_input(include_bytes!("../testdata/ejabberd/in_message.xml"), now);
    let Some(Output::Event(Event::Message(m))) = inb.poll_event() else {
        panic!("the message")
    };
    assert_eq!(m.body, "hello from alice via ejabberd");
    assert_eq!(m.from.to_string(), "alice@corp-a.test");
}

#[test]
fn ejabberd_checks_our_key_on_a_stream_of_its_own() {
    // The key in the capture was made for ejabberd's stream id 5205816963976277712 with the
    // example's secret; a fresh inbound stream verifies it without any memory of sending it.
    let now = Instant::now();
    let mut inb = Inbound::with_seed(plaintext_config(), now, Some(1));
    inb.handle_input(
        include_bytes!("../testdata/ejabberd/verify_header.xml"),
        now,
    );
    while inb.poll_transmit().is_some() {}
    inb.handle_input(
        include_bytes!("../testdata/ejabberd/verify_request.xml"),
        now,
    );
    assert_eq!(
        drain_wire(&mut || inb.poll_transmit()),
        "<db:verify from='hub.test' to='corp-a.test' id='5205816963976277712' type='valid'/>"
    );
}

#[test]
fn gateway_stream_to_ejabberd() {
    let now = Instant::now();
    let mut out = Outbound::with_seed(plaintext_config(), "hub.test", "corp-a.test", now, Some(1));
    let echo = Event::Message(Message {
        id: "e1".into(),
        from: Address::new("bob", "hub.test", DomainKind::Hub).unwrap(),
        to: Address::new("alice", "corp-a.test", DomainKind::Xmpp).unwrap(),
        body: "echo".into(),
        thread: None,
        ts: time::OffsetDateTime::UNIX_EPOCH,
    });
    out.send(echo, now).unwrap();
    while out.poll_transmit().is_some() {}
    out.handle_input(include_bytes!("../testdata/ejabberd/out_header.xml"), now);
    // An empty SASL mechanism list is not an offer of EXTERNAL: dialback it is.
    out.handle_input(include_bytes!("../testdata/ejabberd/out_features.xml"), now);
    assert_eq!(
        drain_wire(&mut || out.poll_transmit()),
        "<db:result from='hub.test' to='corp-a.test'>80864e2a6494fc73de98f462bfe41ea67f818984584e454b3a04cafc95c711c3</db:result>"
    );
    out.handle_input(
        include_bytes!("../testdata/ejabberd/out_db_result_valid.xml"),
        now,
    );
    assert!(drain_wire(&mut || out.poll_transmit()).contains("<body>echo</body>"));
}
