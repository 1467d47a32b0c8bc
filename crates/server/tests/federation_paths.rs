//! Partner to partner through the gateway: a Prosody user and a SIP user (sipp) exchange messages
//! both ways, and an AIM-style user reaches the SIP user. The gateway is an XMPP server for the
//! SIP partner's domain and a SIP domain for the XMPP partner's domain.

mod common;
mod sip;
mod xmpp;

use common::oscar::sign_on;
use common::Server;
use serde_json::json;
use std::net::SocketAddr;
use xmpp::{free_port, require, Certs, Mode, Prosody, XmppClient, CORP};

/// The SIP partner's domain; Prosody finds it (and hub.test) at this address, port 5269.
const SIP_DOMAIN: &str = "corp-b.test";
const GATEWAY_IP: &str = "127.0.0.57";

fn uas(port: u16, from_user: &str, body: &str) -> sip::Sipp {
    let dir = tempfile::tempdir().unwrap();
    let path = sip::scenario(
        dir.path(),
        "uas_message.xml",
        &[("FROM_USER", from_user), ("BODY", body)],
    );
    let port = port.to_string();
    sip::Sipp::start(dir, &path, &["-t", "u1", "-i", "127.0.0.1", "-p", &port])
}

#[tokio::test(flavor = "multi_thread")]
async fn xmpp_sip_and_oscar_users_reach_each_other() {
    require("runuser");
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path(), Mode::Dialback);
    let prosody_s2s = free_port();
    let sip_port = sip::free_port();
    let sip_peer = SocketAddr::from(([127, 0, 0, 1], sip_port));
    let extra = format!(
        "[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:{prosody_s2s}\"\nauth = \"dialback\"\n{}",
        sip::partner_toml(SIP_DOMAIN, Some(sip_peer), "none")
    );
    let listen = format!(
        "xmpp_s2s = \"{GATEWAY_IP}:5269\"\nsip = \"127.0.0.1:0\"\noscar = \"127.0.0.1:0\"\n"
    );
    let server = Server::start_listening(&extra, &listen);
    let prosody = Prosody::start_for(
        Mode::Dialback,
        &certs,
        prosody_s2s,
        5269,
        GATEWAY_IP,
        &[SIP_DOMAIN],
    );
    let mut alice = XmppClient::connect("alice", &prosody);

    // XMPP → SIP: Prosody routes corp-b.test to the gateway, which hands it to the SIP partner.
    let carol_sees = uas(sip_port, "alice@corp-a.test", "hello carol from xmpp");
    alice.send(
        json!({"cmd": "message", "to": "carol@corp-b.test", "body": "hello carol from xmpp"}),
    );
    carol_sees.passes().await;

    // SIP → XMPP: carol's MESSAGE is answered 200 once the gateway has handed it on, and alice
    // receives it from carol@corp-b.test.
    sip::sipp_uac(
        server.listeners["sip"],
        "u1",
        "uac_message.xml",
        &[
            ("HUB", CORP),
            ("FROM_DOMAIN", SIP_DOMAIN),
            ("BODY", "hi alice from sip"),
            ("EXPECT", "200"),
        ],
        "alice",
    )
    .await;
    let m = alice.expect("message from carol", |v| {
        v["event"] == "message" && v["from"] == "carol@corp-b.test"
    });
    // sipp's scenario ends its body with a line break.
    assert_eq!(
        m["body"].as_str().map(str::trim_end),
        Some("hi alice from sip over UDP")
    );

    // OSCAR → SIP: an AIM user writes to the SIP user by her full address.
    assert_eq!(server.register("dave", "password1").await, 201);
    let mut dave = sign_on(&server, "dave", "password1").await.unwrap();
    let carol_sees = uas(sip_port, "dave@hub.test", "hello carol from aim");
    dave.im(
        "carol@corp-b.test",
        "<HTML><BODY>hello carol from aim</BODY></HTML>",
    )
    .await;
    carol_sees.passes().await;

    // SIP → OSCAR: carol's MESSAGE to dave@hub.test reaches his AIM client.
    sip::sipp_uac(
        server.listeners["sip"],
        "u1",
        "uac_message.xml",
        &[
            ("HUB", "hub.test"),
            ("FROM_DOMAIN", SIP_DOMAIN),
            ("BODY", "hi dave from sip"),
            ("EXPECT", "200"),
        ],
        "dave",
    )
    .await;
    let (from, text) = dave.incoming_im().await;
    assert_eq!(from, "carol@corp-b.test");
    assert!(text.contains("hi dave from sip over UDP"), "{text}");
}
