//! Rules for account names and passwords, shared by registration and the `user` commands.

use entente_model::address_rules::normalize_hub_name;

/// Normalises a requested hub name; the error is a sentence for the user.
pub fn validate_name(name: &str) -> Result<String, String> {
    let name = name.split('@').next().unwrap_or_default();
    let normalized = normalize_hub_name(name).map_err(|e| format!("invalid name: {e}"))?;
    if normalized.chars().count() < 2 || !normalized.starts_with(|c: char| c.is_alphabetic()) {
        return Err("invalid name: use at least two characters, starting with a letter".into());
    }
    Ok(normalized)
}

pub fn validate_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if !(6..=256).contains(&n) {
        return Err("passwords have 6 to 256 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_and_are_checked() {
        assert_eq!(validate_name("Alice Smith").unwrap(), "alicesmith");
        assert!(validate_name("a").is_err());
        assert!(validate_name("9lives").is_err());
        assert!(validate_name("bad<name").is_err());
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
    }
}
