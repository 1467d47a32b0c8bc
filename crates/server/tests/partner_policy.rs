//! Partner policy against the real binary, with a scripted SIP partner on a UDP socket of the
//! test: traffic kinds, strangers, per-partner rates, each refusal in the sender's protocol;
//! then the policy changes in the file and a reload applies it without a restart. And block
//! lists across the XMPP boundary, with a real Prosody and XEP-0191 on its side.

mod common;
mod sip;
mod xmpp;

use common::Server;
use serde_json::json;
use sip::{partner_toml, request, UdpPeer, HUB, PARTNER};
use std::time::Duration;

const ANSWER: Duration = Duration::from_secs(10);
const ADMIN: &str = "Authorization: Bearer policy-token\r\n";

async fn message(peer: &UdpPeer, from: &str, to: &str, body: &str) -> entente_sip::SipMessage {
    let via = peer.via();
    peer.send(&request(
        "MESSAGE",
        to,
        from,
        &via,
        "Content-Type: text/plain\r\n",
        body,
    ))
    .await;
    peer.final_response(ANSWER).await.expect("an answer")
}

#[tokio::test]
async fn partner_policy_is_enforced_and_reloads_without_a_restart() {
    let peer_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer_socket.local_addr().unwrap();
    drop(peer_socket);
    let partner = partner_toml(PARTNER, Some(peer_addr), "none");
    let strict = format!(
        "[admin]\ntoken = \"policy-token\"\n{partner}allow = [\"messages\", \"typing\"]\nstrangers = false\n"
    );
    let server = Server::start_listening(&strict, "sip = \"127.0.0.1:0\"\n");
    let socket = tokio::net::UdpSocket::bind(peer_addr).await.unwrap();
    let peer = UdpPeer {
        socket,
        gateway: server.listeners["sip"],
    };
    let mut bob = server.login("bob").await;
    bob.expect_type("roster").await;
    let bob_sip = format!("bob@{HUB}");
    let carol = format!("carol@{PARTNER}");

    // A stranger's message is refused with 403 and a Warning naming the rule.
    let r = message(&peer, &carol, &bob_sip, "hello from nowhere").await;
    assert_eq!(r.status(), Some(403), "{r}");
    assert!(
        r.header("Warning")
            .is_some_and(|w| w.contains("only from contacts")),
        "{r}"
    );
    // Presence is not exchanged with this partner: a PUBLISH and a SUBSCRIBE are refused with
    // 403 and a Warning naming the rule...
    let via = peer.via();
    let pidf = format!("<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:{carol}\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>");
    peer.send(&request(
        "PUBLISH",
        &carol,
        &carol,
        &via,
        "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n",
        &pidf,
    ))
    .await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(403), "{r}");
    assert!(
        r.header("Warning")
            .is_some_and(|w| w.contains("partner policy") && w.contains("presence")),
        "{r}"
    );
    peer.send(&request(
        "SUBSCRIBE",
        &bob_sip,
        &carol,
        &via,
        &format!("Event: presence\r\nExpires: 600\r\nContact: <sip:carol@{peer_addr}>\r\n"),
        "",
    ))
    .await;
    let r = peer.final_response(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(403), "{r}");
    assert!(
        r.header("Warning")
            .is_some_and(|w| w.contains("subscriptions")),
        "{r}"
    );
    // ...and a hub user's subscription request is refused in the hub's own protocol, with
    // nothing reaching the partner.
    bob.send(json!({"type": "subscribe", "to": carol})).await;
    let e = bob.expect_type("error").await;
    assert_eq!(e["code"], "policy_violation", "{e}");
    assert!(e["text"].as_str().unwrap().contains("subscriptions"), "{e}");
    assert!(
        peer.recv(Duration::from_millis(300)).await.is_none(),
        "nothing reached the partner"
    );
    // The hub user heard nothing from the stranger.
    assert!(bob
        .try_recv(Duration::from_millis(200))
        .await
        .is_none_or(|v| v["type"] != "message"));

    // The policy changes in the file: strangers welcome, all traffic, a tight rate.
    let path = server.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "allow = [\"messages\", \"typing\"]\nstrangers = false\n",
        "rate = 0.2\nburst = 4\n",
    );
    std::fs::write(&path, text).unwrap();
    let (status, body) = server
        .http_with("POST", "/api/v1/admin/policy/reload", None, ADMIN)
        .await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["restart_needed"], json!([]), "{report}");
    let (_, partners) = server
        .http_with("GET", "/api/v1/admin/partners", None, ADMIN)
        .await;
    assert!(partners.contains("\"strangers\":true"), "{partners}");

    let r = message(&peer, &carol, &bob_sip, "hello again").await;
    assert_eq!(r.status(), Some(200), "{r}");
    bob.expect("carol's message", |v| {
        v["type"] == "message" && v["body"] == "hello again"
    })
    .await;
    // The partner's rate: a burst of four events, then 503 for the domain.
    let mut answers = Vec::new();
    for i in 0..6 {
        let r = message(
            &peer,
            &format!("u{i}@{PARTNER}"),
            &bob_sip,
            &format!("n{i}"),
        )
        .await;
        answers.push(r.status().unwrap());
    }
    assert_eq!(answers, [200, 200, 200, 503, 503, 503], "{answers:?}");
    let (_, lines) = server
        .http_with("GET", "/api/v1/admin/audit?limit=100", None, ADMIN)
        .await;
    let refusals: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["action"] == "refused")
        .collect();
    assert!(
        refusals
            .iter()
            .any(|e| e["rule"].as_str().unwrap().contains("only from contacts")),
        "{lines}"
    );
    assert_eq!(
        refusals
            .iter()
            .filter(|e| e["rule"].as_str().unwrap().contains("rate limit"))
            .count(),
        3,
        "{lines}"
    );
}

/// Per-sender limits hold for hub users too, with the hub's `rate_limited` error; presence,
/// subscription and typing floods have a bucket of their own.
#[tokio::test]
async fn a_sender_flood_is_limited_per_sender_and_per_kind() {
    let s = Server::start(
        "[limits]\nsender_rate = 0.1\nsender_burst = 5\nsignal_rate = 0.1\nsignal_burst = 3\n",
    );
    let mut flood = s.login("flood").await;
    let mut calm = s.login("calm").await;
    let mut answers = Vec::new();
    for i in 0..8 {
        let a = flood
            .message(&format!("f{i}"), "calm@hub.test", &format!("n{i}"))
            .await;
        answers
            .push(a["type"].as_str().unwrap().to_string() + ":" + a["code"].as_str().unwrap_or(""));
    }
    assert_eq!(&answers[..5], ["ack:"; 5], "{answers:?}");
    assert_eq!(&answers[5..], ["error:rate_limited"; 3], "{answers:?}");
    // Another sender is not affected.
    assert_eq!(
        calm.message("c1", "flood@hub.test", "ok?").await["type"],
        "ack"
    );
    // Subscription requests flood: three pass, then errors.
    for i in 0..6 {
        assert_eq!(s.register(&format!("user{i}"), "password1").await, 201);
    }
    let mut errors = 0;
    for i in 0..6 {
        flood
            .send(json!({"type": "subscribe", "to": format!("user{i}@hub.test")}))
            .await;
    }
    while let Some(v) = flood.try_recv(Duration::from_millis(500)).await {
        if v["type"] == "error" {
            assert_eq!(v["code"], "rate_limited", "{v}");
            errors += 1;
        }
    }
    assert_eq!(errors, 3);
}

/// A hub user blocks a Prosody user, and a Prosody user blocks a hub user with XEP-0191: each
/// side stops seeing the other, and messages across the block come back as errors in the
/// sender's own protocol.
#[tokio::test]
async fn blocks_hold_both_ways_across_xmpp() {
    use xmpp::{XmppClient, CORP};
    let alice_jid = format!("alice@{CORP}");
    let bob_addr = "bob@hub.test";
    let federation = xmpp::with_pinned_prosody("", "");
    let server = &federation.server;
    let mut alice = XmppClient::connect("alice", &federation.prosody);
    let mut bob = server.login("bob").await;
    bob.expect_type("roster").await;
    // Mutual subscriptions.
    alice.send(json!({"cmd": "subscribe", "to": bob_addr}));
    bob.expect("request", |v| {
        v["type"] == "subscription_request" && v["from"] == alice_jid
    })
    .await;
    bob.send(json!({"type": "approve", "to": alice_jid})).await;
    alice.expect("bob available", |v| {
        v["event"] == "presence" && v["from"] == bob_addr && v["type"] == "available"
    });
    bob.send(json!({"type": "subscribe", "to": alice_jid}))
        .await;
    alice.expect("request", |v| {
        v["event"] == "presence" && v["from"] == bob_addr && v["type"] == "subscribe"
    });
    alice.send(json!({"cmd": "subscribed", "to": bob_addr}));
    bob.expect("alice available", |v| {
        v["type"] == "presence" && v["from"] == alice_jid && v["show"] == "available"
    })
    .await;

    // bob blocks alice: she sees him go offline, and her message bounces.
    bob.send(json!({"type": "block", "address": alice_jid}))
        .await;
    bob.expect_type("blocklist").await;
    alice.expect("bob unavailable", |v| {
        v["event"] == "presence" && v["from"] == bob_addr && v["type"] == "unavailable"
    });
    alice.send(json!({"cmd": "message", "to": bob_addr, "body": "are you there?", "id": "a1"}));
    let e = alice.expect("an error", |v| v["event"] == "message_error");
    assert_eq!(e["condition"], "recipient-unavailable", "{e}");
    assert!(bob
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "message"));
    bob.send(json!({"type": "unblock", "address": alice_jid}))
        .await;
    alice.expect("bob back", |v| {
        v["event"] == "presence" && v["from"] == bob_addr && v["type"] == "available"
    });

    // alice blocks bob with XEP-0191 on Prosody: bob sees her go offline and his message comes
    // back as an error frame.
    alice.send(json!({"cmd": "block", "to": bob_addr}));
    alice.expect("blocked", |v| v["event"] == "blocked");
    bob.expect("alice offline", |v| {
        v["type"] == "presence" && v["from"] == alice_jid && v["show"] == "offline"
    })
    .await;
    bob.send(json!({"type": "message", "id": "b1", "to": alice_jid, "body": "hello?"}))
        .await;
    let e = bob
        .expect("a failure", |v| v["type"] == "error" && v["id"] == "b1")
        .await;
    assert_eq!(e["from"], alice_jid.as_str(), "{e}");
    assert!(
        alice
            .try_expect(Duration::from_millis(500), |v| v["event"] == "message")
            .is_none(),
        "a message crossed the block"
    );
}

/// A Prosody user over the per-sender message rate gets the XMPP rate error,
/// `resource-constraint`, for each message over it.
#[tokio::test]
async fn an_xmpp_flood_gets_resource_constraint() {
    let federation =
        xmpp::with_pinned_prosody("[limits]\nsender_rate = 0.05\nsender_burst = 2\n", "");
    let server = &federation.server;
    let mut alice = xmpp::XmppClient::connect("alice", &federation.prosody);
    let mut bob = server.login("bob").await;
    bob.expect_type("roster").await;
    for i in 0..4 {
        alice.send(json!({"cmd": "message", "to": "bob@hub.test", "body": format!("n{i}"), "id": format!("x{i}")}));
    }
    for i in 2..4 {
        let e = alice.expect("a rate error", |v| v["event"] == "message_error");
        assert_eq!(e["condition"], "resource-constraint", "{e}");
        assert_eq!(e["id"], format!("x{i}"), "{e}");
    }
    for body in ["n0", "n1"] {
        bob.expect(body, |v| v["type"] == "message" && v["body"] == body)
            .await;
    }
    assert!(bob
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "message"));
}

/// SIGHUP reloads the policy from the file, as the admin API does.
#[tokio::test]
async fn sighup_reloads_the_policy() {
    let s = Server::start("[limits]\nsender_rate = 0.01\nsender_burst = 2\n");
    let mut amy = s.login("amy").await;
    let _ = s.login("ben").await;
    for i in 0..2 {
        assert_eq!(
            amy.message(&format!("a{i}"), "ben@hub.test", "hi").await["type"],
            "ack"
        );
    }
    assert_eq!(
        amy.message("a2", "ben@hub.test", "hi").await["code"],
        "rate_limited"
    );
    let path = s.config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("sender_burst = 2", "sender_burst = 500");
    std::fs::write(&path, text).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The signal is handled asynchronously: the first accepted message shows it took effect.
    let mut accepted = false;
    for i in 0..50 {
        let answer = amy.message(&format!("b{i}"), "ben@hub.test", "hi").await;
        if answer["type"] == "ack" {
            accepted = true;
            break;
        }
        assert_eq!(answer["code"], "rate_limited", "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the reload never happened");
    // Buckets start afresh on reload, so what proves the file was read is the new burst.
    for i in 0..5 {
        assert_eq!(
            amy.message(&format!("c{i}"), "ben@hub.test", "hi").await["type"],
            "ack"
        );
    }
    // The server is still serving after the signal.
    let (status, _) = s.http("GET", "/healthz", None).await;
    assert_eq!(status, 200);
}
