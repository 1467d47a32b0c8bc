//! XMPP federation with a real Prosody server (Debian's `prosody`, started by the test) and a real
//! client on it (slixmpp), in both authentication modes: STARTTLS + dialback with self-signed
//! certificates, and certificates from a test CA with `s2s_secure_auth` (SASL EXTERNAL).
//!
//! Name resolution stays on loopback: Prosody resolves `hub.test` through its own libunbound
//! view (a local zone with one SRV record), and Entente connects to the partner's pinned address.

mod common;
mod xmpp;

use common::dns::{Record, TestDns};
use common::{Client, Server};
use serde_json::{json, Value};
use xmpp::{free_port, require, Certs, Mode, Prosody, XmppClient, CORP};

const ALICE: &str = "alice@corp-a.test";
const BOB: &str = "bob@hub.test";
const ADMIN: &str = "[admin]\ntoken = \"admin-token\"\n";

/// The partner's entry in the admin API's partner list.
async fn partner_state(server: &Server, domain: &str) -> Value {
    let (status, body) = server
        .http_with(
            "GET",
            "/api/v1/admin/partners",
            None,
            "Authorization: Bearer admin-token\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let all: Value = serde_json::from_str(&body).unwrap();
    all["partners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["domain"] == domain)
        .cloned()
        .unwrap_or_else(|| panic!("{domain} is not listed: {body}"))
}

fn epoch_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn federate(mode: Mode) {
    require("runuser");
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path(), mode);
    let prosody_s2s = free_port();
    let (auth, tls) = match mode {
        Mode::Dialback => ("dialback", String::new()),
        Mode::Certificate => (
            "certificate",
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\ntrust = [\"{}\"]\n",
                certs.path("hub.crt").display(),
                certs.path("hub.key").display(),
                certs.path("ca.crt").display()
            ),
        ),
    };
    let extra = format!(
        "{tls}{ADMIN}[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:{prosody_s2s}\"\nauth = \"{auth}\"\n"
    );
    let started = epoch_seconds();
    let server = Server::start_listening(&extra, "xmpp_s2s = \"127.0.0.1:0\"\n");
    let prosody = Prosody::start(
        mode,
        &certs,
        prosody_s2s,
        server.listeners["xmpp_s2s"].port(),
    );
    let mut alice = XmppClient::connect("alice", &prosody);
    let mut bob: Client = server.login("bob").await;
    bob.expect_type("roster").await;

    // alice (Prosody) asks to see bob (hub); bob approves; alice sees him available.
    alice.send(json!({"cmd": "subscribe", "to": BOB}));
    bob.expect("request from alice", |v| {
        v["type"] == "subscription_request" && v["from"] == ALICE
    })
    .await;
    bob.send(json!({"type": "approve", "to": ALICE})).await;
    alice.expect("subscribed", |v| {
        v["event"] == "presence" && v["from"] == BOB && v["type"] == "subscribed"
    });
    alice.expect("bob available", |v| {
        v["event"] == "presence" && v["from"] == BOB && v["type"] == "available"
    });

    // bob asks to see alice; alice approves; bob sees her available.
    bob.send(json!({"type": "subscribe", "to": ALICE})).await;
    alice.expect("request from bob", |v| {
        v["event"] == "presence" && v["from"] == BOB && v["type"] == "subscribe"
    });
    alice.send(json!({"cmd": "subscribed", "to": BOB}));
    bob.expect("subscribed", |v| {
        v["type"] == "subscribed" && v["from"] == ALICE
    })
    .await;
    bob.expect("alice available", |v| {
        v["type"] == "presence" && v["from"] == ALICE && v["show"] == "available"
    })
    .await;

    // Messages both ways, with non-ASCII and XML-special text kept exactly.
    let text = "héllo <b>&amp;</b> \"quoted\" ✓ ]]>";
    alice.send(json!({"cmd": "message", "to": BOB, "body": text}));
    let m = bob.expect_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some(ALICE), Some(text))
    );
    let reply = "back <at> you & 'all' – ünïcode";
    assert_eq!(bob.message("x1", ALICE, reply).await["type"], "ack");
    let got = alice.expect("message from bob", |v| {
        v["event"] == "message" && v["from"] == BOB && v["body"] != ""
    });
    assert_eq!(got["body"], reply);

    // The admin API shows a stream each way, authenticated as the mode says.
    let p = partner_state(&server, CORP).await;
    assert_eq!(p["connected"], true, "{p}");
    assert!(p["last_error"].is_null(), "{p}");
    let links = p["links"].as_array().unwrap();
    for direction in ["inbound", "outbound"] {
        let l = links
            .iter()
            .find(|l| l["direction"] == direction)
            .unwrap_or_else(|| panic!("no {direction} link: {p}"));
        assert_eq!(
            (l["transport"].as_str(), l["auth"].as_str()),
            (Some("xmpp"), Some(auth)),
            "{p}"
        );
        let since = l["since"].as_i64().unwrap();
        assert!((started..=epoch_seconds()).contains(&since), "{p}");
        let peer = l["peer"].as_str().unwrap();
        if direction == "outbound" {
            assert_eq!(peer, format!("127.0.0.1:{prosody_s2s}"), "{p}");
        } else {
            assert!(peer.starts_with("127.0.0.1:"), "{p}");
        }
    }

    // Typing both ways.
    alice.send(json!({"cmd": "typing", "to": BOB, "state": "composing"}));
    bob.expect("alice typing", |v| {
        v["type"] == "typing" && v["from"] == ALICE && v["state"] == "composing"
    })
    .await;
    bob.send(json!({"type": "typing", "to": ALICE, "state": "composing"}))
        .await;
    alice.expect("bob typing", |v| {
        v["event"] == "chatstate" && v["from"] == BOB && v["state"] == "composing"
    });

    // Presence changes.
    alice.send(json!({"cmd": "presence", "show": "away", "status": "at lunch"}));
    let p = bob
        .expect("alice away", |v| {
            v["type"] == "presence" && v["from"] == ALICE && v["show"] == "away"
        })
        .await;
    assert_eq!(p["status"], "at lunch");
    bob.send(json!({"type": "presence", "show": "dnd", "status": "in a meeting"}))
        .await;
    let p = alice.expect("bob dnd", |v| {
        v["event"] == "presence" && v["from"] == BOB && v["show"] == "dnd"
    });
    assert_eq!(p["status"], "in a meeting");

    // Errors for unknown users, both ways, in each side's own protocol.
    alice.send(json!({"cmd": "message", "to": "nobody@hub.test", "body": "anyone?", "id": "e1"}));
    let e = alice.expect("error", |v| {
        v["event"] == "message_error" && v["from"] == "nobody@hub.test"
    });
    assert_eq!(e["condition"], "item-not-found", "{e}");
    // Handed to the next hop (ack), then refused by Prosody: the error comes back with the id.
    assert_eq!(
        bob.message("x2", "nobody@corp-a.test", "anyone?").await["type"],
        "ack"
    );
    let e = bob
        .expect("error for x2", |v| v["type"] == "error" && v["id"] == "x2")
        .await;
    let code = e["code"].as_str().unwrap();
    assert!(
        ["item_not_found", "recipient_unavailable"].contains(&code),
        "{e}"
    );

    // IQs: disco#info and ping are answered by the gateway for the hub domain; anything else gets
    // service-unavailable.
    alice.send(json!({"cmd": "disco", "to": "hub.test"}));
    let d = alice.expect("disco", |v| {
        v["event"] == "disco" || v["event"] == "iq_error"
    });
    let features = d["features"].as_array().cloned().unwrap_or_default();
    for f in [
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:ping",
        "http://jabber.org/protocol/chatstates",
    ] {
        assert!(features.iter().any(|x| x == f), "{f} not advertised: {d}");
    }
    alice.send(json!({"cmd": "ping", "to": "hub.test"}));
    alice.expect("pong", |v| v["event"] == "pong");
    alice.send(json!({"cmd": "iq_unknown", "to": "hub.test"}));
    let e = alice.expect("iq error", |v| {
        v["event"] == "iq_error" || v["event"] == "iq_result"
    });
    assert_eq!(e["condition"], "service-unavailable", "{e}");

    drop(alice);
    bob.expect("alice offline", |v| {
        v["type"] == "presence" && v["from"] == ALICE && v["show"] == "offline"
    })
    .await;
    drop(prosody);
}

#[tokio::test(flavor = "multi_thread")]
async fn prosody_federates_with_starttls_and_dialback() {
    federate(Mode::Dialback).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prosody_federates_with_certificates_and_sasl_external() {
    federate(Mode::Certificate).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aim_user_chats_with_a_prosody_user() {
    use common::oscar::{buddy_items, sign_on};
    use entente_oscar::family::{buddy, feedbag, icbm};
    let federation = xmpp::with_pinned_prosody("", "oscar = \"127.0.0.1:0\"\n");
    let (server, prosody) = (&federation.server, &federation.prosody);
    let mut alice = XmppClient::connect("alice", &prosody);
    assert_eq!(server.register("Dave", "password1").await, 201);
    let mut dave = sign_on(&server, "Dave", "password1").await.unwrap();

    // Dave adds alice@corp-a.test to his buddy list: she is asked, approves, and he sees her.
    dave.snac(&feedbag::InsertItems {
        items: buddy_items(&[ALICE]),
    })
    .await;
    alice.expect("request from dave", |v| {
        v["event"] == "presence" && v["from"] == "dave@hub.test" && v["type"] == "subscribe"
    });
    alice.send(json!({"cmd": "subscribed", "to": "dave@hub.test"}));
    let reply: feedbag::AuthReplyToClient = dave.expect(0x13, 0x1B).await.body_as().unwrap();
    assert!(reply.0.accepted);
    assert_eq!(reply.0.screen_name, ALICE);
    let arrived: buddy::Arrived = dave.expect(3, 0x0B).await.body_as().unwrap();
    assert_eq!(arrived.users[0].screen_name, ALICE);

    // IMs both ways; AIM HTML becomes plain text for XMPP, XMPP text is escaped for AIM.
    dave.im(ALICE, "<HTML><BODY>Hi Alice &amp; co</BODY></HTML>")
        .await;
    let m = alice.expect("message from dave", |v| {
        v["event"] == "message" && v["from"] == "dave@hub.test"
    });
    assert_eq!(m["body"], "Hi Alice & co");
    alice.send(json!({"cmd": "message", "to": "dave@hub.test", "body": "hello <dave> & friends"}));
    let (from, text) = dave.incoming_im().await;
    assert_eq!(from, ALICE);
    assert!(text.contains("hello &lt;dave&gt; &amp; friends"), "{text}");

    // Typing from XMPP reaches the AIM client.
    alice.send(json!({"cmd": "typing", "to": "dave@hub.test", "state": "composing"}));
    let ev: icbm::ClientEvent = dave.expect(4, 0x14).await.body_as().unwrap();
    assert_eq!(
        (ev.screen_name.as_str(), ev.event),
        (ALICE, icbm::typing::BEGUN)
    );
}

/// XEP-0368: a partner that publishes `_xmpps-server._tcp` is reached over direct TLS (no
/// STARTTLS), found through the configured name server.
#[tokio::test(flavor = "multi_thread")]
async fn a_partner_offering_direct_tls_is_reached_over_it() {
    require("runuser");
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path(), Mode::Dialback);
    let prosody_s2s = free_port();
    let prosody_direct = free_port();
    let dns = TestDns::start(vec![
        Record::a(CORP, std::net::Ipv4Addr::LOCALHOST),
        Record::srv(
            &format!("_xmpps-server._tcp.{CORP}"),
            0,
            5,
            prosody_direct,
            CORP,
        ),
    ]);
    let dns_port = dns.addr.port();
    let extra = format!(
        "[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\nauth = \"dialback\"\n"
    );
    let server = Server::start_listening(&extra, "xmpp_s2s = \"127.0.0.1:0\"\n");
    let prosody = Prosody::start_direct_tls(
        Mode::Dialback,
        &certs,
        prosody_s2s,
        server.listeners["xmpp_s2s"].port(),
        prosody_direct,
    );
    let mut alice = XmppClient::connect("alice", &prosody);
    let mut bob = server.login("bob").await;
    bob.expect_type("roster").await;
    assert_eq!(
        bob.message("t1", ALICE, "over direct TLS").await["type"],
        "ack"
    );
    let m = alice.expect("message", |v| v["event"] == "message" && v["from"] == BOB);
    assert_eq!(m["body"], "over direct TLS");
    let asked = dns.queries();
    assert!(
        asked
            .iter()
            .any(|l| l.contains(&format!("_xmpps-server._tcp.{CORP} type=33 -> 1"))),
        "the direct TLS SRV record was not used: {asked:?}"
    );
    assert!(
        !asked
            .iter()
            .any(|l| l.contains(&format!("_xmpp-server._tcp.{CORP}"))),
        "STARTTLS was looked up although direct TLS is offered: {asked:?}"
    );
}

/// A partner without a pinned address is found through DNS (SRV `_xmpp-server._tcp`, then A), asked
/// of the configured name server only: here a loopback responder that knows the test names.
#[tokio::test(flavor = "multi_thread")]
async fn a_partner_is_found_through_the_configured_name_server() {
    require("runuser");
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path(), Mode::Dialback);
    let prosody_s2s = free_port();
    let dns = TestDns::start(vec![
        Record::a(CORP, std::net::Ipv4Addr::LOCALHOST),
        Record::srv(
            &format!("_xmpp-server._tcp.{CORP}"),
            0,
            5,
            prosody_s2s,
            CORP,
        ),
    ]);
    let dns_port = dns.addr.port();
    let extra = format!(
        "[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\nauth = \"dialback\"\n"
    );
    let server = Server::start_listening(&extra, "xmpp_s2s = \"127.0.0.1:0\"\n");
    let prosody = Prosody::start(
        Mode::Dialback,
        &certs,
        prosody_s2s,
        server.listeners["xmpp_s2s"].port(),
    );
    let mut alice = XmppClient::connect("alice", &prosody);
    let mut bob = server.login("bob").await;
    bob.expect_type("roster").await;
    assert_eq!(
        bob.message("d1", ALICE, "found you through DNS").await["type"],
        "ack"
    );
    let m = alice.expect("message", |v| v["event"] == "message" && v["from"] == BOB);
    assert_eq!(m["body"], "found you through DNS");
    let asked = dns.queries();
    assert!(
        asked
            .iter()
            .any(|l| l.contains(&format!("_xmpp-server._tcp.{CORP} type=33 -> 1"))),
        "the SRV record was not asked for: {asked:?}"
    );
}

/// A partner that must authenticate with a certificate but presents a self-signed one is not
/// let in by dialback either, and a domain that is not a partner at all is refused: in both
/// cases the Prosody user is told, and nothing reaches the hub user.
#[tokio::test(flavor = "multi_thread")]
async fn partners_without_a_valid_certificate_or_not_on_the_allowlist_are_refused() {
    require("runuser");
    for (case, extra_of) in [
        |port: u16| {
            format!("[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:{port}\"\nauth = \"certificate\"\n")
        },
        |_port: u16| {
            "[[partner]]\ndomain = \"someone-else.test\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:9\"\nauth = \"dialback\"\n".to_string()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let certs_dir = tempfile::tempdir().unwrap();
        let certs = Certs::make(certs_dir.path(), Mode::Dialback);
        let prosody_s2s = free_port();
        let server = Server::start_listening(
            &format!("{ADMIN}{}", extra_of(prosody_s2s)),
            "xmpp_s2s = \"127.0.0.1:0\"\n",
        );
        let prosody = Prosody::start(
            Mode::Dialback,
            &certs,
            prosody_s2s,
            server.listeners["xmpp_s2s"].port(),
        );
        let mut alice = XmppClient::connect("alice", &prosody);
        let mut bob = server.login("bob").await;
        bob.expect_type("roster").await;
        alice.send(json!({"cmd": "message", "to": BOB, "body": "let me in", "id": "r1"}));
        let e = alice.expect("refusal", |v| v["event"] == "message_error");
        assert!(!e["condition"].as_str().unwrap_or("").is_empty(), "{e}");
        assert!(bob
            .try_recv(std::time::Duration::from_millis(500))
            .await
            .is_none_or(|v| v["type"] != "message"));
        if case == 0 {
            // Nor does the gateway's own link to the partner come up; the admin API says why.
            bob.message("r2", ALICE, "are you there?").await;
            bob.expect("bounce", |v| v["type"] == "error" && v["id"] == "r2")
                .await;
            let p = partner_state(&server, CORP).await;
            assert_eq!(p["connected"], false, "{p}");
            let error = p["last_error"].as_str().unwrap_or("");
            assert!(
                error.contains("did not present a valid certificate"),
                "{p}"
            );
            // The required authentication is policy: relaxed to dialback in the file and
            // reloaded, the same partner gets through without a restart.
            let path = server.config_path();
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("auth = \"certificate\"", "auth = \"dialback\"");
            std::fs::write(&path, text).unwrap();
            let (status, body) = server
                .http_with(
                    "POST",
                    "/api/v1/admin/policy/reload",
                    None,
                    "Authorization: Bearer admin-token\r\n",
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("\"restart_needed\":[]"), "{body}");
            alice.send(json!({"cmd": "message", "to": BOB, "body": "dialback now", "id": "r3"}));
            bob.expect("alice's message", |v| {
                v["type"] == "message" && v["body"] == "dialback now"
            })
            .await;
            assert_eq!(partner_state(&server, CORP).await["connected"], true);
        }
    }
}
