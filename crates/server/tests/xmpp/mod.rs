//! Real XMPP peers for the tests: Prosody (Debian's package, started per test as the prosody
//! user, resolving through its own loopback-only libunbound view) and a scripted slixmpp client.
#![allow(dead_code)]

use super::common::PATIENCE;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const CORP: &str = "corp-a.test";

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Dialback,
    Certificate,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn require(tool: &str) {
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

pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Self-signed for corp-a.test (dialback mode), or a CA with leaves for both domains.
    pub fn make(dir: &Path, mode: Mode) -> Certs {
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

pub struct Prosody {
    child: Child,
    pub c2s: u16,
    _dir: tempfile::TempDir,
}

impl Prosody {
    pub fn start(mode: Mode, certs: &Certs, s2s: u16, hub_s2s: u16) -> Prosody {
        Prosody::start_for(mode, certs, s2s, hub_s2s, "127.0.0.1", &[])
    }

    /// As [`Prosody::start`], with the gateway at `gateway_ip` and more domains that Prosody finds
    /// there by address (no SRV record: port 5269). libunbound takes one `local-data` entry only.
    pub fn start_for(
        mode: Mode,
        certs: &Certs,
        s2s: u16,
        hub_s2s: u16,
        gateway_ip: &str,
        gateway_domains: &[&str],
    ) -> Prosody {
        Prosody::launch(mode, certs, s2s, hub_s2s, gateway_ip, gateway_domains, None)
    }

    /// As [`Prosody::start`], also accepting s2s over direct TLS (XEP-0368) on `direct_tls`.
    pub fn start_direct_tls(
        mode: Mode,
        certs: &Certs,
        s2s: u16,
        hub_s2s: u16,
        direct_tls: u16,
    ) -> Prosody {
        Prosody::launch(
            mode,
            certs,
            s2s,
            hub_s2s,
            "127.0.0.1",
            &[],
            Some(direct_tls),
        )
    }

    fn launch(
        mode: Mode,
        certs: &Certs,
        s2s: u16,
        hub_s2s: u16,
        gateway_ip: &str,
        gateway_domains: &[&str],
        direct_tls: Option<u16>,
    ) -> Prosody {
        let direct_tls_ports = direct_tls.map(|p| p.to_string()).unwrap_or_default();
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
        // Direct TLS ports pick their certificate by SNI from the certificate folder.
        std::fs::create_dir_all(run.join("certs")).unwrap();
        std::fs::copy(certs.path("corp.crt"), run.join("certs/corp-a.test.crt")).unwrap();
        std::fs::copy(certs.path("corp.key"), run.join("certs/corp-a.test.key")).unwrap();
        let cafile = if mode == Mode::Certificate {
            std::fs::copy(certs.path("ca.crt"), run.join("ca.crt")).unwrap();
            format!("cafile = \"{}/ca.crt\";", run.display())
        } else {
            String::new()
        };
        let mut hosts = format!("{gateway_ip} hub.test\n127.0.0.1 corp-a.test\n");
        for d in gateway_domains {
            hosts.push_str(&format!("{gateway_ip} {d}\n"));
        }
        std::fs::write(run.join("hosts"), hosts).unwrap();
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
s2s_direct_tls_ports = {{ {direct_tls_ports} }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix"; "blocklist" }}
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
pub struct XmppClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl XmppClient {
    pub fn connect(user: &str, prosody: &Prosody) -> XmppClient {
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

    pub fn send(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

    /// The first line matching `pred` within `wait`, skipping others; `None` if none came.
    pub fn try_expect(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return Some(v),
                Ok(_) => continue,
                Err(_) => return None,
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

/// The gateway federated with a real Prosody as its dialback partner at a pinned address.
pub struct PinnedProsody {
    pub server: super::common::Server,
    pub prosody: Prosody,
    _certs: tempfile::TempDir,
}

/// Starts the gateway with `extra` configuration and the listeners in `listen` besides
/// `xmpp_s2s`, and Prosody as `[[partner]]` `CORP` with `auth = "dialback"`.
pub fn with_pinned_prosody(extra: &str, listen: &str) -> PinnedProsody {
    require("runuser");
    let certs = tempfile::tempdir().unwrap();
    let pki = Certs::make(certs.path(), Mode::Dialback);
    let prosody_s2s = free_port();
    let config = format!(
        "{extra}[[partner]]\ndomain = \"{CORP}\"\nprotocol = \"xmpp\"\naddress = \"127.0.0.1:{prosody_s2s}\"\nauth = \"dialback\"\n"
    );
    let server = super::common::Server::start_listening(
        &config,
        &format!("xmpp_s2s = \"127.0.0.1:0\"\n{listen}"),
    );
    let prosody = Prosody::start(
        Mode::Dialback,
        &pki,
        prosody_s2s,
        server.listeners["xmpp_s2s"].port(),
    );
    PinnedProsody {
        server,
        prosody,
        _certs: certs,
    }
}
