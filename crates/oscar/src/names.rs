//! Screen names and addresses: a plain screen name is a hub user (`name@HUB`, normalised like hub
//! names); an email-style name (`alice@corp-a.example`) is that federated address.

use entente_model::{Address, AddressError, DomainKind};

/// The address a screen name stands for.
pub fn screen_name_to_address(
    screen_name: &str,
    hub_domain: &str,
) -> Result<Address, AddressError> {
    let name = screen_name.trim();
    if name.contains('@') {
        let addr = Address::parse(name)?;
        if addr.domain() == hub_domain.trim_end_matches('.').to_lowercase() {
            return addr.normalize(DomainKind::Hub);
        }
        // The owner of a foreign domain (XMPP or SIP) normalises further; the router knows it.
        Ok(addr)
    } else {
        Address::new(name, hub_domain, DomainKind::Hub)
    }
}

/// The screen name an OSCAR client sees for `addr`: the bare name for hub users, the whole
/// address for everyone else.
pub fn address_to_screen_name(addr: &Address, hub_domain: &str) -> String {
    if addr.domain() == hub_domain {
        addr.local().to_string()
    } else {
        addr.to_string()
    }
}

/// Compares screen names as OSCAR does: case-folded, spaces ignored.
pub fn normalize_screen_name(name: &str) -> String {
    name.chars()
        .filter(|c| *c != ' ')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_hub_users() {
        let a = screen_name_to_address("Alice Smith", "hub.example").unwrap();
        assert_eq!(a.to_string(), "alicesmith@hub.example");
        assert_eq!(address_to_screen_name(&a, "hub.example"), "alicesmith");
    }

    #[test]
    fn email_style_names_are_federated_addresses() {
        let a = screen_name_to_address("alice@Corp-A.example", "hub.example").unwrap();
        assert_eq!(a.to_string(), "alice@corp-a.example");
        assert_eq!(
            address_to_screen_name(&a, "hub.example"),
            "alice@corp-a.example"
        );
        let h = screen_name_to_address("Bob Jones@hub.example", "hub.example").unwrap();
        assert_eq!(h.to_string(), "bobjones@hub.example");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(screen_name_to_address("", "hub.example").is_err());
        assert!(screen_name_to_address("a<b", "hub.example").is_err());
        assert!(screen_name_to_address("x@", "hub.example").is_err());
    }
}
