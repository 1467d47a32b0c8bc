//! The operating contract's configuration file (TOML, unknown keys refused) and its embedded
//! default: a working hub on 127.0.0.1 with SQLite in `./entente-data`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The commented example printed by `entente config example`.
pub const EXAMPLE: &str = include_str!("../../../examples/entente.toml");

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub hub: Hub,
    pub storage: Storage,
    pub tls: Tls,
    /// `None`: every listener on 127.0.0.1 with its standard port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Listen>,
    pub federation: Federation,
    pub dns: DnsSettings,
    pub protection: Protection,
    pub admin: Admin,
    pub limits: Limits,
    #[serde(rename = "partner", skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<Partner>,
    /// The file this configuration was read from, if any (policy reloads read it again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Hub {
    pub domain: String,
    pub registration: Registration,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            domain: "localhost".into(),
            registration: Registration::Open,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub data_dir: PathBuf,
    pub database: String,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("entente-data"),
            database: "sqlite".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    pub trust: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xmpp_s2s: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sips: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oscar: Option<SocketAddr>,
}

impl Listen {
    /// The embedded default: every listener on loopback with its standard port.
    pub fn loopback_defaults() -> Listen {
        let at = |port: u16| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        Listen {
            http: at(8080),
            xmpp_s2s: at(5269),
            sip: at(5060),
            sips: at(5061),
            oscar: at(5190),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Federation {
    pub mode: FederationMode,
}

impl Default for Federation {
    fn default() -> Self {
        Federation {
            mode: FederationMode::Allowlist,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FederationMode {
    Allowlist,
    Open,
}

/// The admin API (`/api/v1/admin/...`), enabled by a bearer token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Content inspection and outbreak containment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Protection {
    /// Content rules file (format in `entente_policy::inspect`); without one, links to
    /// executable downloads and the EICAR test string are refused at federation boundaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<PathBuf>,
    /// A sender who sends the same message or link to this many distinct recipients…
    pub outbreak_recipients: usize,
    /// …within this many seconds is quarantined, and the content blocked for everyone.
    pub outbreak_window_secs: u64,
    pub quarantine_secs: u64,
    pub block_secs: u64,
    /// Keep message bodies in the audit archive.
    pub audit_bodies: bool,
    /// Audit entries older than this are removed (checked hourly).
    pub audit_retention_days: u64,
}

impl Default for Protection {
    fn default() -> Self {
        Protection {
            rules: None,
            outbreak_recipients: 10,
            outbreak_window_secs: 60,
            quarantine_secs: 3600,
            block_secs: 24 * 3600,
            audit_bodies: true,
            audit_retention_days: 90,
        }
    }
}

/// Name servers for partner lookups (SRV, A/AAAA); empty means the system's resolver.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    pub servers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_frame_bytes: usize,
    pub connection_rate: f64,
    pub connection_burst: u32,
    pub login_free_attempts: u32,
    pub login_max_attempts: u32,
    pub login_window_secs: u64,
    /// Messages per second from one sender, hub user or federated (bursts of `sender_burst`).
    pub sender_rate: f64,
    pub sender_burst: u32,
    /// Presence, subscription and typing events per second from one sender.
    pub signal_rate: f64,
    pub signal_burst: u32,
    /// Events per second from one partner domain, unless its `[[partner]]` table sets `rate`.
    pub partner_rate: f64,
    pub partner_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: entente_model::DEFAULT_MAX_BODY_BYTES,
            max_frame_bytes: 64 * 1024,
            connection_rate: 20.0,
            connection_burst: 60,
            login_free_attempts: 3,
            login_max_attempts: 10,
            login_window_secs: 300,
            sender_rate: 10.0,
            sender_burst: 40,
            signal_rate: 5.0,
            signal_burst: 50,
            partner_rate: 500.0,
            partner_burst: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    pub domain: String,
    pub protocol: PartnerProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default = "default_auth")]
    pub auth: PartnerAuth,
    /// Traffic that passes to and from this partner: `messages`, `typing`, `presence`,
    /// `subscriptions`.
    #[serde(default = "all_traffic")]
    pub allow: Vec<String>,
    /// Whether the partner's users may message hub users who have no subscription with them
    /// either way.
    #[serde(default = "yes")]
    pub strangers: bool,
    /// Message size limit for this partner, both ways (the smaller of this and `[limits]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Events per second this partner's domain may send (bursts of `burst`); default
    /// `[limits] partner_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

fn default_auth() -> PartnerAuth {
    PartnerAuth::Certificate
}

fn all_traffic() -> Vec<String> {
    entente_policy::Traffic::NAMES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn yes() -> bool {
    true
}

impl Partner {
    /// The policy this table sets.
    pub fn policy(&self, limits: &Limits) -> entente_policy::PartnerPolicy {
        entente_policy::PartnerPolicy {
            traffic: entente_policy::Traffic::from_names(&self.allow)
                .unwrap_or(entente_policy::Traffic::ALL),
            strangers: self.strangers,
            max_body_bytes: self.max_body_bytes,
            rate: self.rate.map(|r| entente_policy::Rate {
                per_second: r,
                burst: self.burst.unwrap_or(limits.partner_burst),
            }),
            certificate_required: self.auth == PartnerAuth::Certificate,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PartnerProtocol {
    Xmpp,
    Sip,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PartnerAuth {
    Certificate,
    Dialback,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads a file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("configuration"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let hub =
            entente_model::Address::new("x", &self.hub.domain, entente_model::DomainKind::Hub)
                .map_err(|e| {
                    ConfigError::Invalid(format!("[hub] domain {:?}: {e}", self.hub.domain))
                })?;
        if self.storage.database != "sqlite" {
            return Err(ConfigError::Invalid(format!(
                "[storage] database {:?}: only \"sqlite\" is supported by this build",
                self.storage.database
            )));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "[tls] cert and key go together".into(),
            ));
        }
        let l = &self.limits;
        let rates = [
            l.connection_rate,
            l.sender_rate,
            l.signal_rate,
            l.partner_rate,
        ];
        let bursts = [
            l.connection_burst,
            l.sender_burst,
            l.signal_burst,
            l.partner_burst,
        ];
        if l.max_body_bytes == 0
            || l.max_frame_bytes < 256
            || rates.iter().any(|r| !(*r > 0.0 && r.is_finite()))
            || bursts.contains(&0)
        {
            return Err(ConfigError::Invalid(
                "[limits] sizes and rates must be positive (max_frame_bytes at least 256)".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.partners {
            let domain =
                entente_model::Address::new("x", &p.domain, entente_model::DomainKind::Sip)
                    .map_err(|e| {
                        ConfigError::Invalid(format!("[[partner]] domain {:?}: {e}", p.domain))
                    })?;
            if domain.domain() == hub.domain() {
                return Err(ConfigError::Invalid(format!(
                    "[[partner]] {} is the hub's own domain",
                    p.domain
                )));
            }
            if !seen.insert(domain.domain().to_string()) {
                return Err(ConfigError::Invalid(format!(
                    "[[partner]] {} is listed twice",
                    p.domain
                )));
            }
            let ok = match p.protocol {
                PartnerProtocol::Xmpp => {
                    matches!(p.auth, PartnerAuth::Certificate | PartnerAuth::Dialback)
                }
                PartnerProtocol::Sip => {
                    matches!(p.auth, PartnerAuth::Certificate | PartnerAuth::None)
                }
            };
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "[[partner]] {}: auth {:?} does not apply to {:?}",
                    p.domain, p.auth, p.protocol
                )));
            }
            entente_policy::Traffic::from_names(&p.allow).map_err(|e| {
                ConfigError::Invalid(format!("[[partner]] {}: allow: {e}", p.domain))
            })?;
            if p.max_body_bytes == Some(0)
                || p.rate.is_some_and(|r| !(r > 0.0 && r.is_finite()))
                || p.burst == Some(0)
            {
                return Err(ConfigError::Invalid(format!(
                    "[[partner]] {}: max_body_bytes, rate and burst must be positive",
                    p.domain
                )));
            }
        }
        Ok(())
    }

    /// The listeners in force: the file's `[listen]` table, or every one on loopback.
    pub fn listeners(&self) -> Listen {
        self.listen
            .clone()
            .unwrap_or_else(Listen::loopback_defaults)
    }

    /// The effective configuration, as TOML.
    pub fn to_toml(&self) -> String {
        let mut effective = self.clone();
        effective.listen = Some(self.listeners());
        toml::to_string_pretty(&effective).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.hub.domain, "hub.example");
        assert_eq!(c.hub.registration, Registration::Closed);
        assert_eq!(c.partners.len(), 2);
        assert_eq!(c.listeners().oscar, Some("0.0.0.0:5190".parse().unwrap()));
    }

    #[test]
    fn every_example_in_the_repository_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n > 0, "no example configurations in {}", dir.display());
    }

    #[test]
    fn the_embedded_default_is_an_open_hub_on_loopback() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.hub.domain, "localhost");
        assert_eq!(c.hub.registration, Registration::Open);
        assert_eq!(c.storage.data_dir, PathBuf::from("entente-data"));
        assert_eq!(c.listeners().http, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(c.partners.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::parse("[hub]\ndomian = \"x.example\"\n").is_err());
        assert!(Config::parse("[hub]\ndomain = \"bad..domain\"\n").is_err());
        assert!(Config::parse("[federation]\nmode = \"sometimes\"\n").is_err());
        assert!(Config::parse(
            "[[partner]]\ndomain = \"a.example\"\nprotocol = \"sip\"\nauth = \"dialback\"\n"
        )
        .is_err());
        assert!(Config::parse("[hub]\ndomain = \"a.example\"\n[[partner]]\ndomain = \"A.example\"\nprotocol = \"xmpp\"\n").is_err());
        assert!(Config::parse("[listen]\nhttp = \"not an address\"\n").is_err());
        assert!(Config::parse(
            "[[partner]]\ndomain = \"a.example\"\nprotocol = \"xmpp\"\nallow = [\"faxes\"]\n"
        )
        .is_err());
        assert!(Config::parse(
            "[[partner]]\ndomain = \"a.example\"\nprotocol = \"xmpp\"\nrate = -1.0\n"
        )
        .is_err());
        assert!(Config::parse("[limits]\nsender_rate = 0.0\n").is_err());
    }

    #[test]
    fn a_listen_table_disables_what_it_omits() {
        let c = Config::parse("[listen]\nhttp = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(c.listeners().oscar, None);
        assert!(c.listeners().http.is_some());
    }

    #[test]
    fn the_effective_configuration_round_trips() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }
}
