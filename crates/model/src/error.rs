//! The one set of error codes. Each protocol edge maps these to and from its own wire form in one place.

use crate::Address;

/// Failure codes, named as the hub client protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotAuthorized,
    BadRequest,
    ItemNotFound,
    RecipientUnavailable,
    RemoteServerNotFound,
    RemoteServerTimeout,
    PolicyViolation,
    RateLimited,
    TooLarge,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::NotAuthorized,
        ErrorCode::BadRequest,
        ErrorCode::ItemNotFound,
        ErrorCode::RecipientUnavailable,
        ErrorCode::RemoteServerNotFound,
        ErrorCode::RemoteServerTimeout,
        ErrorCode::PolicyViolation,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotAuthorized => "not_authorized",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::ItemNotFound => "item_not_found",
            ErrorCode::RecipientUnavailable => "recipient_unavailable",
            ErrorCode::RemoteServerNotFound => "remote_server_not_found",
            ErrorCode::RemoteServerTimeout => "remote_server_timeout",
            ErrorCode::PolicyViolation => "policy_violation",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery failure travelling back to the sender of the event it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The address that could not be reached (or the gateway's view of it).
    pub from: Address,
    /// The original sender, who is told.
    pub to: Address,
    /// The id of the original message, as its sender gave it.
    pub id: String,
    pub code: ErrorCode,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IntoDeserializer;

    #[test]
    fn serde_names_agree_with_as_str() {
        for code in ErrorCode::ALL {
            let de = IntoDeserializer::<serde::de::value::Error>::into_deserializer(code.as_str());
            let back: ErrorCode = serde::Deserialize::deserialize(de).unwrap();
            assert_eq!(back, code);
        }
    }
}
