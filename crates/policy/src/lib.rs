//! Pure decisions over canonical events: which domains may federate, how large a message may be,
//! how fast one connection may send, how failed logins slow down, what a message's content may
//! carry ([`inspect`]) and when a sender spreading one link or message is contained
//! ([`outbreak`]). No IO here: callers pass the current time where it matters.

pub mod inspect;
mod limits;
pub mod outbreak;

use entente_model::{ErrorCode, Event};
use std::collections::HashSet;

pub use inspect::{Action, Boundary, Inspector, Link, RuleError, Verdict};
pub use limits::{ConnectionLimiter, LoginThrottle, LoginVerdict};
pub use outbreak::{Alert, Fingerprint, Outbreak, OutbreakSettings};

/// Which remote domains may exchange traffic with the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FederationMode {
    /// Only configured partner domains.
    Allowlist,
    /// Any domain that authenticates.
    Open,
}

/// Where an event entered the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A signed-in hub session (browser or OSCAR).
    Hub,
    /// A federation edge, for a stream authenticated as `domain`.
    Partner { domain: String },
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub mode: FederationMode,
    /// Domains of configured partners.
    pub partner_domains: HashSet<String>,
    pub max_body_bytes: usize,
}

/// A refusal: the code the sender sees in its own protocol and the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {text}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub text: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            text: text.into(),
        }
    }
}

pub struct Policy {
    config: PolicyConfig,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Policy {
        Policy { config }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// May this remote domain federate with us at all?
    pub fn domain_allowed(&self, domain: &str) -> bool {
        match self.config.mode {
            FederationMode::Open => true,
            FederationMode::Allowlist => self.config.partner_domains.contains(domain),
        }
    }

    /// The pipeline every event passes before it is routed.
    pub fn check(&self, event: &Event, origin: &Origin) -> Result<(), Refusal> {
        if let Origin::Partner { domain } = origin {
            if !self.domain_allowed(domain) {
                return Err(Refusal::new(
                    ErrorCode::PolicyViolation,
                    format!("federation: domain {domain} is not an allowed partner"),
                ));
            }
            if event.from().domain() != domain {
                return Err(Refusal::new(
                    ErrorCode::NotAuthorized,
                    format!(
                        "sender domain {} was not authenticated on this link",
                        event.from().domain()
                    ),
                ));
            }
        }
        if let Event::Message(m) = event {
            if m.body.len() > self.config.max_body_bytes {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!(
                        "size: the message body exceeds {} bytes",
                        self.config.max_body_bytes
                    ),
                ));
            }
            if m.body.trim().is_empty() {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "the message body is empty",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_model::{Address, Message};

    fn policy(mode: FederationMode) -> Policy {
        Policy::new(PolicyConfig {
            mode,
            partner_domains: ["corp-a.example".to_string()].into_iter().collect(),
            max_body_bytes: 10,
        })
    }

    fn msg(from: &str, body: &str) -> Event {
        Event::Message(Message {
            id: "1".into(),
            from: Address::parse(from).unwrap(),
            to: Address::parse("bob@hub.example").unwrap(),
            body: body.into(),
            thread: None,
            ts: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn allowlist_refuses_unknown_domains() {
        let p = policy(FederationMode::Allowlist);
        let ok = Origin::Partner {
            domain: "corp-a.example".into(),
        };
        let bad = Origin::Partner {
            domain: "evil.example".into(),
        };
        assert!(p.check(&msg("a@corp-a.example", "hi"), &ok).is_ok());
        let r = p.check(&msg("a@evil.example", "hi"), &bad).unwrap_err();
        assert_eq!(r.code, ErrorCode::PolicyViolation);
        assert!(policy(FederationMode::Open)
            .check(&msg("a@evil.example", "hi"), &bad)
            .is_ok());
    }

    #[test]
    fn sender_domain_must_match_the_link() {
        let p = policy(FederationMode::Open);
        let r = p.check(
            &msg("a@other.example", "hi"),
            &Origin::Partner {
                domain: "corp-a.example".into(),
            },
        );
        assert_eq!(r.unwrap_err().code, ErrorCode::NotAuthorized);
    }

    #[test]
    fn size_and_empty_bodies() {
        let p = policy(FederationMode::Allowlist);
        assert_eq!(
            p.check(&msg("a@hub.example", "01234567890"), &Origin::Hub)
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
        assert_eq!(
            p.check(&msg("a@hub.example", "  "), &Origin::Hub)
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        assert!(p
            .check(&msg("a@hub.example", "0123456789"), &Origin::Hub)
            .is_ok());
    }
}
