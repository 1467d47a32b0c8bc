//! The server under load: either one already running on a loopback address, or one this tool
//! starts from a binary with a throw-away configuration and data directory, then stops.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the server's HTTP listener is, checked to be on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTarget {
    pub addr: SocketAddr,
}

impl HttpTarget {
    /// Parses `http://IP:PORT` (a trailing `/` is allowed, `localhost` means 127.0.0.1).
    /// Only loopback addresses are accepted: this tool never loads another host.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("`{url}`: only http:// URLs are supported"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('@') {
            bail!("`{url}`: give only scheme, host and port, like http://127.0.0.1:8080");
        }
        let addr = if let Some(port) = authority.strip_prefix("localhost:") {
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow!("`{url}`: bad port `{port}`"))?;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        } else {
            authority.parse::<SocketAddr>().map_err(|_| {
                anyhow!("`{url}`: expected http://IP:PORT with a numeric IP and an explicit port")
            })?
        };
        Self::from_addr(addr)
    }

    /// Accepts a bound address, refusing anything but loopback.
    pub fn from_addr(addr: SocketAddr) -> Result<Self> {
        if !addr.ip().is_loopback() {
            bail!(
                "{addr} is not a loopback address: this tool only loads a server on this machine"
            );
        }
        if addr.port() == 0 {
            bail!("{addr}: port 0 is not a server address");
        }
        Ok(Self { addr })
    }

    /// The WebSocket URL of the hub client protocol.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.addr)
    }
}

/// Settings for a server this tool starts.
#[derive(Debug, Clone)]
pub struct SpawnSettings {
    /// Hub domain of the throw-away server.
    pub domain: String,
    /// Hub client frames per second per connection (the server's token bucket).
    pub connection_rate: f64,
    /// Size of that bucket.
    pub connection_burst: u32,
    /// Extra environment variables for the server process.
    pub env: Vec<(String, String)>,
    /// Also listen for OSCAR clients (`[listen] oscar`) on 127.0.0.1 with a kernel-picked port.
    pub oscar: bool,
    /// Also listen for XMPP server-to-server streams (`[listen] xmpp_s2s`), likewise.
    pub xmpp_s2s: bool,
    /// XMPP partner domains written as `[[partner]]` tables.
    pub xmpp_partners: Vec<XmppPartner>,
    /// Also listen for SIP (`[listen] sip`, UDP and TCP on one port) on 127.0.0.1, likewise.
    pub sip: bool,
    /// SIP partner domains written as `[[partner]]` tables (`protocol = "sip"`, the same
    /// fields as [`XmppPartner`], `auth` `none` or `certificate`).
    pub sip_partners: Vec<XmppPartner>,
}

/// An XMPP partner of a throw-away server: its domain, where its server listens, and how it
/// authenticates (`dialback` or `certificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppPartner {
    pub domain: String,
    pub address: SocketAddr,
    pub auth: String,
}

impl Default for SpawnSettings {
    fn default() -> Self {
        // High enough that no rate limit (per connection, sender or partner domain; each is
        // written with these values) throttles a benchmark.
        Self {
            domain: "localhost".to_string(),
            connection_rate: 1_000_000.0,
            connection_burst: 1_000_000,
            env: Vec::new(),
            oscar: false,
            xmpp_s2s: false,
            xmpp_partners: Vec::new(),
            sip: false,
            sip_partners: Vec::new(),
        }
    }
}

/// The TOML configuration of a throw-away server: HTTP (and the OSCAR and XMPP listeners when
/// asked) on 127.0.0.1 with ports the kernel picks, open registration, storage in `data_dir`,
/// limits and partners from `settings`.
pub fn render_config(settings: &SpawnSettings, data_dir: &Path) -> String {
    let mut listen = String::new();
    if settings.oscar {
        listen.push_str("oscar = \"127.0.0.1:0\"\n");
    }
    if settings.xmpp_s2s {
        listen.push_str("xmpp_s2s = \"127.0.0.1:0\"\n");
    }
    if settings.sip {
        listen.push_str("sip = \"127.0.0.1:0\"\n");
    }
    let mut partners = String::new();
    let all = settings
        .xmpp_partners
        .iter()
        .map(|p| ("xmpp", p))
        .chain(settings.sip_partners.iter().map(|p| ("sip", p)));
    for (protocol, p) in all {
        partners.push_str(&format!(
            "\n[[partner]]\ndomain = {}\nprotocol = \"{protocol}\"\naddress = {}\nauth = {}\n",
            toml_string(&p.domain),
            toml_string(&p.address.to_string()),
            toml_string(&p.auth),
        ));
    }
    format!(
        "# Written by entente-bench for one run; deleted afterwards.\n\
[hub]\n\
domain = {domain}\n\
registration = \"open\"\n\
\n\
[storage]\n\
data_dir = {data_dir}\n\
\n\
[listen]\n\
http = \"127.0.0.1:0\"\n\
{listen}\
\n\
[limits]\n\
connection_rate = {rate:?}\n\
connection_burst = {burst}\n\
sender_rate = {rate:?}\n\
sender_burst = {burst}\n\
signal_rate = {rate:?}\n\
signal_burst = {burst}\n\
partner_rate = {rate:?}\n\
partner_burst = {burst}\n\
{partners}",
        domain = toml_string(&settings.domain),
        data_dir = toml_string(&data_dir.to_string_lossy()),
        rate = settings.connection_rate,
        burst = settings.connection_burst,
    )
}

/// A TOML basic string holding `s`, with quotes, backslashes and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads a `listening NAME IP:PORT` line printed by `entente serve`.
pub fn parse_listening_line(line: &str) -> Option<(&str, SocketAddr)> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "listening" {
        return None;
    }
    let name = parts.next()?;
    let addr = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((name, addr))
}

/// Reads one line (without its end) of at most `max` bytes; `None` at end of input. A longer
/// line is an error, and invalid UTF-8 is replaced.
pub async fn read_line_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<String>> {
    let mut buf = Vec::new();
    let mut limited = reader.take(max as u64 + 1);
    let n = limited.read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > max {
        bail!("the server printed a line longer than {max} bytes");
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// How long a started server may take to print its HTTP listener.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may drain after SIGTERM before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest stdout line read from the server while waiting for its listeners.
const MAX_LINE: usize = 4096;

/// A server started by this tool. Dropping it kills the process; [`SpawnedServer::stop`] asks it
/// to drain first.
pub struct SpawnedServer {
    child: Child,
    pid: u32,
    pub http: HttpTarget,
    /// Every listener the server announced (`http`, `oscar`, `xmpp_s2s`, …).
    pub listeners: BTreeMap<String, SocketAddr>,
    log_path: PathBuf,
    config_path: PathBuf,
    /// Keeps the configuration and data directory alive until the server is gone.
    dir: tempfile::TempDir,
}

impl SpawnedServer {
    /// Writes a configuration into a new temporary directory, starts `binary serve --config`,
    /// and waits for the `listening NAME ADDR` line of every listener it was configured with.
    pub async fn start(binary: &Path, settings: &SpawnSettings) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("entente-bench-")
            .tempdir()
            .context("creating a temporary directory for the server")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).context("creating the server's data directory")?;
        let config_path = dir.path().join("entente.toml");
        std::fs::write(&config_path, render_config(settings, &data_dir))
            .context("writing the server configuration")?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).context("creating the server log file")?;

        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe from the server"))?;

        let mut expected = vec!["http"];
        if settings.oscar {
            expected.push("oscar");
        }
        if settings.xmpp_s2s {
            expected.push("xmpp_s2s");
        }
        if settings.sip {
            expected.push("sip");
        }
        let mut listeners = BTreeMap::new();
        let mut reader = BufReader::new(stdout);
        let wait_http = async {
            while let Some(line) = read_line_limited(&mut reader, MAX_LINE).await? {
                if let Some((name, addr)) = parse_listening_line(&line) {
                    listeners.insert(name.to_string(), addr);
                    if expected.iter().all(|n| listeners.contains_key(*n)) {
                        return Ok(listeners.get("http").copied());
                    }
                }
            }
            Ok::<_, anyhow::Error>(None)
        };
        let found = tokio::time::timeout(STARTUP_TIMEOUT, wait_http).await;
        let mut server = Self {
            child,
            pid,
            // Replaced below once the address is known.
            http: HttpTarget {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            listeners: BTreeMap::new(),
            log_path,
            config_path,
            dir,
        };
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                let status = server.child.wait().await.ok();
                bail!(
                    "the server closed its output before announcing its listeners (exit: {}){}",
                    status.map_or("unknown".to_string(), |s| s.to_string()),
                    server.log_tail()
                );
            }
            Ok(Err(e)) => bail!("reading the server's output: {e}{}", server.log_tail()),
            Err(_) => bail!(
                "the server did not announce all its listeners within {}s{}",
                STARTUP_TIMEOUT.as_secs(),
                server.log_tail()
            ),
        };
        server.http = HttpTarget::from_addr(addr)?;
        server.listeners = listeners;
        // Keep reading stdout so the server never blocks on a full pipe.
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut reader, &mut sink).await;
        });
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's stderr, prefixed for an error message; empty if none.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail = &lines[lines.len().saturating_sub(20)..];
        format!("\n--- last server log lines ---\n{}", tail.join("\n"))
    }

    /// Whether the process has already exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits for the drain; kills the process if it takes too long.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let pid = rustix::process::Pid::from_raw(self.pid as i32)
            .ok_or_else(|| anyhow!("invalid server pid {}", self.pid))?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("sending SIGTERM to the server")?;
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await.ok();
                bail!(
                    "the server did not exit within {}s of SIGTERM and was killed",
                    SHUTDOWN_TIMEOUT.as_secs()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.ws_url(), "ws://127.0.0.1:8080/api/v1/ws");
        let t = HttpTarget::parse("http://localhost:9000/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        let t = HttpTarget::parse("http://[::1]:7000").unwrap();
        assert_eq!(t.ws_url(), "ws://[::1]:7000/api/v1/ws");
        assert!(HttpTarget::parse("http://127.8.9.10:1").is_ok());
    }

    #[test]
    fn other_hosts_and_malformed_urls_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2:80",
            "http://8.8.8.8:80",
            "http://example.com:80",
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:8080/api",
            "http://user@127.0.0.1:8080",
            "http://localhost:x",
            "http://",
            "",
        ] {
            assert!(HttpTarget::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn config_is_valid_toml_with_the_expected_values() {
        let settings = SpawnSettings::default();
        let text = render_config(&settings, Path::new("/tmp/bench data/\"quoted\"\\dir"));
        let value: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(value["hub"]["domain"].as_str(), Some("localhost"));
        assert_eq!(value["hub"]["registration"].as_str(), Some("open"));
        assert_eq!(
            value["storage"]["data_dir"].as_str(),
            Some("/tmp/bench data/\"quoted\"\\dir")
        );
        assert_eq!(value["listen"]["http"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(value["listen"].as_table().map(|t| t.len()), Some(1));
        assert_eq!(
            value["limits"]["connection_rate"].as_float(),
            Some(1_000_000.0)
        );
        assert_eq!(
            value["limits"]["connection_burst"].as_integer(),
            Some(1_000_000)
        );
        for limit in ["sender", "signal", "partner"] {
            assert_eq!(
                value["limits"][&format!("{limit}_rate")].as_float(),
                Some(1_000_000.0)
            );
        }
        // Only sections the operating contract defines.
        let mut sections: Vec<&String> = value.keys().collect();
        sections.sort();
        assert_eq!(sections, ["hub", "limits", "listen", "storage"]);
    }

    #[test]
    fn oscar_xmpp_and_partners_are_written() {
        let settings = SpawnSettings {
            oscar: true,
            xmpp_s2s: true,
            xmpp_partners: vec![XmppPartner {
                domain: "bench.test".to_string(),
                address: "127.0.0.1:4567".parse().unwrap(),
                auth: "dialback".to_string(),
            }],
            ..SpawnSettings::default()
        };
        let value: toml::Table =
            toml::from_str(&render_config(&settings, Path::new("/d"))).expect("valid TOML");
        assert_eq!(value["listen"]["http"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(value["listen"]["oscar"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(value["listen"]["xmpp_s2s"].as_str(), Some("127.0.0.1:0"));
        let partners = value["partner"].as_array().expect("[[partner]] tables");
        assert_eq!(partners.len(), 1);
        assert_eq!(partners[0]["domain"].as_str(), Some("bench.test"));
        assert_eq!(partners[0]["protocol"].as_str(), Some("xmpp"));
        assert_eq!(partners[0]["address"].as_str(), Some("127.0.0.1:4567"));
        assert_eq!(partners[0]["auth"].as_str(), Some("dialback"));
        assert_eq!(
            value["limits"]["connection_burst"].as_integer(),
            Some(1_000_000)
        );
    }

    #[test]
    fn sip_listener_and_partners_are_written() {
        let settings = SpawnSettings {
            sip: true,
            sip_partners: vec![XmppPartner {
                domain: "bench-sip.test".to_string(),
                address: "127.0.0.1:5070".parse().unwrap(),
                auth: "none".to_string(),
            }],
            ..SpawnSettings::default()
        };
        let value: toml::Table =
            toml::from_str(&render_config(&settings, Path::new("/d"))).expect("valid TOML");
        assert_eq!(value["listen"]["sip"].as_str(), Some("127.0.0.1:0"));
        let partners = value["partner"].as_array().expect("[[partner]] tables");
        assert_eq!(partners.len(), 1);
        assert_eq!(partners[0]["domain"].as_str(), Some("bench-sip.test"));
        assert_eq!(partners[0]["protocol"].as_str(), Some("sip"));
        assert_eq!(partners[0]["address"].as_str(), Some("127.0.0.1:5070"));
        assert_eq!(partners[0]["auth"].as_str(), Some("none"));
    }

    #[test]
    fn whole_number_rates_stay_floats() {
        let settings = SpawnSettings {
            connection_rate: 50.0,
            connection_burst: 60,
            ..SpawnSettings::default()
        };
        let value: toml::Table =
            toml::from_str(&render_config(&settings, Path::new("/d"))).unwrap();
        assert_eq!(value["limits"]["connection_rate"].as_float(), Some(50.0));
        assert_eq!(value["limits"]["connection_burst"].as_integer(), Some(60));
    }

    #[test]
    fn control_characters_are_escaped() {
        let settings = SpawnSettings {
            domain: "a\nb\u{1}c".to_string(),
            ..SpawnSettings::default()
        };
        let value: toml::Table =
            toml::from_str(&render_config(&settings, Path::new("/d"))).unwrap();
        assert_eq!(value["hub"]["domain"].as_str(), Some("a\nb\u{1}c"));
    }

    #[tokio::test]
    async fn output_lines_are_bounded() {
        let input: &[u8] = b"listening http 127.0.0.1:1\r\nweb client x\n\xff\nlast";
        let mut reader = BufReader::new(input);
        let mut lines = Vec::new();
        while let Some(line) = read_line_limited(&mut reader, 64).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                "listening http 127.0.0.1:1",
                "web client x",
                "\u{fffd}",
                "last"
            ]
        );

        let long = vec![b'a'; 1000];
        let mut reader = BufReader::new(&long[..]);
        assert!(read_line_limited(&mut reader, 64).await.is_err());
        // Exactly at the limit is fine, with or without a newline.
        let mut reader = BufReader::new(&long[..64]);
        assert_eq!(
            read_line_limited(&mut reader, 64)
                .await
                .unwrap()
                .map(|l| l.len()),
            Some(64)
        );
    }

    #[test]
    fn listening_lines_are_parsed() {
        assert_eq!(
            parse_listening_line("listening http 127.0.0.1:41234"),
            Some(("http", "127.0.0.1:41234".parse().unwrap()))
        );
        assert_eq!(
            parse_listening_line("listening oscar [::1]:5190"),
            Some(("oscar", "[::1]:5190".parse().unwrap()))
        );
        assert_eq!(parse_listening_line("web client http://127.0.0.1:1/"), None);
        assert_eq!(parse_listening_line("listening http"), None);
        assert_eq!(parse_listening_line("listening http nowhere"), None);
        assert_eq!(
            parse_listening_line("listening http 127.0.0.1:1 extra"),
            None
        );
        assert_eq!(parse_listening_line(""), None);
    }
}
