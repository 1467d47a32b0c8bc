//! Protection at the gateway: content rules and outbreak containment, with each sender told in
//! its own protocol (hub `error` frames, SIP 403) and no recipient seeing what was refused.

mod common;
mod sip;

use common::Server;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const WORM: &str = "is it you? http://x.example/pic.pif";

fn server(extra: &str) -> Server {
    // The partners' pinned addresses are closed ports: what the gateway lets through is
    // acknowledged and later bounced; what it refuses never leaves.
    let partners = format!(
        "{}[[partner]]\ndomain = \"corp-a.test\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:9\"\nauth = \"dialback\"\n{extra}",
        sip::partner_toml("corp-b.test", Some(SocketAddr::from(([127, 0, 0, 1], 9))), "none")
    );
    Server::start_listening(&partners, "sip = \"127.0.0.1:0\"\n")
}

#[tokio::test]
async fn executable_links_are_refused_both_ways() {
    let s = server("");
    let mut alice = s.login("alice").await;
    let e = alice.message("w1", "carol@corp-b.test", WORM).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("policy_violation")),
        "{e}"
    );
    assert!(
        e["text"].as_str().unwrap().contains("executable:.pif"),
        "the rule is named: {e}"
    );
    // Links to ordinary pages pass.
    assert_eq!(
        alice
            .message("w2", "carol@corp-b.test", "see http://x.example/pic.jpg")
            .await["type"],
        "ack"
    );

    // From a SIP partner: 403, and alice receives nothing.
    sip::sipp_uac(
        s.listeners["sip"],
        "u1",
        "uac_message.xml",
        &[
            ("HUB", "hub.test"),
            ("FROM_DOMAIN", "corp-b.test"),
            ("BODY", WORM),
            ("EXPECT", "403"),
        ],
        "alice",
    )
    .await;
    assert!(alice
        .try_recv(Duration::from_millis(500))
        .await
        .is_none_or(|v| v["type"] != "message"));
}

#[tokio::test]
async fn look_alike_domains_and_eicar_are_refused_with_a_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "reject lookalike paypal.com\nreject eicar\nreject executable\n",
    )
    .unwrap();
    let s = server(&format!("[protection]\nrules = \"{}\"\n", rules.display()));
    let mut alice = s.login("alice").await;
    for (id, body, rule) in [
        (
            "p1",
            "please log in at http://paypa1.com/verify",
            "lookalike:paypal.com",
        ),
        (
            "p2",
            "please log in at https://раураl.com/verify",
            "lookalike:paypal.com",
        ),
        (
            "p3",
            r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
            "eicar",
        ),
    ] {
        let e = alice.message(id, "someone@corp-a.test", body).await;
        assert_eq!(e["code"], "policy_violation", "{body}: {e}");
        assert!(e["text"].as_str().unwrap().contains(rule), "{body}: {e}");
    }
    assert_eq!(
        alice
            .message(
                "p4",
                "someone@corp-a.test",
                "the real one: https://www.paypal.com/"
            )
            .await["type"],
        "ack"
    );
}

/// A Kelvir-like worm: one account sends the same link to twenty contacts spread over the hub,
/// an XMPP partner and a SIP partner. It is quarantined at the third message; nobody after that
/// receives it, the link is blocked for everyone else too, and the quarantined sender is told.
#[tokio::test]
async fn a_worm_outbreak_is_contained_within_three_messages() {
    let s = server("[protection]\noutbreak_recipients = 3\noutbreak_window_secs = 60\n[admin]\ntoken = \"drill-token\"\n");
    let hub_users: Vec<String> = (0..7).map(|i| format!("h{i}")).collect();
    for u in &hub_users {
        assert_eq!(s.register(u, "password1").await, 201);
    }
    let mut recipients: Vec<String> = hub_users.iter().map(|u| format!("{u}@hub.test")).collect();
    recipients.extend((0..7).map(|i| format!("x{i}@corp-a.test")));
    recipients.extend((0..6).map(|i| format!("s{i}@corp-b.test")));
    assert_eq!(recipients.len(), 20);
    // Interleave the three networks, as a worm walking a contact list would.
    recipients.sort_by_key(|r| r.chars().nth(1));
    let link = "look at this! http://pics.example/album/me.jpg";
    let mut worm = s.login("patient-zero").await;
    let mut delivered = Vec::new();
    for (i, to) in recipients.iter().enumerate() {
        let answer = worm.message(&format!("k{i}"), to, link).await;
        match answer["type"].as_str() {
            Some("ack") => delivered.push(to.clone()),
            _ => assert_eq!(answer["code"], "policy_violation", "{answer}"),
        }
    }
    assert_eq!(
        delivered.len(),
        2,
        "only the first two got through: {delivered:?}"
    );
    // The sender is quarantined for any content, to anyone.
    let e = worm.message("after", "h6@hub.test", "hello").await;
    assert!(e["text"].as_str().unwrap().contains("quarantine"), "{e}");
    // The link is blocked network-wide.
    let mut other = s.login("bystander").await;
    let e = other.message("b1", "h5@hub.test", link).await;
    assert!(e["text"].as_str().unwrap().contains("blocked"), "{e}");
    // Hub recipients after the first two have nothing waiting.
    for u in &hub_users {
        let address = format!("{u}@hub.test");
        if delivered.contains(&address) {
            continue;
        }
        let mut c = s.connect().await;
        c.send(json!({"type": "login", "user": u, "password": "password1"}))
            .await;
        assert_eq!(c.recv().await["type"], "welcome");
        c.expect_type("roster").await;
        assert!(
            c.try_recv(Duration::from_millis(200))
                .await
                .is_none_or(|v| v["type"] != "message"),
            "{u} got the worm"
        );
    }
    let (_, metrics) = s.http("GET", "/metrics", None).await;
    assert!(
        metrics.contains("entente_outbreak_alerts_total 1"),
        "{metrics}"
    );

    // The admin API shows the quarantine and releases it; the link stays blocked.
    let auth = "Authorization: Bearer drill-token\r\n";
    assert_eq!(
        s.http("GET", "/api/v1/admin/quarantines", None).await.0,
        401
    );
    assert_eq!(
        s.http_with(
            "GET",
            "/api/v1/admin/quarantines",
            None,
            "Authorization: Bearer nope\r\n"
        )
        .await
        .0,
        401
    );
    let (status, body) = s
        .http_with("GET", "/api/v1/admin/quarantines", None, auth)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("patient-zero@hub.test"), "{body}");
    // Everything the quarantined sender sent from the third worm message on is held: the
    // eighteen worm messages and the "hello" after them.
    let (status, body) = s
        .http_with(
            "GET",
            "/api/v1/admin/held?sender=patient-zero%40hub.test",
            None,
            auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let held: serde_json::Value = serde_json::from_str(&body).unwrap();
    let held = held["held"].as_array().unwrap();
    assert_eq!(held.len(), 19, "{body}");
    assert_eq!(
        held.iter().filter(|m| m["body"] == link).count(),
        18,
        "{body}"
    );
    assert!(held
        .iter()
        .all(|m| !delivered.contains(&m["recipient"].as_str().unwrap().to_string())));
    // Released without delivery: the held messages are discarded.
    let release = r#"{"sender":"patient-zero@hub.test"}"#;
    let (status, body) = s
        .http_with(
            "POST",
            "/api/v1/admin/quarantines/release",
            Some(release),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["discarded"], 19, "{answer}");
    assert_eq!(answer["delivered"], 0, "{answer}");
    assert_eq!(
        s.http_with(
            "POST",
            "/api/v1/admin/quarantines/release",
            Some(release),
            auth
        )
        .await
        .0,
        404
    );
    assert_eq!(
        worm.message("ok", "h6@hub.test", "sorry, that was not me")
            .await["type"],
        "ack"
    );
    assert!(worm.message("again", "h6@hub.test", link).await["text"]
        .as_str()
        .unwrap()
        .contains("blocked"));
    // The audit archive holds every decision about the worm's messages.
    let (status, lines) = s
        .http_with(
            "GET",
            "/api/v1/admin/audit?sender=patient-zero%40hub.test&limit=1000",
            None,
            auth,
        )
        .await;
    assert_eq!(status, 200, "{lines}");
    let entries: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let held = entries.iter().filter(|e| e["action"] == "held").count();
    assert_eq!(held, 19, "{held} held messages archived: {lines}");
    assert!(entries
        .iter()
        .filter(|e| e["action"] == "held" || e["action"] == "refused")
        .all(|e| e["rule"].as_str().unwrap().contains("outbreak")));
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["action"] == "discarded")
            .count(),
        19
    );
    assert!(entries
        .iter()
        .all(|e| e["body"].is_string() && e["ts"].as_i64().is_some()));
    let (status, body) = s
        .http_with("GET", "/api/v1/admin/partners", None, auth)
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("corp-a.test") && body.contains("corp-b.test"),
        "{body}"
    );
}

/// A `quarantine` content rule holds the message: the sender is told, the recipient gets
/// nothing, and an administrator's release with delivery sends it on as it was.
#[tokio::test]
async fn a_quarantine_rule_holds_until_an_administrator_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "set inspect_hub true\nquarantine keyword invoice\ntag keyword confidential\n",
    )
    .unwrap();
    let s = server(&format!(
        "[protection]\nrules = \"{}\"\n[admin]\ntoken = \"t0k3n\"\n",
        rules.display()
    ));
    let auth = "Authorization: Bearer t0k3n\r\n";
    let mut bob = s.login("bob").await;
    bob.expect_type("roster").await;
    let mut alice = s.login("alice").await;
    let e = alice
        .message("q1", "bob@hub.test", "your invoice is attached")
        .await;
    assert_eq!(e["code"], "policy_violation", "{e}");
    assert!(e["text"].as_str().unwrap().contains("held"), "{e}");
    assert!(bob
        .try_recv(std::time::Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "message"));
    let (_, body) = s.http_with("GET", "/api/v1/admin/held", None, auth).await;
    assert!(body.contains("your invoice is attached"), "{body}");
    let (status, body) = s
        .http_with(
            "POST",
            "/api/v1/admin/quarantines/release",
            Some(r#"{"sender":"alice@hub.test","deliver":true}"#),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"delivered\":1"), "{body}");
    let m = bob.expect_type("message").await;
    assert_eq!(m["body"], "your invoice is attached");
    assert_eq!(m["from"], "alice@hub.test");
    let (_, body) = s.http_with("GET", "/api/v1/admin/held", None, auth).await;
    assert_eq!(body, r#"{"held":[]}"#);
    // A `tag` rule delivers the message marked with the rule, and archives the decision.
    assert_eq!(
        alice
            .message("t1", "bob@hub.test", "strictly confidential")
            .await["type"],
        "ack"
    );
    let m = bob.expect_type("message").await;
    assert_eq!(
        m["body"],
        "[flagged by content rule keyword:confidential] strictly confidential"
    );
    let (_, lines) = s
        .http_with(
            "GET",
            "/api/v1/admin/audit?sender=alice%40hub.test",
            None,
            auth,
        )
        .await;
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"action\":\"tagged\"") && l.contains("keyword:confidential")),
        "{lines}"
    );
}

/// A quarantine and a network-wide block outlive a restart: only an administrator lifts the
/// quarantine.
#[tokio::test]
async fn containment_survives_a_restart() {
    let mut s = server("[protection]\noutbreak_recipients = 2\n[admin]\ntoken = \"t0k3n\"\n");
    let auth = "Authorization: Bearer t0k3n\r\n";
    for u in ["r1", "r2", "r3"] {
        assert_eq!(s.register(u, "password1").await, 201);
    }
    let link = "look http://pics.example/me.jpg";
    let mut worm = s.login("worm").await;
    assert_eq!(worm.message("a", "r1@hub.test", link).await["type"], "ack");
    let e = worm.message("b", "r2@hub.test", link).await;
    assert!(e["text"].as_str().unwrap().contains("quarantine"), "{e}");
    drop(worm);
    s.stop();
    s.restart();
    let (status, body) = s
        .http_with("GET", "/api/v1/admin/quarantines", None, auth)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("worm@hub.test"), "{body}");
    let mut worm = s.login("worm").await;
    let e = worm.message("c", "r3@hub.test", "just hello").await;
    assert!(e["text"].as_str().unwrap().contains("quarantine"), "{e}");
    let mut other = s.login("other").await;
    let e = other.message("d", "r3@hub.test", link).await;
    assert!(e["text"].as_str().unwrap().contains("blocked"), "{e}");
    let (status, body) = s
        .http_with(
            "POST",
            "/api/v1/admin/quarantines/release",
            Some(r#"{"sender":"worm@hub.test"}"#),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Released for good: another restart does not bring the quarantine back.
    drop((worm, other));
    s.stop();
    s.restart();
    let mut worm = s.login("worm").await;
    assert_eq!(
        worm.message("e", "r3@hub.test", "sorry").await["type"],
        "ack"
    );
    let e = worm.message("f", "r3@hub.test", link).await;
    assert!(e["text"].as_str().unwrap().contains("blocked"), "{e}");
}

/// The outbreak threshold is policy too: lowered in the file and reloaded, it applies at once.
#[tokio::test]
async fn the_outbreak_threshold_reloads() {
    let s = server("[protection]\noutbreak_recipients = 10\n[admin]\ntoken = \"t0k3n\"\n");
    for u in ["r1", "r2", "r3", "r4", "r5"] {
        assert_eq!(s.register(u, "password1").await, 201);
    }
    let mut sender = s.login("sender").await;
    for (i, to) in ["r1", "r2", "r3"].iter().enumerate() {
        let a = sender
            .message(
                &format!("a{i}"),
                &format!("{to}@hub.test"),
                "see http://one.example/x",
            )
            .await;
        assert_eq!(a["type"], "ack", "{a}");
    }
    let path = s.config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("outbreak_recipients = 10", "outbreak_recipients = 2");
    std::fs::write(&path, text).unwrap();
    let (status, body) = s
        .http_with(
            "POST",
            "/api/v1/admin/policy/reload",
            None,
            "Authorization: Bearer t0k3n\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let link = "see http://two.example/y";
    assert_eq!(
        sender.message("b1", "r4@hub.test", link).await["type"],
        "ack"
    );
    let e = sender.message("b2", "r5@hub.test", link).await;
    assert!(e["text"].as_str().unwrap().contains("quarantine"), "{e}");
}

#[tokio::test]
async fn rules_reload_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(&rules, "reject executable\n").unwrap();
    let s = server(&format!(
        "[protection]\nrules = \"{}\"\n[admin]\ntoken = \"t0k3n\"\n",
        rules.display()
    ));
    let mut alice = s.login("alice").await;
    assert_eq!(
        alice
            .message("r1", "bob@corp-a.test", "visit http://evil.example/")
            .await["type"],
        "ack"
    );
    std::fs::write(&rules, "reject executable\nreject domain evil.example\n").unwrap();
    let (status, body) = s
        .http_with(
            "POST",
            "/api/v1/admin/policy/reload",
            None,
            "Authorization: Bearer t0k3n\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let e = alice
        .message("r2", "bob@corp-a.test", "visit http://evil.example/")
        .await;
    assert!(
        e["text"].as_str().unwrap().contains("domain:evil.example"),
        "{e}"
    );
    // A broken rules file is refused and the rules in force stay.
    std::fs::write(&rules, "reject nonsense\n").unwrap();
    let (status, body) = s
        .http_with(
            "POST",
            "/api/v1/admin/policy/reload",
            None,
            "Authorization: Bearer t0k3n\r\n",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let e = alice
        .message("r3", "bob@corp-a.test", "visit http://evil.example/")
        .await;
    assert_eq!(e["code"], "policy_violation");
}
