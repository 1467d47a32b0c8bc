//! The initiating side against a scripted peer: fallbacks, refusals and what must not authorise.

mod common;

use std::time::{Duration, Instant};

use common::*;
use entente_model::{Address, DomainKind, ErrorCode, Event, Message};
use entente_xmpp::{CloseReason, DomainPair, Outbound, Output, StreamCondition};

const PEER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' from='corp-a.test' to='hub.test' id='ID' version='1.0'>";

fn header(id: &str) -> Vec<u8> {
    PEER_HEADER.replace("ID", id).into_bytes()
}

fn message() -> Event {
    Event::Message(Message {
        id: "m1".into(),
        from: Address::new("alice", A, DomainKind::Hub).unwrap(),
        to: Address::new("bob", B, DomainKind::Xmpp).unwrap(),
        body: "hi".into(),
        thread: None,
        ts: time::OffsetDateTime::UNIX_EPOCH,
    })
}

struct Script {
    out: Outbound,
    now: Instant,
    wire: String,
    outputs: Vec<Output>,
}

impl Script {
    /// Through STARTTLS up to the features of the secured stream (`features` inside).
    fn secured(features: &str) -> Script {
        let now = Instant::now();
        let out = Outbound::with_seed(config(A, DomainKind::Hub, b"s"), A, B, now, Some(2));
        let mut s = Script {
            out,
            now,
            wire: String::new(),
            outputs: Vec::new(),
        };
        let mut first = header("s1");
        first.extend_from_slice(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>");
        s.feed(&first);
        s.feed(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(s.outputs, vec![Output::StartTls]);
        s.out.tls_established(vec![B.to_string()], now);
        let mut second = header("s2");
        second
            .extend_from_slice(format!("<stream:features>{features}</stream:features>").as_bytes());
        s.feed(&second);
        s
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.out.handle_input(bytes, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(b) = self.out.poll_transmit() {
            self.wire.push_str(&text(&b));
        }
        while let Some(o) = self.out.poll_event() {
            self.outputs.push(o);
        }
    }

    fn send(&mut self, e: Event) {
        self.out.send(e, self.now).unwrap();
        self.drain();
    }

    fn refused(&self) -> Option<(ErrorCode, usize)> {
        self.outputs.iter().find_map(|o| match o {
            Output::Refused { code, events, .. } => Some((*code, events.len())),
            _ => None,
        })
    }
}

const EXTERNAL: &str = "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>";

#[test]
fn sasl_failure_falls_back_to_dialback_on_the_same_stream() {
    let mut s = Script::secured(EXTERNAL);
    assert!(
        s.wire.ends_with("mechanism='EXTERNAL'>aHViLnRlc3Q=</auth>"),
        "{}",
        s.wire
    );
    s.send(message());
    assert!(!s.wire.contains("<message"));
    s.feed(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
    assert!(
        s.wire
            .contains("<db:result from='hub.test' to='corp-a.test'>"),
        "{}",
        s.wire
    );
    s.feed(b"<db:result from='corp-a.test' to='hub.test' type='valid'/>");
    assert!(s.wire.ends_with("</message>"), "{}", s.wire);
}

#[test]
fn sasl_success_restarts_the_stream_and_authorises_the_pair() {
    let mut s = Script::secured(EXTERNAL);
    s.send(message());
    s.feed(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    // A new header right after <success/>, nothing else.
    assert!(s.wire.ends_with("version='1.0'>"), "{}", s.wire);
    let mut third = header("s3");
    third.extend_from_slice(b"<stream:features/>");
    s.feed(&third);
    assert!(s.outputs.contains(&Output::Authorised(DomainPair {
        local: A.into(),
        remote: B.into()
    })));
    assert!(s.wire.ends_with("</message>"), "{}", s.wire);
    assert!(!s.wire.contains("db:result"));
}

#[test]
fn invalid_dialback_refuses_the_queued_events() {
    let mut s = Script::secured("<dialback xmlns='urn:xmpp:features:dialback'/>");
    s.send(message());
    s.feed(b"<db:result from='corp-a.test' to='hub.test' type='invalid'/>");
    assert_eq!(s.refused(), Some((ErrorCode::NotAuthorized, 1)));
    assert!(!s.wire.contains("<message"));
}

#[test]
fn an_unsolicited_valid_answer_authorises_nothing() {
    let mut s = Script::secured("<dialback xmlns='urn:xmpp:features:dialback'/>");
    s.feed(b"<db:result from='corp-a.test' to='hub.test' type='valid'/>");
    assert!(!s.outputs.iter().any(|o| matches!(o, Output::Authorised(_))));
    // Even for a pair whose key was sent, an answer naming another pair does not count.
    s.send(message());
    s.feed(b"<db:result from='corp-b.test' to='hub.test' type='valid'/>");
    assert!(!s.wire.contains("<message"));
}

#[test]
fn unanswered_pair_times_out() {
    let mut s = Script::secured("<dialback xmlns='urn:xmpp:features:dialback'/>");
    s.send(message());
    s.now += Duration::from_secs(61);
    s.out.handle_timeout(s.now);
    s.drain();
    assert_eq!(s.refused(), Some((ErrorCode::RemoteServerTimeout, 1)));
}

#[test]
fn peer_stream_error_closes_and_returns_events() {
    let mut s = Script::secured("<dialback xmlns='urn:xmpp:features:dialback'/>");
    s.send(message());
    s.feed(b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bye</text></stream:error>");
    assert!(s.outputs.contains(&Output::Closed(CloseReason::Received(
        StreamCondition::SystemShutdown
    ))));
    assert_eq!(s.refused(), Some((ErrorCode::RemoteServerNotFound, 1)));
    assert!(s.wire.ends_with("</stream:stream>"));
    assert!(s.out.send(message(), s.now).is_err());
}

#[test]
fn header_from_another_domain_is_invalid_from() {
    let now = Instant::now();
    let mut out = Outbound::new(config(A, DomainKind::Hub, b"s"), A, B, now);
    out.handle_input(
        PEER_HEADER
            .replace("from='corp-a.test'", "from='evil.test'")
            .as_bytes(),
        now,
    );
    let wire: Vec<u8> = std::iter::from_fn(|| out.poll_transmit())
        .flatten()
        .collect();
    assert!(text(&wire).contains("<invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"));
    assert!(out.is_closed());
}
