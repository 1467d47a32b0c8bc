//! Addresses (`local@domain`) and their normalisation rules, which depend on who owns the domain.

use std::fmt;

/// Who owns a domain, and so which normalisation rules its local parts follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// The hub: names are case-folded and stripped of spaces, as AIM screen names are.
    Hub,
    /// An XMPP partner: bare JIDs, nodeprep as the `jid` crate applies it.
    Xmpp,
    /// A SIP partner: the user part of a SIP URI, compared as written (RFC 3261 §19.1.4).
    Sip,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("an address needs the form name@domain")]
    MissingDomain,
    #[error("the name part is empty or too long")]
    BadLocal,
    #[error("the domain is not a valid domain name")]
    BadDomain,
    #[error("the name contains characters that are not allowed")]
    BadCharacter,
}

/// A normalised `local@domain` address. Two addresses are equal iff they name the same user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: String,
}

/// Longest local part or domain accepted anywhere (RFC 7622 allows 1023 bytes; we are stricter).
const MAX_PART: usize = 255;

impl Address {
    /// Parses `local@domain` (a `sip:`/`sips:` scheme, a JID resource and URI parameters are
    /// stripped) and normalises the domain only. Use [`Address::normalize`] once the owner of the
    /// domain is known.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let text = text.trim();
        let text = text
            .strip_prefix("sips:")
            .or_else(|| text.strip_prefix("sip:"))
            .unwrap_or(text);
        // A JID resource or SIP URI parameters/headers never belong to the bare address.
        let text = text.split(['/', ';', '?']).next().unwrap_or("");
        let (local, domain) = text.rsplit_once('@').ok_or(AddressError::MissingDomain)?;
        let domain = normalize_domain(domain)?;
        if local.is_empty() || local.len() > MAX_PART {
            return Err(AddressError::BadLocal);
        }
        if local
            .chars()
            .any(|c| c.is_control() || c == '@' || c == '<' || c == '>' || c == '"')
        {
            return Err(AddressError::BadCharacter);
        }
        Ok(Address {
            local: local.to_string(),
            domain,
        })
    }

    /// Builds an address from parts already split, normalising both for `kind`.
    pub fn new(local: &str, domain: &str, kind: DomainKind) -> Result<Address, AddressError> {
        let domain = normalize_domain(domain)?;
        let local = normalize_local(local, kind, &domain)?;
        Ok(Address { local, domain })
    }

    /// Re-normalises the local part by the rules of the domain's owner.
    pub fn normalize(self, kind: DomainKind) -> Result<Address, AddressError> {
        let local = normalize_local(&self.local, kind, &self.domain)?;
        Ok(Address {
            local,
            domain: self.domain,
        })
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Lower-cases a domain, drops one trailing dot and checks it is a plausible DNS name or IP literal.
pub fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
    if domain.is_empty() || domain.len() > MAX_PART {
        return Err(AddressError::BadDomain);
    }
    if domain.starts_with('[') && domain.ends_with(']') {
        return domain[1..domain.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .map(|_| domain.clone())
            .map_err(|_| AddressError::BadDomain);
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(AddressError::BadDomain);
        }
    }
    Ok(domain)
}

/// Normalises a hub screen name: spaces removed, case-folded; letters, digits, `.`, `_`, `-` only.
pub fn normalize_hub_name(name: &str) -> Result<String, AddressError> {
    let name: String = name
        .chars()
        .filter(|c| *c != ' ')
        .flat_map(char::to_lowercase)
        .collect();
    if name.is_empty() || name.len() > 64 {
        return Err(AddressError::BadLocal);
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(AddressError::BadCharacter);
    }
    Ok(name)
}

fn normalize_local(local: &str, kind: DomainKind, domain: &str) -> Result<String, AddressError> {
    match kind {
        DomainKind::Hub => normalize_hub_name(local),
        DomainKind::Xmpp => {
            if local.contains(['@', '/']) {
                return Err(AddressError::BadCharacter);
            }
            let bare = jid::BareJid::new(&format!("{local}@{domain}"))?;
            bare.node()
                .map(|n| n.to_string())
                .ok_or(AddressError::BadLocal)
        }
        DomainKind::Sip => {
            if local.is_empty() || local.len() > MAX_PART {
                return Err(AddressError::BadLocal);
            }
            if local.chars().any(|c| {
                c.is_control() || c.is_whitespace() || matches!(c, '@' | '<' | '>' | '"' | ':')
            }) {
                return Err(AddressError::BadCharacter);
            }
            Ok(local.to_string())
        }
    }
}

impl From<jid::Error> for AddressError {
    fn from(_: jid::Error) -> Self {
        AddressError::BadCharacter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_fold_case_and_spaces() {
        let a = Address::new("Alice Smith", "Hub.Example.", DomainKind::Hub).unwrap();
        assert_eq!(a.to_string(), "alicesmith@hub.example");
        assert_eq!(
            a,
            Address::parse("alicesmith@hub.example")
                .unwrap()
                .normalize(DomainKind::Hub)
                .unwrap()
        );
    }

    #[test]
    fn hub_names_reject_odd_characters() {
        assert_eq!(normalize_hub_name("a<b"), Err(AddressError::BadCharacter));
        assert_eq!(normalize_hub_name("   "), Err(AddressError::BadLocal));
    }

    #[test]
    fn xmpp_nodes_follow_nodeprep() {
        let a = Address::parse("Juliet@Capulet.Example/balcony")
            .unwrap()
            .normalize(DomainKind::Xmpp)
            .unwrap();
        assert_eq!(a.to_string(), "juliet@capulet.example");
        assert!(Address::new("a b", "x.example", DomainKind::Xmpp).is_err());
    }

    #[test]
    fn sip_users_keep_case_and_lose_scheme_and_params() {
        let a = Address::parse("sip:Bob@Biloxi.Example;transport=tcp")
            .unwrap()
            .normalize(DomainKind::Sip)
            .unwrap();
        assert_eq!(a.to_string(), "Bob@biloxi.example");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        assert_eq!(Address::parse("nodomain"), Err(AddressError::MissingDomain));
        assert_eq!(Address::parse("@x.example"), Err(AddressError::BadLocal));
        assert_eq!(
            Address::parse("a@bad..domain"),
            Err(AddressError::BadDomain)
        );
        assert_eq!(Address::parse("a@-x.example"), Err(AddressError::BadDomain));
        assert_eq!(
            Address::parse("a\r\nb@x.example"),
            Err(AddressError::BadCharacter)
        );
        assert!(Address::parse(&format!("{}@x.example", "a".repeat(300))).is_err());
        assert!(Address::parse("a@[::1]").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_display_round_trips(s in "\\PC{0,80}") {
            if let Ok(a) = Address::parse(&s) {
                let again = Address::parse(&a.to_string()).unwrap();
                proptest::prop_assert_eq!(again, a);
            }
        }
    }
}
