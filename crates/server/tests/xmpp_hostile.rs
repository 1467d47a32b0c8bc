//! Hostile input on the `xmpp_s2s` listener of the real binary: each attack gets the right stream
//! error (or a close), and the server keeps serving everyone else.

mod common;

use common::{Server, PATIENCE};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='corp.test' to='hub.test' version='1.0'>";

fn server() -> Server {
    Server::start_listening(
        "[[partner]]\ndomain = \"corp.test\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:9\"\nauth = \"dialback\"\n",
        "xmpp_s2s = \"127.0.0.1:0\"\n",
    )
}

/// Sends `bytes` (in pieces, as a peer would), then reads until the server closes the
/// connection; returns everything it sent.
async fn attack(server: &Server, pieces: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(server.listeners["xmpp_s2s"])
        .await
        .unwrap();
    for piece in pieces {
        if s.write_all(piece).await.is_err() {
            break;
        }
    }
    read_until_closed(&mut s).await
}

async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open; got {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serving(server: &Server) {
    let mut c = server.login("watcher").await;
    c.expect_type("roster").await;
    assert_eq!(
        c.message("w", "watcher@hub.test", "still here").await["type"],
        "ack"
    );
}

#[tokio::test]
async fn billion_laughs_is_restricted_xml() {
    let s = server();
    let lol = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='hub.test'>&lol2;";
    let got = attack(&s, &[lol.as_bytes()]).await;
    assert!(got.contains("restricted-xml"), "{got}");
    still_serving(&s).await;
}

#[tokio::test]
async fn deep_nesting_and_attribute_floods_are_policy_violations() {
    let s = server();
    let deep = "<a>".repeat(10_000);
    let got = attack(&s, &[HEADER.as_bytes(), deep.as_bytes()]).await;
    assert!(got.contains("policy-violation"), "{got}");
    let attrs: String = (0..20_000).map(|i| format!(" a{i}='x'")).collect();
    let flood = format!("<message{attrs}/>");
    let got = attack(&s, &[HEADER.as_bytes(), flood.as_bytes()]).await;
    assert!(got.contains("policy-violation"), "{got}");
    still_serving(&s).await;
}

#[tokio::test]
async fn a_ten_megabyte_stanza_is_refused_without_reading_it_all() {
    let s = server();
    let mut stream = TcpStream::connect(s.listeners["xmpp_s2s"]).await.unwrap();
    stream.write_all(HEADER.as_bytes()).await.unwrap();
    stream.write_all(b"<message><body>").await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 10 * 1024 * 1024 {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let got = read_until_closed(&mut stream).await;
    assert!(got.contains("policy-violation"), "{got}");
    still_serving(&s).await;
}

#[tokio::test]
async fn invalid_utf8_is_not_well_formed() {
    let s = server();
    let got = attack(&s, &[HEADER.as_bytes(), b"<message>\xff\xfe</message>"]).await;
    assert!(got.contains("not-well-formed"), "{got}");
    still_serving(&s).await;
}

#[tokio::test]
async fn stanzas_before_starttls_are_refused() {
    let s = server();
    assert_eq!(s.register("watcher", "password1").await, 201);
    let spoof = "<message from='ceo@hub.test' to='watcher@hub.test' type='chat'><body>wire the money</body></message>";
    let got = attack(&s, &[HEADER.as_bytes(), spoof.as_bytes()]).await;
    assert!(
        got.contains("<stream:error>") || got.contains("stream:error"),
        "{got}"
    );
    let mut c = s.login("watcher").await;
    c.expect_type("roster").await;
    assert!(
        c.try_recv(Duration::from_millis(500)).await.is_none(),
        "nothing was delivered"
    );
}

#[tokio::test]
async fn a_stalled_peer_does_not_hold_up_others() {
    let s = server();
    // Half a stream header, then silence (the machine's negotiation timeout, tested on a virtual
    // clock in entente-xmpp, closes it later); meanwhile everyone else is served.
    let mut stalled = TcpStream::connect(s.listeners["xmpp_s2s"]).await.unwrap();
    stalled.write_all(&HEADER.as_bytes()[..40]).await.unwrap();
    still_serving(&s).await;
    let garbage = attack(&s, &[b"\x16\x03\x01 this is not XML at all"]).await;
    assert!(
        garbage.contains("not-well-formed")
            || garbage.is_empty()
            || garbage.contains("stream:error"),
        "{garbage}"
    );
    still_serving(&s).await;
}

#[tokio::test]
async fn an_unreachable_partner_is_retried_then_the_sender_is_told() {
    // Port 9 (discard) is closed on loopback: every attempt is refused.
    let s = Server::start_listening(
        "[admin]\ntoken = \"admin-token\"\n[[partner]]\ndomain = \"corp.test\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:9\"\nauth = \"dialback\"\n",
        "xmpp_s2s = \"127.0.0.1:0\"\n",
    );
    let mut bob = s.login("bob").await;
    bob.expect_type("roster").await;
    assert_eq!(
        bob.message("u1", "someone@corp.test", "hello?").await["type"],
        "ack"
    );
    let e = bob
        .expect("bounce", |v| v["type"] == "error" && v["id"] == "u1")
        .await;
    assert_eq!(e["code"], "remote_server_not_found", "{e}");
    assert_eq!(e["from"], "someone@corp.test");
    // The admin API shows the partner down, with the last attempt's error.
    let (status, body) = s
        .http_with(
            "GET",
            "/api/v1/admin/partners",
            None,
            "Authorization: Bearer admin-token\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = &all["partners"][0];
    assert_eq!(
        (p["domain"].as_str(), p["connected"].as_bool()),
        (Some("corp.test"), Some(false)),
        "{body}"
    );
    let error = p["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("cannot connect to corp.test at 127.0.0.1:9"),
        "{body}"
    );
    let link = &p["links"][0];
    assert!(
        link["since"].is_null() && link["direction"] == "outbound",
        "{body}"
    );
}
