//! The operating contract's command line against the real binary.

mod common;

use common::{binary, Server};
use serde_json::json;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn user_commands_work_while_serve_runs() {
    let s = Server::start("");
    let out = s.cli(
        &["user", "add", "Sam Spade", "--password", "password1"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("samspade@hub.test"));
    let out = s.cli(&["user", "add", "tina"], Some("from-stdin\n"));
    assert!(out.status.success(), "{}", text(&out));
    let out = s.cli(&["user", "add", "tina", "--password", "password1"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("taken"), "{}", text(&out));

    let out = s.cli(&["user", "list"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "samspade@hub.test\ntina@hub.test\n"
    );

    // The running server sees accounts made by the CLI, and new passwords.
    let mut c = s.connect().await;
    c.send(json!({"type": "login", "user": "tina", "password": "from-stdin"}))
        .await;
    assert_eq!(c.recv().await["type"], "welcome");
    let out = s.cli(&["user", "passwd", "tina"], Some("new-secret\n"));
    assert!(out.status.success(), "{}", text(&out));
    let mut c = s.connect().await;
    c.send(json!({"type": "login", "user": "tina", "password": "new-secret"}))
        .await;
    assert_eq!(c.recv().await["type"], "welcome");

    let out = s.cli(&["user", "remove", "samspade"], None);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.cli(&["user", "remove", "samspade"], None);
    assert!(!out.status.success());
    let out = s.cli(&["user", "list"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tina@hub.test\n");
    let out = s.cli(&["user", "add", "x", "--password", "password1"], None);
    assert!(!out.status.success(), "a one-letter name is refused");
}

#[test]
fn config_check_and_example() {
    let out = std::process::Command::new(binary())
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, &example).unwrap();
    let out = std::process::Command::new(binary())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("domain = \"hub.example\""));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[hub]\ndomain = \"x.example\"\nregistraton = \"open\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .args(["config", "check"])
        .env("ENTENTE_CONFIG", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("registraton"),
        "the error names the unknown key: {}",
        text(&out)
    );

    let missing = dir.path().join("missing.toml");
    let out = std::process::Command::new(binary())
        .args(["config", "check", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_embedded_default_starts_a_hub_in_the_working_directory() {
    // Port 8080 may be taken on a developer machine; the default itself is unit-tested, so this
    // only runs the binary with no configuration when the port is free.
    if std::net::TcpListener::bind("127.0.0.1:8080").is_err() {
        eprintln!("127.0.0.1:8080 is busy; skipping the embedded-default run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("ENTENTE_CONFIG")
        .env("ENTENTE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "listening http 127.0.0.1:8080"
    );
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "web client http://127.0.0.1:8080/"
    );
    assert!(dir.path().join("entente-data/entente.sqlite3").exists());
    assert!(dir.path().join("entente-data/tls/cert.pem").exists());
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
