//! Hostile input on the real `sip` listener: garbage, truncated messages, lying Content-Length,
//! oversize, senders that are not partners, a certificate partner over plain UDP, and a flood
//! from one address. The server must answer what can be answered (400, 403, 513), never crash,
//! and keep serving hub users and partners afterwards.

mod common;
mod sip;

use common::{Server, PATIENCE};
use sip::{partner_toml, request, TcpPeer, UdpPeer, HUB, PARTNER};
use std::time::Duration;

/// A short wait for an answer that should come at once (a failure if it does not).
const ANSWER: Duration = Duration::from_secs(5);
/// How long to listen for an answer that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn server() -> Server {
    let mut extra = partner_toml(PARTNER, None, "none");
    extra.push_str(&partner_toml("secure.test", None, "certificate"));
    Server::start_listening(&extra, "sip = \"127.0.0.1:0\"\n")
}

fn message(peer_via: &str, from: &str, to_user: &str, body: &str) -> Vec<u8> {
    request(
        "MESSAGE",
        &format!("{to_user}@{HUB}"),
        from,
        peer_via,
        "Content-Type: text/plain\r\n",
        body,
    )
}

/// Sends `bytes` until a final answer comes (the listener may shed load for a while).
async fn answer_eventually(peer: &UdpPeer, bytes: &[u8]) -> entente_sip::SipMessage {
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        peer.send(bytes).await;
        if let Some(r) = peer.final_response(Duration::from_millis(500)).await {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway stopped answering"
        );
    }
}

#[tokio::test]
async fn garbage_truncation_and_lying_lengths_over_udp() {
    let server = server();
    let peer = UdpPeer::new(server.listeners["sip"]).await;
    let via = peer.via();

    // Garbage: nothing to answer.
    for junk in [
        &b"\x00\x01\x02\x03"[..],
        b"hello",
        b"SIP/2.0\r\n\r\n",
        b"MESSAGE\r\n\r\n",
        &[0xffu8; 1500][..],
    ] {
        peer.send(junk).await;
    }
    assert!(peer.recv(QUIET).await.is_none(), "garbage was answered");

    // A body shorter than its Content-Length (a truncated datagram): 400.
    let mut truncated = message(&via, "carol@corp-b.test", "bob", "hello there");
    truncated.truncate(truncated.len() - 5);
    peer.send(&truncated).await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(400), "{r}");

    // Content-Length that is not a number, negative, or given twice: 400.
    for bad in ["abc", "-5", "5, 6"] {
        let text = String::from_utf8(message(&via, "carol@corp-b.test", "bob", "hi")).unwrap();
        let text = text.replace("Content-Length: 2", &format!("Content-Length: {bad}"));
        peer.send(text.as_bytes()).await;
        let r = peer.final_response(ANSWER).await.expect("an answer");
        assert_eq!(r.status(), Some(400), "Content-Length {bad}: {r}");
    }
    let text = String::from_utf8(message(&via, "carol@corp-b.test", "bob", "hi")).unwrap();
    let twice = text.replace("Content-Length: 2", "Content-Length: 2\r\nl: 2");
    peer.send(twice.as_bytes()).await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(400), "{r}");

    // A body over the hub's message limit (16 KiB): 413, nothing delivered.
    let large = message(&via, "carol@corp-b.test", "bob", &"y".repeat(20_000));
    peer.send(&large).await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(413), "{r}");

    // Larger than the message limit: 513, or nothing; never a crash.
    let big = message(&via, "carol@corp-b.test", "bob", &"x".repeat(65_000));
    peer.send(&big).await;
    if let Some(r) = peer.final_response(QUIET).await {
        assert!(matches!(r.status(), Some(413 | 513)), "{r}");
    }

    // The listener still works: a partner's message is delivered.
    let mut bob = server.login("bob").await;
    let ok = message(&via, "carol@corp-b.test", "bob", "still there?");
    let r = answer_eventually(&peer, &ok).await;
    assert_eq!(r.status(), Some(200), "{r}");
    bob.expect("the message", |v| {
        v["type"] == "message" && v["body"] == "still there?"
    })
    .await;
}

#[tokio::test]
async fn strangers_and_unauthenticated_partners_get_403() {
    let server = server();
    let peer = UdpPeer::new(server.listeners["sip"]).await;
    let via = peer.via();
    let mut bob = server.login("bob").await;

    for from in [
        "mallory@evil.test", // not a partner
        "alice@hub.test",    // speaking for a hub user
        "dave@secure.test",  // a certificate partner, but over UDP
    ] {
        peer.send(&message(&via, from, "bob", "let me in")).await;
        let r = peer.final_response(ANSWER).await.expect("an answer");
        assert_eq!(r.status(), Some(403), "{from}: {r}");
        assert!(r.header("Warning").is_some(), "{r}");
    }
    // A From that is no SIP address at all: 400.
    peer.send(&message(&via, "carol@corp-b.test>garbage", "bob", "x"))
        .await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert!(matches!(r.status(), Some(400 | 403)), "{r}");
    // Other methods are refused the same way, before any state is made.
    let sub = request(
        "SUBSCRIBE",
        &format!("bob@{HUB}"),
        "mallory@evil.test",
        &via,
        "Event: presence\r\nContact: <sip:m@127.0.0.1>\r\n",
        "",
    );
    peer.send(&sub).await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(403), "{r}");
    // Nothing reached bob.
    assert!(bob
        .try_recv(QUIET)
        .await
        .is_none_or(|v| v["type"] != "message" && v["type"] != "subscription_request"));
}

#[tokio::test]
async fn broken_tcp_framing_gets_400_and_the_connection_closes() {
    let server = server();
    let gateway = server.listeners["sip"];

    // No Content-Length on a stream: the framing is lost.
    let mut peer = TcpPeer::connect(gateway).await;
    let via = peer.via();
    let text = String::from_utf8(message(&via, "carol@corp-b.test", "bob", "")).unwrap();
    let text = text.replace("Content-Length: 0\r\n", "");
    peer.send(text.as_bytes()).await.unwrap();
    let r = peer.recv(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(400), "{r}");
    assert!(peer.closed(ANSWER).await, "the connection stays open");

    // A declared body larger than the message limit.
    let mut peer = TcpPeer::connect(gateway).await;
    let via = peer.via();
    let text = String::from_utf8(message(&via, "carol@corp-b.test", "bob", "")).unwrap();
    let text = text.replace("Content-Length: 0", "Content-Length: 99999999");
    peer.send(text.as_bytes()).await.unwrap();
    let _ = peer.send(&[b'x'; 4096]).await;
    if let Some(r) = peer.recv(ANSWER).await {
        assert!(matches!(r.status(), Some(400 | 413 | 513)), "{r}");
    }
    assert!(peer.closed(ANSWER).await, "the connection stays open");

    // Pure garbage on a stream.
    let mut peer = TcpPeer::connect(gateway).await;
    let _ = peer.send(&[0u8; 2048]).await;
    let _ = peer.send(b"\r\n\r\n").await;
    assert!(peer.closed(ANSWER).await, "the connection stays open");

    // A good message on a fresh connection still works, split in odd places.
    let mut bob = server.login("bob").await;
    let mut peer = TcpPeer::connect(gateway).await;
    let via = peer.via();
    let good = message(&via, "carol@corp-b.test", "bob", "framed fine");
    for chunk in good.chunks(7) {
        peer.send(chunk).await.unwrap();
    }
    let r = peer.recv(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(200), "{r}");
    bob.expect("the message", |v| {
        v["type"] == "message" && v["body"] == "framed fine"
    })
    .await;
}

#[tokio::test]
async fn a_flood_from_one_address_does_not_stop_the_hub() {
    let server = server();
    let gateway = server.listeners["sip"];
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    let flood = UdpPeer::new(gateway).await;
    let via = flood.via();
    let mut n = 0;
    for i in 0..6000u32 {
        let bytes = match i % 3 {
            0 => format!("garbage {i}\r\n\r\n").into_bytes(),
            1 => message(&via, "mallory@evil.test", "bob", "spam"),
            _ => request("OPTIONS", HUB, "carol@corp-b.test", &via, "", ""),
        };
        // The socket buffer may fill: a refused send is part of a flood.
        if flood.socket.try_send_to(&bytes, gateway).is_ok() {
            n += 1;
        }
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(n > 1000, "only {n} datagrams left");
    // A TCP flood too: many connections sending junk.
    let mut conns = Vec::new();
    for _ in 0..50 {
        if let Ok(s) = tokio::net::TcpStream::connect(gateway).await {
            conns.push(s);
        }
    }
    for c in &mut conns {
        use tokio::io::AsyncWriteExt;
        let _ = c.write_all(&[b'A'; 1024]).await;
    }

    // Hub users still talk to each other...
    let ack = alice.message("m1", "bob@hub.test", "after the flood").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    bob.expect("alice's message", |v| {
        v["type"] == "message" && v["body"] == "after the flood"
    })
    .await;
    // ...and a partner on another socket gets through once the flood's share is spent.
    let partner = UdpPeer::new(gateway).await;
    let ok = message(
        &partner.via(),
        "carol@corp-b.test",
        "bob",
        "partner after flood",
    );
    let r = answer_eventually(&partner, &ok).await;
    assert_eq!(r.status(), Some(200), "{r}");
    bob.expect("the partner's message", |v| {
        v["type"] == "message" && v["body"] == "partner after flood"
    })
    .await;
    drop(conns);
}
