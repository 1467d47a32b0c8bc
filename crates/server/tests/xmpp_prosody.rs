//! XMPP federation with a real Prosody server (Debian's `prosody`, started by the test) and a real
//! client on it (slixmpp), in both authentication modes: STARTTLS + dialback with self-signed
//! certificates, and certificates from a test CA with `s2s_secure_auth` (SASL EXTERNAL).
//!
//! Name resolution stays on loopback: Prosody resolves `hub.test` through its own libunbound
//! view (a local zone with one SRV record), and Entente connects to the partner's pinned address.

mod common;

use common::{Client, Server, PATIENCE};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CORP: &str = "corp-a.test";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Dialback,
    Certificate,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "{tool} is not installed: run scripts/test.sh as root, which installs it"
    );
}

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Self-signed for corp-a.test (dialback mode), or a CA with leaves for both domains.
    fn make(dir: &Path, mode: Mode) -> Certs {
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        match mode {
            Mode::Dialback => {
                let c = rcgen::generate_simple_self_signed(vec![CORP.to_string()]).unwrap();
                write("corp.crt", c.cert.pem());
                write("corp.key", c.signing_key.serialize_pem());
            }
            Mode::Certificate => {
                let ca_key = rcgen::KeyPair::generate().unwrap();
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "Entente test CA");
                let ca = params.self_signed(&ca_key).unwrap();
                write("ca.crt", ca.pem());
                let issuer = rcgen::Issuer::new(params, ca_key);
                for (name, domain) in [("corp", CORP), ("hub", "hub.test")] {
                    let key = rcgen::KeyPair::generate().unwrap();
                    let mut p = rcgen::CertificateParams::new(vec![domain.to_string()]).unwrap();
                    p.distinguished_name.push(rcgen::DnType::CommonName, domain);
                    let cert = p.signed_by(&key, &issuer).unwrap();
                    write(&format!("{name}.crt"), cert.pem());
                    write(&format!("{name}.key"), key.serialize_pem());
                }
            }
        }
        Certs {
            dir: dir.to_path_buf(),
        }
    }
}

struct Prosody {
    child: Child,
    c2s: u16,
    _dir: tempfile::TempDir,
}

impl Prosody {
    fn start(mode: Mode, certs: &Certs, s2s: u16, hub_s2s: u16) -> Prosody {
        require("prosody");
        let dir = tempfile::Builder::new()
            .prefix("prosody")
            .tempdir()
            .unwrap();
        let run = dir.path();
        std::fs::create_dir_all(run.join("data")).unwrap();
        for f in ["corp.crt", "corp.key"] {
            std::fs::copy(certs.path(f), run.join(f)).unwrap();
        }
        let cafile = if mode == Mode::Certificate {
            std::fs::copy(certs.path("ca.crt"), run.join("ca.crt")).unwrap();
            format!("cafile = \"{}/ca.crt\";", run.display())
        } else {
            String::new()
        };
        std::fs::write(
            run.join("hosts"),
            "127.0.0.1 hub.test\n127.0.0.1 corp-a.test\n",
        )
        .unwrap();
        let c2s = free_port();
        let secure = mode == Mode::Certificate;
        let config = format!(
            r#"
pidfile = "{run}/prosody.pid"
data_path = "{run}/data"
log = {{ debug = "{run}/prosody.log"; warn = "*console" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ {s2s} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix" }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure}
unbound = {{
  resolvconf = false;
  hoststxt = "{run}/hosts";
  forward = "127.0.0.1@1";
  options = {{
    ["local-zone:"] = "test. static";
    ["local-data:"] = "_xmpp-server._tcp.hub.test. 60 IN SRV 0 0 {hub_s2s} hub.test.";
  }};
}}
ssl = {{ {cafile} }}
VirtualHost "{CORP}"
  ssl = {{ certificate = "{run}/corp.crt"; key = "{run}/corp.key"; {cafile} }}
"#,
            run = run.display()
        );
        let cfg = run.join("prosody.cfg.lua");
        std::fs::write(&cfg, config).unwrap();
        let status = Command::new("chown")
            .args(["-R", "prosody:prosody"])
            .arg(run)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "chown for prosody (the tests run as root, as scripts/test.sh does)"
        );
        let mut perm = std::fs::metadata(run).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(run, perm).unwrap();
        for user in ["alice", "carol"] {
            let out = Command::new("runuser")
                .args(["-u", "prosody", "--", "prosodyctl", "--config"])
                .arg(&cfg)
                .args(["register", user, CORP, "secret-pw"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "prosodyctl register: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let child = Command::new("runuser")
            .args(["-u", "prosody", "--", "prosody", "-F", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", c2s)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "prosody did not open its c2s port"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::env::var_os("ENTENTE_KEEP_PROSODY").is_some() {
            eprintln!("prosody files kept in {}", dir.keep().display());
            return Prosody {
                child,
                c2s,
                _dir: tempfile::tempdir().unwrap(),
            };
        }
        Prosody {
            child,
            c2s,
            _dir: dir,
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        // runuser forwards the signal to prosody.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A slixmpp client on Prosody, driven line by line.
struct XmppClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl XmppClient {
    fn connect(user: &str, prosody: &Prosody) -> XmppClient {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xmpp/xmpp_client.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([
                &format!("{user}@{CORP}"),
                "secret-pw",
                "127.0.0.1",
                &prosody.c2s.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut c = XmppClient {
            child,
            stdin,
            lines,
        };
        c.expect("ready", |v| v["event"] == "ready");
        c
    }

    fn send(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + PATIENCE * 2;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(v) => seen.push(v),
                Err(_) => panic!("xmpp client: no {what}; saw {seen:?}"),
            }
        }
    }
}

impl Drop for XmppClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ALICE: &str = "alice@corp-a.test";
const BOB: &str = "bob@hub.test";

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
        "{tls}[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:{prosody_s2s}\"\nauth = \"{auth}\"\n"
    );
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
    require("runuser");
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path(), Mode::Dialback);
    let prosody_s2s = free_port();
    let extra = format!(
        "[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:{prosody_s2s}\"\nauth = \"dialback\"\n"
    );
    let server = Server::start_listening(
        &extra,
        "xmpp_s2s = \"127.0.0.1:0\"\noscar = \"127.0.0.1:0\"\n",
    );
    let prosody = Prosody::start(
        Mode::Dialback,
        &certs,
        prosody_s2s,
        server.listeners["xmpp_s2s"].port(),
    );
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

/// A partner without a pinned address is found through DNS (SRV `_xmpp-server._tcp`, then A), asked
/// of the configured name server only: here a loopback responder that knows the test names.
#[tokio::test(flavor = "multi_thread")]
async fn a_partner_is_found_through_the_configured_name_server() {
    require("runuser");
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path(), Mode::Dialback);
    let prosody_s2s = free_port();
    let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xmpp/mini_dns.py");
    let mut dns = Command::new("/usr/bin/python3")
        .arg(script)
        .args([
            "--port",
            &dns_port.to_string(),
            "--a",
            CORP,
            "--srv",
            &format!("{CORP}:{prosody_s2s}"),
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dns_out = dns.stdout.take().unwrap();
    let (tx, queries) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(dns_out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
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
    let _ = dns.kill();
    let _ = dns.wait();
    let asked: Vec<String> = queries.try_iter().collect();
    assert!(
        asked
            .iter()
            .any(|l| l.contains(&format!("_xmpp-server._tcp.{CORP} type=33 -> 1"))),
        "the SRV record was not asked for: {asked:?}"
    );
}
