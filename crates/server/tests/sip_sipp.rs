//! SIP federation against sipp (Debian `sip-tester`), over UDP and TCP on loopback: MESSAGE into
//! a hub user, MESSAGE out to a partner's UA (UDP, and TCP once it is over 1300 bytes), unknown
//! users, senders that are not partners, and a presence subscription approved by the hub user,
//! ended and renewed by the partner (the approval stays), and denied by the hub user.

mod common;
mod sip;

use common::Server;
use serde_json::json;
use sip::{partner_toml, sipp_uac, Sipp, HUB, PARTNER};
use std::net::SocketAddr;

fn sip_server(partner_address: Option<SocketAddr>) -> Server {
    Server::start_listening(
        &partner_toml(PARTNER, partner_address, "none"),
        "sip = \"127.0.0.1:0\"\n",
    )
}

#[tokio::test]
async fn messages_from_a_partner_reach_a_hub_user_over_udp_and_tcp() {
    let server = sip_server(None);
    let gateway = server.listeners["sip"];
    let mut bob = server.login("bob").await;
    for transport in ["u1", "t1"] {
        let body = format!("hello bob from sipp {transport}");
        sipp_uac(
            gateway,
            transport,
            "uac_message.xml",
            &[
                ("HUB", HUB),
                ("FROM_DOMAIN", PARTNER),
                ("EXPECT", "200"),
                ("BODY", &body),
            ],
            "bob",
        )
        .await;
        let m = bob
            .expect("the SIP message", |v| {
                v["type"] == "message" && v["body"].as_str().is_some_and(|b| b.starts_with(&body))
            })
            .await;
        assert_eq!(m["from"], "carol@corp-b.test", "{m}");
        assert_eq!(m["offline"], false);
    }
    // The SIP listeners drain with the rest on SIGTERM.
    let mut server = server;
    assert!(server.stop().success());
}

#[tokio::test]
async fn unknown_users_get_404_and_strangers_403() {
    let server = sip_server(None);
    let gateway = server.listeners["sip"];
    for transport in ["u1", "t1"] {
        sipp_uac(
            gateway,
            transport,
            "uac_message.xml",
            &[
                ("HUB", HUB),
                ("FROM_DOMAIN", PARTNER),
                ("EXPECT", "404"),
                ("BODY", "anyone there?"),
            ],
            "nobody",
        )
        .await;
        sipp_uac(
            gateway,
            transport,
            "uac_message.xml",
            &[
                ("HUB", HUB),
                ("FROM_DOMAIN", "evil.test"),
                ("EXPECT", "403"),
                ("BODY", "let me in"),
            ],
            "bob",
        )
        .await;
        // A domain the gateway does not serve at all.
        sipp_uac(
            gateway,
            transport,
            "uac_message.xml",
            &[
                ("HUB", "elsewhere.test"),
                ("FROM_DOMAIN", PARTNER),
                ("EXPECT", "404"),
                ("BODY", "wrong door"),
            ],
            "bob",
        )
        .await;
    }
}

/// A sipp UAS on a fresh port, reachable as the partner's pinned address.
fn sipp_uas(port: u16, transport: &str, from_user: &str, body: &str) -> Sipp {
    let dir = tempfile::tempdir().unwrap();
    let path = sip::scenario(
        dir.path(),
        "uas_message.xml",
        &[("FROM_USER", from_user), ("BODY", body)],
    );
    let port = port.to_string();
    Sipp::start(
        dir,
        &path,
        &["-t", transport, "-i", "127.0.0.1", "-p", &port],
    )
}

#[tokio::test]
async fn a_hub_users_message_reaches_a_sipp_uas_over_udp() {
    let port = sip::free_port();
    let uas = sipp_uas(port, "u1", "alice@hub.test", "hello carol from alice");
    let server = sip_server(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    let mut alice = server.login("alice").await;
    let ack = alice
        .message("c1", "carol@corp-b.test", "hello carol from alice")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    uas.passes().await;
    // The UAS answered 200: no failure comes back.
    assert!(alice
        .try_recv(std::time::Duration::from_millis(500))
        .await
        .is_none_or(|v| v["type"] != "error"));
}

#[tokio::test]
async fn a_message_over_1300_bytes_goes_over_tcp() {
    let port = sip::free_port();
    let body = format!("long:{}", "x".repeat(2000));
    // The UAS listens on TCP only: the message can only arrive if it switched.
    let uas = sipp_uas(port, "t1", "alice@hub.test", "long:xxxxxxxxxx");
    let server = sip_server(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    let mut alice = server.login("alice").await;
    let ack = alice.message("c1", "carol@corp-b.test", &body).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    uas.passes().await;
}

#[tokio::test]
async fn a_failure_at_the_partner_reaches_the_hub_sender() {
    // Nobody listens at the pinned address: over UDP the request times out (timer F) or the
    // port is unreachable; either way alice hears that her message did not arrive.
    let port = sip::free_port();
    let server = Server::start_listening(
        &partner_toml(
            PARTNER,
            Some(SocketAddr::from(([127, 0, 0, 1], port))),
            "none",
        ),
        "sip = \"127.0.0.1:0\"\n",
    );
    let mut alice = server.login("alice").await;
    let body = format!("long:{}", "y".repeat(2000)); // TCP: refused at once
    let ack = alice.message("c9", "carol@corp-b.test", &body).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let err = alice
        .expect("a failure for c9", |v| {
            v["type"] == "error" && v["id"] == "c9"
        })
        .await;
    assert_eq!(err["from"], "carol@corp-b.test", "{err}");
    assert_eq!(err["code"], "remote_server_not_found", "{err}");
}

/// carol's roster state in bob's roster frame (`none` when she is not on it).
async fn carols_subscription(bob: &mut common::Client) -> String {
    bob.send(json!({"type": "roster"})).await;
    let roster = bob.expect_type("roster").await;
    roster["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|i| i["address"] == "carol@corp-b.test")
                .map(|i| i["subscription"].as_str().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| "none".into())
}

#[tokio::test]
async fn a_partner_subscribes_to_presence_and_the_hub_user_approves() {
    let server = sip_server(None);
    let gateway = server.listeners["sip"];
    let mut bob = server.login("bob").await;

    // Over UDP: pending until bob approves, then active with his presence; carol's
    // un-SUBSCRIBE ends the dialog (NOTIFY terminated).
    let dir = tempfile::tempdir().unwrap();
    let path = sip::scenario(dir.path(), "uac_subscribe.xml", &[("HUB", HUB)]);
    let sipp = Sipp::client(dir, &path, gateway, "u1", "bob");
    let req = bob
        .expect("carol's request", |v| {
            v["type"] == "subscription_request" && v["from"] == "carol@corp-b.test"
        })
        .await;
    assert_eq!(req["from"], "carol@corp-b.test");
    bob.send(json!({"type": "approve", "to": "carol@corp-b.test"}))
        .await;
    sipp.passes().await;
    // Ending a SIP subscription dialog (a logout, say) is not the watcher removing the
    // contact: bob's approval of carol stays on his roster.
    assert_eq!(carols_subscription(&mut bob).await, "from");

    // Over TCP, a new dialog: active at once, its first NOTIFY carrying bob's presence, with
    // no new request to bob (the scenario fails on a pending NOTIFY).
    sipp_uac(gateway, "t1", "uac_resubscribe.xml", &[("HUB", HUB)], "bob").await;
    assert_eq!(carols_subscription(&mut bob).await, "from");

    // bob denies carol while she watches: her dialog ends as rejected, and so does the
    // approval.
    let dir = tempfile::tempdir().unwrap();
    let path = sip::scenario(dir.path(), "uac_subscribe_denied.xml", &[("HUB", HUB)]);
    let sipp = Sipp::client(dir, &path, gateway, "u1", "bob");
    bob.expect("carol's word that she watches", |v| {
        v["type"] == "message"
            && v["body"]
                .as_str()
                .is_some_and(|b| b.contains("watching you now"))
    })
    .await;
    bob.send(json!({"type": "deny", "to": "carol@corp-b.test"}))
        .await;
    sipp.passes().await;
    assert_eq!(carols_subscription(&mut bob).await, "none");
    // No subscription request reached bob after the first.
    while let Some(v) = bob.try_recv(std::time::Duration::from_millis(200)).await {
        assert_ne!(v["type"], "subscription_request", "{v}");
    }
}

const ADMIN: &str = "Authorization: Bearer sip-links\r\n";

/// The SIP partner's entry in the admin API's partner list.
async fn partner_entry(server: &Server) -> serde_json::Value {
    let (status, body) = server
        .http_with("GET", "/api/v1/admin/partners", None, ADMIN)
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["partners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["domain"] == PARTNER)
        .cloned()
        .unwrap_or_else(|| panic!("no {PARTNER} in {v}"))
}

/// Asks the admin API until `pred` holds for the partner's entry; returns it.
async fn partner_entry_until(
    server: &Server,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let entry = partner_entry(server).await;
        if pred(&entry) {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never showed {what}: {entry}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn links_where<'a>(
    entry: &'a serde_json::Value,
    pred: impl Fn(&serde_json::Value) -> bool + 'a,
) -> Vec<&'a serde_json::Value> {
    entry["links"]
        .as_array()
        .map(|l| l.iter().filter(|l| pred(l)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_admin_api_shows_a_partners_links_and_its_last_error() {
    // The pinned address is a port nobody listens on.
    let dead = SocketAddr::from(([127, 0, 0, 1], sip::free_port()));
    let server = Server::start_listening(
        &format!(
            "[admin]\ntoken = \"sip-links\"\n{}",
            partner_toml(PARTNER, Some(dead), "none")
        ),
        "sip = \"127.0.0.1:0\"\n",
    );
    let gateway = server.listeners["sip"];
    let mut bob = server.login("bob").await;
    let entry = partner_entry(&server).await;
    assert_eq!(entry["connected"], false, "{entry}");
    assert!(entry["last_error"].is_null(), "{entry}");

    // carol's side calls in over TCP and over UDP.
    let mut tcp = sip::TcpPeer::connect(gateway).await;
    let via = tcp.via();
    let msg = sip::request(
        "MESSAGE",
        "bob@hub.test",
        "carol@corp-b.test",
        &via,
        "Content-Type: text/plain\r\n",
        "over tcp",
    );
    tcp.send(&msg).await.unwrap();
    let answer = tcp.recv(common::PATIENCE).await.expect("an answer");
    assert_eq!(answer.status(), Some(200), "{answer}");
    let udp = sip::UdpPeer::new(gateway).await;
    let msg = sip::request(
        "MESSAGE",
        "bob@hub.test",
        "carol@corp-b.test",
        &udp.via(),
        "Content-Type: text/plain\r\n",
        "over udp",
    );
    udp.send(&msg).await;
    let answer = udp
        .final_response(common::PATIENCE)
        .await
        .expect("an answer");
    assert_eq!(answer.status(), Some(200), "{answer}");
    for body in ["over tcp", "over udp"] {
        bob.expect(body, |v| v["type"] == "message" && v["body"] == body)
            .await;
    }
    let tcp_peer = tcp.stream.local_addr().unwrap().to_string();
    let udp_peer = udp.socket.local_addr().unwrap().to_string();
    let entry = partner_entry(&server).await;
    assert_eq!(entry["connected"], true, "{entry}");
    let tcp_links = links_where(&entry, |l| {
        l["transport"] == "sip-tcp" && l["peer"] == tcp_peer
    });
    assert_eq!(tcp_links.len(), 1, "{entry}");
    assert_eq!(tcp_links[0]["direction"], "inbound");
    assert_eq!(tcp_links[0]["auth"], "address");
    assert!(
        tcp_links[0]["since"]
            .as_i64()
            .is_some_and(|s| s > 1_600_000_000),
        "{entry}"
    );
    assert!(tcp_links[0]["last_error"].is_null());
    let udp_links = links_where(&entry, |l| l["transport"] == "sip-udp");
    assert_eq!(udp_links.len(), 1, "{entry}");
    assert_eq!(udp_links[0]["peer"], udp_peer.as_str());
    assert_eq!(udp_links[0]["direction"], "inbound");
    assert!(udp_links[0]["since"].as_i64().is_some(), "{entry}");

    // alice writes to carol: over 1300 bytes, so over TCP to the pinned address, refused.
    let mut alice = server.login("alice").await;
    let body = format!("long:{}", "z".repeat(2000));
    let ack = alice.message("e1", "carol@corp-b.test", &body).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    alice
        .expect("the failure", |v| v["type"] == "error" && v["id"] == "e1")
        .await;
    let entry = partner_entry(&server).await;
    let errors = links_where(&entry, |l| !l["last_error"].is_null());
    assert_eq!(errors.len(), 1, "{entry}");
    assert!(errors[0]["since"].is_null(), "{entry}");
    assert_eq!(errors[0]["transport"], "sip-tcp");
    assert_eq!(errors[0]["peer"], dead.to_string().as_str());
    let text = errors[0]["last_error"].as_str().unwrap();
    assert!(
        text.contains("cannot connect") && text.contains(&dead.to_string()),
        "{text}"
    );
    assert_eq!(entry["last_error"], text, "{entry}");

    // carol's side hangs up its TCP connection: that link goes.
    drop(tcp);
    partner_entry_until(&server, "the TCP link gone", |e| {
        links_where(e, |l| l["transport"] == "sip-tcp" && !l["since"].is_null()).is_empty()
    })
    .await;
}
