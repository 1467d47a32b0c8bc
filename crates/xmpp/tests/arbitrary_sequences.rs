//! The same invariants the fuzz targets check, over random operation sequences, so they run
//! with every `cargo test`: no panic, no event before a pair is authorised, nothing after Closed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use entente_model::DomainKind;
use entente_xmpp::{Inbound, Output};
use proptest::prelude::*;

const PIECES: &[&[u8]] = &[
    include_bytes!("../testdata/peer_header.xml"),
    include_bytes!("../testdata/starttls.xml"),
    include_bytes!("../testdata/sasl_external_auth.xml"),
    include_bytes!("../testdata/chat_message.xml"),
    include_bytes!("../testdata/presence_away.xml"),
    include_bytes!("../testdata/error_message.xml"),
    b"<db:result from='corp-a.test' to='hub.test'>0123abcd</db:result>",
    b"<db:verify from='corp-a.test' to='hub.test' id='x'>0123abcd</db:verify>",
    b"<message from='mallory@evil.test' to='alice@hub.test'><body>x</body></message>",
    b"<iq type='get' id='1' from='corp-a.test' to='hub.test'><ping xmlns='urn:xmpp:ping'/></iq>",
    b" ",
    b"</stream:stream>",
    b"<message from='juliet@corp-a.test' to='alice@hub.test'><body>unfinished",
];

#[derive(Debug, Clone)]
enum Op {
    Piece(usize, usize),
    Bytes(Vec<u8>),
    Tls(bool),
    Verdict(bool),
    Wait(u64),
    Eof,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PIECES.len(), 1usize..40).prop_map(|(i, cut)| Op::Piece(i, cut)),
        2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Bytes),
        2 => any::<bool>().prop_map(Op::Tls),
        1 => any::<bool>().prop_map(Op::Verdict),
        1 => (0u64..200).prop_map(Op::Wait),
        1 => Just(Op::Eof),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn inbound_keeps_its_invariants(
        prefix in 0usize..4,
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        // Most sequences start from a stream negotiated some of the way, so that the later
        // operations reach authorised states too.
        let negotiate: Vec<Op> = [
            Op::Piece(0, 40),
            Op::Piece(1, 10),
            Op::Tls(prefix == 3),
            Op::Piece(0, 7),
            Op::Piece(2, 30),
            Op::Piece(0, 99),
        ]
        .into_iter()
        .take([0, 2, 4, 6][prefix])
        .collect();
        let ops: Vec<Op> = negotiate.into_iter().chain(ops).collect();
        let start = Instant::now();
        let mut now = start;
        let mut inb = Inbound::with_seed(config(A, DomainKind::Hub, b"s"), now, Some(3));
        let mut authorised = false;
        let mut closed = false;
        let mut requests = Vec::new();
        let mut delivered = 0usize;
        for op in ops {
            match op {
                Op::Piece(i, cut) => {
                    // Each piece arrives split in two reads at an arbitrary point.
                    let piece = PIECES[i];
                    let cut = cut.min(piece.len());
                    inb.handle_input(&piece[..cut], now);
                    inb.handle_input(&piece[cut..], now);
                }
                Op::Bytes(b) => inb.handle_input(&b, now),
                Op::Tls(cert) => {
                    let ids = if cert { vec![B.to_string()] } else { vec![] };
                    inb.tls_established(ids, now);
                }
                Op::Verdict(valid) => {
                    if let Some(r) = requests.pop() {
                        inb.dialback_verified(&r, valid, now);
                    }
                }
                Op::Wait(s) => {
                    now += Duration::from_secs(s);
                    inb.handle_timeout(now);
                }
                Op::Eof => inb.handle_eof(now),
            }
            while inb.poll_transmit().is_some() {}
            while let Some(o) = inb.poll_event() {
                prop_assert!(!closed, "output after Closed: {:?}", o);
                match o {
                    Output::Authorised(_) => authorised = true,
                    Output::Event(_) | Output::Reply(_) => {
                        delivered += 1;
                        prop_assert!(authorised)
                    }
                    Output::VerifyDialback(r) => requests.push(r),
                    Output::Closed(_) => closed = true,
                    _ => {}
                }
            }
            prop_assert_eq!(closed, inb.is_closed());
            if let Some(t) = inb.poll_timeout() {
                prop_assert!(t >= start);
            }
        }
        DELIVERED.fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
    }
}

static DELIVERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn sequences_reach_delivery() {
    // Runs the property on its own cases and checks that the generator is not vacuous: some
    // sequences must get as far as delivering events.
    inbound_keeps_its_invariants();
    assert!(DELIVERED.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

const PEER_PIECES: &[&[u8]] = &[
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' from='corp-a.test' to='hub.test' id='s1' version='1.0'>",
    b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
    b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
    b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
    b"<stream:features/>",
    b"<db:result from='corp-a.test' to='hub.test' type='valid'/>",
    b"<db:result from='corp-a.test' to='hub.test' type='invalid'/>",
    b"<db:verify from='corp-a.test' to='hub.test' id='x' type='valid'/>",
    b"<message from='x@corp-a.test' to='alice@hub.test'><body>not for us</body></message>",
    b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    b" ",
];

#[derive(Debug, Clone)]
enum OutOp {
    Piece(usize),
    Tls,
    Send,
    Wait(u64),
}

fn out_op() -> impl Strategy<Value = OutOp> {
    prop_oneof![
        8 => (0..PEER_PIECES.len()).prop_map(OutOp::Piece),
        2 => Just(OutOp::Tls),
        2 => Just(OutOp::Send),
        1 => (0u64..120).prop_map(OutOp::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn outbound_never_writes_a_stanza_before_authorisation(
        prefix in 0usize..4,
        ops in proptest::collection::vec(out_op(), 0..40),
    ) {
        // As for the inbound side, most sequences start part-way through a negotiation.
        let negotiate: Vec<OutOp> = match prefix {
            0 => vec![],
            1 => vec![OutOp::Piece(0), OutOp::Piece(1), OutOp::Piece(2)],
            2 => vec![OutOp::Piece(0), OutOp::Piece(1), OutOp::Piece(2), OutOp::Tls, OutOp::Piece(0), OutOp::Piece(6), OutOp::Send],
            _ => vec![OutOp::Piece(0), OutOp::Piece(1), OutOp::Piece(2), OutOp::Tls, OutOp::Piece(0), OutOp::Piece(3), OutOp::Piece(4), OutOp::Piece(0), OutOp::Piece(6)],
        };
        let ops: Vec<OutOp> = negotiate.into_iter().chain(ops).collect();
        let mut written = 0usize;
        let start = Instant::now();
        let mut now = start;
        let mut out = entente_xmpp::Outbound::with_seed(config(A, DomainKind::Hub, b"s"), A, B, now, Some(4));
        let mut authorised = false;
        let mut tls_asked = false;
        let mut tls_done = false;
        let mut closed = false;
        for op in ops {
            match op {
                OutOp::Piece(i) => out.handle_input(PEER_PIECES[i], now),
                OutOp::Tls => {
                    out.tls_established(vec![], now);
                    tls_done |= tls_asked;
                }
                OutOp::Send => {
                    let event = entente_model::Event::Message(entente_model::Message {
                        id: "m".into(),
                        from: entente_model::Address::new("alice", A, DomainKind::Hub).unwrap(),
                        to: entente_model::Address::new("bob", B, DomainKind::Xmpp).unwrap(),
                        body: "hi".into(),
                        thread: None,
                        ts: time::OffsetDateTime::UNIX_EPOCH,
                    });
                    let _ = out.send(event, now);
                }
                OutOp::Wait(s) => {
                    now += Duration::from_secs(s);
                    out.handle_timeout(now);
                }
            }
            while let Some(o) = out.poll_event() {
                prop_assert!(!closed, "{:?} after Closed", o);
                match o {
                    Output::StartTls => tls_asked = true,
                    Output::Authorised(_) => {
                        prop_assert!(tls_done, "authorised before TLS");
                        authorised = true;
                    }
                    Output::Closed(_) => closed = true,
                    _ => {}
                }
            }
            while let Some(bytes) = out.poll_transmit() {
                if bytes.windows(8).any(|w| w == b"<message") {
                    prop_assert!(authorised && tls_done);
                    written += 1;
                }
            }
        }
        WRITTEN.fetch_add(written, std::sync::atomic::Ordering::Relaxed);
    }
}

static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn outbound_sequences_reach_writing() {
    outbound_never_writes_a_stanza_before_authorisation();
    assert!(WRITTEN.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
