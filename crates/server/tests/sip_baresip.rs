//! SIP federation against baresip (Debian `baresip-core`), a real user agent on loopback: it
//! subscribes to a hub user's presence (approved by the hub user, then updated), receives a
//! hub user's MESSAGE and sends one back, accepts the hub user's subscription to its own
//! presence and reports its changes, over UDP, over TCP, and over mutual TLS with
//! certificates from a CA the hub trusts.

mod common;
mod sip;

use common::Server;
use serde_json::json;
use sip::{partner_toml, Baresip, Pki, HUB, PARTNER};
use std::net::SocketAddr;

async fn baresip_round_trip(transport: &str) {
    let port = sip::free_port();
    let server = Server::start_listening(
        &partner_toml(
            PARTNER,
            Some(SocketAddr::from(([127, 0, 0, 1], port))),
            "none",
        ),
        "sip = \"127.0.0.1:0\"\n",
    );
    let gateway = server.listeners["sip"];
    let bob = server.login("bob").await;
    let carol = Baresip::start(port, gateway, transport).await;
    round_trip(bob, carol).await;
}

async fn round_trip(mut bob: common::Client, mut carol: Baresip) {
    // baresip's presence module subscribes to bob; bob approves and carol sees him online.
    bob.expect("carol's request", |v| {
        v["type"] == "subscription_request" && v["from"] == "carol@corp-b.test"
    })
    .await;
    bob.send(json!({"type": "approve", "to": "carol@corp-b.test"}))
        .await;
    carol
        .wait_log("an active NOTIFY with bob open", |log| {
            log.contains("Subscription-State: active") && log.contains("<basic>open</basic>")
        })
        .await;

    // bob writes to carol: baresip gets the MESSAGE and accepts it.
    let ack = bob
        .message("b1", "carol@corp-b.test", "hello carol, this is bob")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    carol
        .wait_log("bob's MESSAGE", |log| {
            log.contains("MESSAGE sip:carol@corp-b.test")
                && log.contains("hello carol, this is bob")
        })
        .await;

    // carol answers from baresip.
    carol.command("message", "hello bob, carol here").await;
    let m = bob
        .expect("carol's message", |v| {
            v["type"] == "message" && v["body"] == "hello bob, carol here"
        })
        .await;
    assert_eq!(m["from"], "carol@corp-b.test");

    // bob subscribes to carol: baresip's notifier accepts and reports her presence as she
    // sets it (its commands know online and offline).
    bob.send(json!({"type": "subscribe", "to": "carol@corp-b.test"}))
        .await;
    bob.expect("carol's approval", |v| {
        v["type"] == "subscribed" && v["from"] == "carol@corp-b.test"
    })
    .await;
    // baresip starts in an unknown state (`<basic>?</basic>`); it is set explicitly.
    carol.command("presence_online", "").await;
    bob.expect("carol online", |v| {
        v["type"] == "presence" && v["from"] == "carol@corp-b.test" && v["show"] == "available"
    })
    .await;
    carol.command("presence_offline", "").await;
    bob.expect("carol offline", |v| {
        v["type"] == "presence" && v["from"] == "carol@corp-b.test" && v["show"] == "offline"
    })
    .await;

    // bob goes away: carol's subscription carries it.
    bob.send(json!({"type": "presence", "show": "away", "status": "lunch"}))
        .await;
    carol
        .wait_log("a NOTIFY with bob away", |log| {
            log.contains("<note>lunch</note>") && log.contains("<rpid:away/>")
        })
        .await;
    carol.stop().await;
}

#[tokio::test]
async fn baresip_over_udp() {
    baresip_round_trip("udp").await;
}

#[tokio::test]
async fn baresip_over_tcp() {
    baresip_round_trip("tcp").await;
}

#[tokio::test]
async fn baresip_over_mutual_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(HUB);
    // baresip listens for TLS on its SIP port + 1: both must be free.
    let port = loop {
        let p = sip::free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\ntrust = [\"{}\"]\n",
        cert.display(),
        key.display(),
        pki.ca().display()
    );
    extra.push_str(&partner_toml(
        PARTNER,
        Some(SocketAddr::from(([127, 0, 0, 1], port + 1))),
        "certificate",
    ));
    let server = Server::start_listening(&extra, "sips = \"127.0.0.1:0\"\n");
    let gateway = server.listeners["sips"];
    let bob = server.login("bob").await;
    let tls = format!(
        "sip_certificate\t{}\nsip_cafile\t{}\n",
        pki.leaf_with_key(PARTNER).display(),
        pki.ca().display()
    );
    let carol = Baresip::start_with(port, gateway, "tls", &tls).await;
    round_trip(bob, carol).await;
}
