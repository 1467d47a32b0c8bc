//! Content rules per protocol, against the real binary: a Prosody user (a real Prosody federated
//! over s2s, a slixmpp client on it) and an AIM client (the scripted OSCAR client) sending links
//! to executable downloads, look-alikes of a protected domain and the EICAR string are refused in
//! their own protocol, and the recipient — browser, AIM or XMPP user — never sees the message.
//!
//! "Receives nothing" is shown by order, not by waiting: after the refused messages the same
//! sender sends a harmless one over the same path, and it must be the first message the
//! recipient gets.

mod common;
mod xmpp;

use common::oscar::{sign_on, Oscar};
use common::{Client, Server};
use entente_oscar::{SnacError, SnacErrorCode};
use serde_json::json;
use xmpp::XmppClient;

const ALICE: &str = "alice@corp-a.test";
const BOB: &str = "bob@hub.test";
const DAVE: &str = "dave@hub.test";
const PW: &str = "password1";

/// `inspect_hub` so that an AIM user writing to a browser user of the hub is inspected too.
const RULES: &str =
    "set inspect_hub true\nreject executable\nreject lookalike paypal.com\nreject eicar\n";

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Refused bodies and the rule each one fires.
const REFUSED: [(&str, &str); 4] = [
    (
        "the invoice: http://files.example/invoice.pdf.exe",
        "executable:.exe",
    ),
    (
        "please log in at http://paypa1.com/verify",
        "lookalike:paypal.com",
    ),
    // раураl.com (Cyrillic р, а, у) as punycode.
    (
        "please log in at http://xn--l-7sba6dbr.com/verify",
        "lookalike:paypal.com",
    ),
    (EICAR, "eicar"),
];

/// A gateway with the rules above, OSCAR and s2s listeners, federated with a Prosody serving
/// corp-a.test (STARTTLS and dialback).
/// The gateway, with the rules file, and Prosody as its partner (`net.server`, `net.prosody`).
struct Net {
    federation: xmpp::PinnedProsody,
    _rules: tempfile::TempDir,
}

impl std::ops::Deref for Net {
    type Target = xmpp::PinnedProsody;
    fn deref(&self) -> &xmpp::PinnedProsody {
        &self.federation
    }
}

fn start() -> Net {
    let rules = tempfile::tempdir().unwrap();
    let path = rules.path().join("rules.txt");
    std::fs::write(&path, RULES).unwrap();
    let federation = xmpp::with_pinned_prosody(
        &format!("[protection]\nrules = \"{}\"\n", path.display()),
        "oscar = \"127.0.0.1:0\"\n",
    );
    Net {
        federation,
        _rules: rules,
    }
}

async fn browser(server: &Server, user: &str) -> Client {
    let mut c = server.login(user).await;
    c.expect_type("roster").await;
    c
}

async fn aim(server: &Server, screen_name: &str) -> Oscar {
    assert_eq!(server.register(screen_name, PW).await, 201);
    sign_on(server, screen_name, PW).await.unwrap()
}

/// The next IM the AIM client gets must be `text` from `from`.
async fn first_im_is(client: &mut Oscar, from: &str, text: &str) {
    let (sender, html) = client.incoming_im().await;
    assert_eq!(sender, from);
    assert!(
        html.contains(text),
        "a refused message arrived first: {html}"
    );
}

/// Expects the ICBM error (04,01) answering request `rid`, with the code policy refusals map to.
async fn icbm_policy_error(client: &mut Oscar, rid: u32, body: &str) {
    let err = client.expect(4, 1).await;
    assert_eq!(err.header.request_id, rid, "{body}");
    let code = SnacError::decode_body(&err.body).unwrap().code;
    assert_eq!(
        code,
        SnacErrorCode::RequestDenied.as_u16(),
        "{body}: code {code:#06x}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prosody_user_is_refused_with_policy_violation_and_hub_users_receive_nothing() {
    let net = start();
    let mut alice = XmppClient::connect("alice", &net.prosody);
    let mut bob = browser(&net.server, "bob").await;
    let mut dave = aim(&net.server, "Dave").await;

    // From Prosody to a browser user and to an AIM user: a message error stanza with
    // `policy-violation` whose text names the rule.
    for (to, tag) in [(BOB, "b"), (DAVE, "d")] {
        for (i, (body, rule)) in REFUSED.iter().enumerate() {
            let id = format!("{tag}{i}");
            alice.send(json!({"cmd": "message", "to": to, "body": body, "id": id}));
            let e = alice.expect(&format!("error for {id}"), |v| {
                v["event"] == "message_error" && v["id"] == id.as_str()
            });
            assert_eq!(e["from"], to, "{e}");
            assert_eq!(e["condition"], "policy-violation", "{body}: {e}");
            let text = e["text"].as_str().unwrap_or("");
            assert!(text.contains(rule), "{body}: the rule is named: {e}");
        }
    }
    alice.send(json!({"cmd": "message", "to": BOB, "body": "harmless, for bob", "id": "ok1"}));
    alice.send(json!({"cmd": "message", "to": DAVE, "body": "harmless, for dave", "id": "ok2"}));
    let m = bob.expect_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some(ALICE), Some("harmless, for bob")),
        "a refused message arrived first: {m}"
    );
    first_im_is(&mut dave, ALICE, "harmless, for dave").await;

    // From the hub to Prosody: `policy_violation` naming the rule, and nothing leaves.
    for (i, (body, rule)) in REFUSED.iter().enumerate() {
        let id = format!("h{i}");
        let e = bob.message(&id, ALICE, body).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("policy_violation")),
            "{body}: {e}"
        );
        assert!(
            e["text"].as_str().unwrap_or("").contains(rule),
            "{body}: the rule is named: {e}"
        );
    }
    assert_eq!(
        bob.message("h-ok", ALICE, "harmless, for alice").await["type"],
        "ack"
    );
    let got = alice.expect("message from bob", |v| {
        v["event"] == "message" && v["from"] == BOB && v["body"] != ""
    });
    assert_eq!(
        got["body"], "harmless, for alice",
        "a refused message arrived first: {got}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aim_user_is_refused_with_an_icbm_error_and_no_recipient_sees_it() {
    let net = start();
    let mut alice = XmppClient::connect("alice", &net.prosody);
    let mut bob = browser(&net.server, "bob").await;
    let mut dave = aim(&net.server, "Dave").await;

    // AIM clients send HTML; Pidgin turns a typed address into an anchor with the same text.
    let mut bodies: Vec<(String, &str)> = REFUSED
        .iter()
        .map(|(body, _)| (format!("<HTML><BODY>{body}</BODY></HTML>"), *body))
        .collect();
    bodies.push((
        "<HTML><BODY><A HREF=\"http://files.example/invoice.pdf.exe\">http://files.example/invoice.pdf.exe</A></BODY></HTML>".to_string(),
        "anchor",
    ));
    for to in ["bob", ALICE] {
        for (html, what) in &bodies {
            let rid = dave.im(to, html).await;
            icbm_policy_error(&mut dave, rid, what).await;
        }
    }
    dave.im("bob", "<HTML><BODY>harmless, for bob</BODY></HTML>")
        .await;
    dave.im(ALICE, "<HTML><BODY>harmless, for alice</BODY></HTML>")
        .await;
    let m = bob.expect_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some(DAVE), Some("harmless, for bob")),
        "a refused message arrived first: {m}"
    );
    let got = alice.expect("message from dave", |v| {
        v["event"] == "message" && v["from"] == DAVE && v["body"] != ""
    });
    assert_eq!(
        got["body"], "harmless, for alice",
        "a refused message arrived first: {got}"
    );
}
