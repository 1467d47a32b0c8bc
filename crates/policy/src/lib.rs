//! Pure decisions over canonical events: which domains may federate and what traffic each
//! partner may exchange, how large a message may be, how fast a connection, a sender and a
//! partner domain may send, how failed logins slow down, what a message's content may carry
//! ([`inspect`]) and when a sender spreading one link or message is contained ([`outbreak`]).
//! No IO here: callers pass the current time where it matters.

pub mod inspect;
mod limits;
pub mod outbreak;

use entente_model::{ErrorCode, Event};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use inspect::{Action, Boundary, Inspector, Link, RuleError, Verdict};
pub use limits::{ConnectionLimiter, KeyedLimiter, LoginThrottle, LoginVerdict, Rate};
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

/// The kinds of traffic a partner may exchange with the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub messages: bool,
    pub typing: bool,
    pub presence: bool,
    pub subscriptions: bool,
}

impl Traffic {
    pub const ALL: Traffic = Traffic {
        messages: true,
        typing: true,
        presence: true,
        subscriptions: true,
    };
    pub const NAMES: [&'static str; 4] = ["messages", "typing", "presence", "subscriptions"];

    /// From configuration names (`messages`, `typing`, `presence`, `subscriptions`).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Traffic, String> {
        let mut t = Traffic {
            messages: false,
            typing: false,
            presence: false,
            subscriptions: false,
        };
        for name in names {
            match name.as_ref() {
                "messages" => t.messages = true,
                "typing" => t.typing = true,
                "presence" => t.presence = true,
                "subscriptions" => t.subscriptions = true,
                other => {
                    return Err(format!(
                        "unknown traffic kind {other:?} (one of {})",
                        Traffic::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(t)
    }

    /// The kind an event belongs to, `None` for what always passes (receipts and failures
    /// answer traffic that was allowed).
    pub fn kind_of(event: &Event) -> Option<&'static str> {
        match event {
            Event::Message(_) => Some("messages"),
            Event::Typing(_) => Some("typing"),
            Event::Presence(_) => Some("presence"),
            Event::Subscription(_) => Some("subscriptions"),
            Event::Receipt(_) | Event::Failure(_) => None,
        }
    }

    pub fn allows(&self, event: &Event) -> bool {
        match Traffic::kind_of(event) {
            Some("messages") => self.messages,
            Some("typing") => self.typing,
            Some("presence") => self.presence,
            Some("subscriptions") => self.subscriptions,
            _ => true,
        }
    }
}

/// What one partner domain may do.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerPolicy {
    pub traffic: Traffic,
    /// May senders with no subscription either way with a hub user message (or type to) them?
    pub strangers: bool,
    /// Overrides the hub-wide message size limit for this partner, both ways.
    pub max_body_bytes: Option<usize>,
    /// Overrides the default rate of events from this partner domain.
    pub rate: Option<Rate>,
    /// The partner must authenticate with a certificate (dialback is not enough).
    pub certificate_required: bool,
}

impl Default for PartnerPolicy {
    fn default() -> Self {
        PartnerPolicy {
            traffic: Traffic::ALL,
            strangers: true,
            max_body_bytes: None,
            rate: None,
            certificate_required: false,
        }
    }
}

/// Rate limits applied to every event the router sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Messages from one sender (hub user or federated user).
    pub sender: Rate,
    /// Presence, subscription and typing events from one sender.
    pub signals: Rate,
    /// Events from one partner domain, unless its policy says otherwise.
    pub partner: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            sender: Rate {
                per_second: 10.0,
                burst: 40,
            },
            signals: Rate {
                per_second: 5.0,
                burst: 50,
            },
            partner: Rate {
                per_second: 500.0,
                burst: 1000,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub mode: FederationMode,
    /// Configured partners by lower-case domain.
    pub partners: HashMap<String, PartnerPolicy>,
    pub max_body_bytes: usize,
    pub rates: Rates,
}

/// A refusal: the code the sender sees in its own protocol and the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {text}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub text: String,
    /// The message is not delivered but kept for an administrator (quarantine).
    pub held: bool,
}

impl Refusal {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            text: text.into(),
            held: false,
        }
    }

    /// A refusal whose message is held for an administrator to release or discard.
    pub fn held(code: ErrorCode, text: impl Into<String>) -> Refusal {
        Refusal {
            held: true,
            ..Refusal::new(code, text)
        }
    }
}

/// A configuration with the rate limiters it implies; replaced whole on reload.
struct Active {
    config: PolicyConfig,
    senders: KeyedLimiter,
    signals: KeyedLimiter,
    /// Partner domains by lower-case name (configured rate or the default).
    domains: KeyedLimiter,
    /// Partners with a rate of their own.
    own_rates: HashMap<String, KeyedLimiter>,
}

impl Active {
    fn domain_allowed(&self, domain: &str) -> bool {
        match self.config.mode {
            FederationMode::Open => true,
            FederationMode::Allowlist => self.config.partners.contains_key(domain),
        }
    }

    fn partner(&self, domain: &str) -> PartnerPolicy {
        self.config
            .partners
            .get(domain)
            .cloned()
            .unwrap_or_default()
    }

    fn new(config: PolicyConfig) -> Active {
        let own_rates = config
            .partners
            .iter()
            .filter_map(|(d, p)| p.rate.map(|r| (d.clone(), KeyedLimiter::new(r))))
            .collect();
        Active {
            senders: KeyedLimiter::new(config.rates.sender),
            signals: KeyedLimiter::new(config.rates.signals),
            domains: KeyedLimiter::new(config.rates.partner),
            own_rates,
            config,
        }
    }
}

/// The policy in force. [`Policy::reload`] swaps in a new configuration while events flow;
/// rate limiters start afresh then.
pub struct Policy {
    active: RwLock<Arc<Active>>,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Policy {
        Policy {
            active: RwLock::new(Arc::new(Active::new(config))),
        }
    }

    fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the configuration.
    pub fn reload(&self, config: PolicyConfig) {
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Active::new(config));
    }

    pub fn config(&self) -> PolicyConfig {
        self.active().config.clone()
    }

    /// May this remote domain federate with us at all?
    pub fn domain_allowed(&self, domain: &str) -> bool {
        self.active().domain_allowed(domain)
    }

    /// The policy of a partner domain (the default one for unlisted domains in open federation).
    pub fn partner(&self, domain: &str) -> PartnerPolicy {
        self.active().partner(domain)
    }

    /// What a partner may receive from the hub: the traffic its policy lets through, within
    /// its size limit. `domain` is the destination's domain.
    pub fn check_outbound(&self, event: &Event, domain: &str) -> Result<(), Refusal> {
        let partner = self.partner(domain);
        if !partner.traffic.allows(event) {
            return Err(Refusal::new(
                ErrorCode::PolicyViolation,
                format!(
                    "partner policy: {domain} does not exchange {}",
                    Traffic::kind_of(event).unwrap_or("this")
                ),
            ));
        }
        if let (Event::Message(m), Some(max)) = (event, partner.max_body_bytes) {
            if m.body.len() > max {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("size: messages to {domain} are limited to {max} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// Rate limits: the partner domain's (for what a partner sends), then the sender's.
    /// Receipts and failures are not limited.
    pub fn check_rate(&self, event: &Event, origin: &Origin) -> Result<(), Refusal> {
        let Some(kind) = Traffic::kind_of(event) else {
            return Ok(());
        };
        let active = self.active();
        if let Origin::Partner { domain } = origin {
            let allowed = match active.own_rates.get(domain) {
                Some(own) => own.allow(domain),
                None => active.domains.allow(domain),
            };
            if !allowed {
                return Err(Refusal::new(
                    ErrorCode::RateLimited,
                    format!("rate limit: {domain} is sending too fast; slow down"),
                ));
            }
        }
        let sender = event.from().to_string();
        let (bucket, what) = if kind == "messages" {
            (&active.senders, "messages")
        } else {
            (&active.signals, "presence, subscription or typing events")
        };
        if !bucket.allow(&sender) {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("rate limit: too many {what} from {sender}; slow down"),
            ));
        }
        Ok(())
    }

    /// The pipeline every event passes before it is routed.
    pub fn check(&self, event: &Event, origin: &Origin) -> Result<(), Refusal> {
        let active = self.active();
        let mut max_body = active.config.max_body_bytes;
        if let Origin::Partner { domain } = origin {
            if !active.domain_allowed(domain) {
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
            let partner = active.partner(domain);
            if !partner.traffic.allows(event) {
                return Err(Refusal::new(
                    ErrorCode::PolicyViolation,
                    format!(
                        "partner policy: {domain} may not send {}",
                        Traffic::kind_of(event).unwrap_or("this")
                    ),
                ));
            }
            if let Some(max) = partner.max_body_bytes {
                max_body = max_body.min(max);
            }
        }
        if let Event::Message(m) = event {
            if m.body.len() > max_body {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("size: the message body exceeds {max_body} bytes"),
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
            partners: [("corp-a.example".to_string(), PartnerPolicy::default())]
                .into_iter()
                .collect(),
            max_body_bytes: 10,
            rates: Rates::default(),
        })
    }

    fn corp_a() -> Origin {
        Origin::Partner {
            domain: "corp-a.example".into(),
        }
    }

    fn presence(from: &str) -> Event {
        Event::Presence(entente_model::Presence {
            from: Address::parse(from).unwrap(),
            to: Some(Address::parse("bob@hub.example").unwrap()),
            kind: entente_model::PresenceKind::Unavailable { status: None },
        })
    }

    #[test]
    fn partner_policy_limits_traffic_kinds_and_size_both_ways() {
        let p = policy(FederationMode::Allowlist);
        let mut config = p.config();
        config.partners.insert(
            "corp-a.example".into(),
            PartnerPolicy {
                traffic: Traffic::from_names(&["messages"]).unwrap(),
                max_body_bytes: Some(4),
                ..PartnerPolicy::default()
            },
        );
        p.reload(config);
        let r = p
            .check(&presence("a@corp-a.example"), &corp_a())
            .unwrap_err();
        assert_eq!(r.code, ErrorCode::PolicyViolation);
        assert!(r.text.contains("presence"), "{r}");
        assert!(p.check(&msg("a@corp-a.example", "abcd"), &corp_a()).is_ok());
        assert_eq!(
            p.check(&msg("a@corp-a.example", "abcde"), &corp_a())
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
        assert!(p
            .check_outbound(&presence("b@hub.example"), "corp-a.example")
            .is_err());
        assert!(p
            .check_outbound(&msg("b@hub.example", "abcde"), "corp-a.example")
            .is_err());
        assert!(p
            .check_outbound(&msg("b@hub.example", "abcd"), "corp-a.example")
            .is_ok());
        assert!(Traffic::from_names(&["messages", "faxes"]).is_err());
    }

    #[test]
    fn rates_per_sender_per_kind_and_per_partner() {
        let p = Policy::new(PolicyConfig {
            mode: FederationMode::Open,
            partners: HashMap::new(),
            max_body_bytes: 100,
            rates: Rates {
                sender: Rate {
                    per_second: 0.01,
                    burst: 3,
                },
                signals: Rate {
                    per_second: 0.01,
                    burst: 2,
                },
                partner: Rate {
                    per_second: 0.01,
                    burst: 7,
                },
            },
        });
        let hub = Origin::Hub;
        let ok = |e: &Event, o: &Origin| p.check_rate(e, o).is_ok();
        assert_eq!(
            (0..5)
                .filter(|_| ok(&msg("a@hub.example", "x"), &hub))
                .count(),
            3
        );
        // Another sender has its own bucket; presence has a bucket apart from messages.
        assert!(ok(&msg("c@hub.example", "x"), &hub));
        assert_eq!(
            (0..5)
                .filter(|_| ok(&presence("a@hub.example"), &hub))
                .count(),
            2
        );
        let e = p.check_rate(&msg("a@hub.example", "x"), &hub).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        // A partner domain's senders share the domain's bucket.
        let remote = Origin::Partner {
            domain: "corp-a.example".into(),
        };
        let passed = (0..20)
            .filter(|i| ok(&msg(&format!("u{i}@corp-a.example"), "x"), &remote))
            .count();
        assert_eq!(passed, 7);
        let e = p
            .check_rate(&msg("new@corp-a.example", "x"), &remote)
            .unwrap_err();
        assert!(e.text.contains("corp-a.example"), "{e}");
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
