//! Measures how long the inbound machine takes per stanza: read (limits included), typed by
//! xmpp-parsers, translated into a canonical event. Run with `--release`:
//!
//! cargo run --release -p entente-xmpp --example inbound_timing

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use entente_model::DomainKind;
use entente_xmpp::{Config, Inbound, Limits, Output, ReadEvent, StreamReader};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
    to='hub.test' from='corp-a.test' version='1.0'>";
const MESSAGE: &[u8] = b"<message from='juliet@corp-a.test/balcony' to='alice@hub.test' type='chat' id='purple2a7c'><body>Wherefore art thou, Romeo? Deny thy father and refuse thy name.</body><thread>th-1</thread><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message>";

fn main() {
    let n = 100_000;
    let mut batch = Vec::with_capacity(MESSAGE.len() * 1000);
    for _ in 0..1000 {
        batch.extend_from_slice(MESSAGE);
    }

    // The reader alone.
    let mut reader = StreamReader::new(Limits::default());
    let mut h: &[u8] = HEADER;
    reader.read(&mut h).unwrap();
    let start = Instant::now();
    let mut count = 0;
    for _ in 0..n / 1000 {
        let mut input: &[u8] = &batch;
        while let Some(ReadEvent::Element(_)) = reader.read(&mut input).unwrap() {
            count += 1;
        }
    }
    let reader_time = start.elapsed();
    assert_eq!(count, n);

    // The whole inbound machine on an authorised stream.
    let mut served = BTreeMap::new();
    served.insert("hub.test".to_string(), DomainKind::Hub);
    let cfg = Arc::new(Config::new(served, b"timing".to_vec()));
    let now = Instant::now();
    let mut inb = Inbound::new(cfg, now);
    inb.handle_input(HEADER, now);
    inb.handle_input(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", now);
    inb.tls_established(vec!["corp-a.test".into()], now);
    inb.handle_input(HEADER, now);
    inb.handle_input(include_bytes!("../testdata/sasl_external_auth.xml"), now);
    inb.handle_input(HEADER, now);
    while inb.poll_event().is_some() {}
    while inb.poll_transmit().is_some() {}
    let start = Instant::now();
    let mut events = 0;
    for _ in 0..n / 1000 {
        inb.handle_input(&batch, now);
        while let Some(o) = inb.poll_event() {
            if let Output::Event(_) = o {
                events += 1;
            }
        }
    }
    let machine_time = start.elapsed();
    assert_eq!(events, n);

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{n} chat messages of {} bytes: reader {:.2} µs/stanza, inbound machine (read + xmpp-parsers + event) {:.2} µs/stanza",
        MESSAGE.len(),
        per(reader_time),
        per(machine_time)
    );
}
