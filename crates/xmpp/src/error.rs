//! Error conditions of this edge and their wire forms: stream errors (RFC 6120 §4.9) and the one
//! mapping between stanza error conditions (RFC 6120 §8.3) and canonical [`ErrorCode`]s.

use entente_model::ErrorCode;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::reader::ReadError;

/// Stream error conditions this edge sends or understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamCondition {
    BadFormat,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamCondition {
    const ALL: [StreamCondition; 17] = [
        StreamCondition::BadFormat,
        StreamCondition::ConnectionTimeout,
        StreamCondition::HostUnknown,
        StreamCondition::ImproperAddressing,
        StreamCondition::InternalServerError,
        StreamCondition::InvalidFrom,
        StreamCondition::InvalidNamespace,
        StreamCondition::NotAuthorized,
        StreamCondition::NotWellFormed,
        StreamCondition::PolicyViolation,
        StreamCondition::RemoteConnectionFailed,
        StreamCondition::ResourceConstraint,
        StreamCondition::RestrictedXml,
        StreamCondition::SystemShutdown,
        StreamCondition::UndefinedCondition,
        StreamCondition::UnsupportedStanzaType,
        StreamCondition::UnsupportedVersion,
    ];

    /// The element name inside `<stream:error>`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamCondition::BadFormat => "bad-format",
            StreamCondition::ConnectionTimeout => "connection-timeout",
            StreamCondition::HostUnknown => "host-unknown",
            StreamCondition::ImproperAddressing => "improper-addressing",
            StreamCondition::InternalServerError => "internal-server-error",
            StreamCondition::InvalidFrom => "invalid-from",
            StreamCondition::InvalidNamespace => "invalid-namespace",
            StreamCondition::NotAuthorized => "not-authorized",
            StreamCondition::NotWellFormed => "not-well-formed",
            StreamCondition::PolicyViolation => "policy-violation",
            StreamCondition::RemoteConnectionFailed => "remote-connection-failed",
            StreamCondition::ResourceConstraint => "resource-constraint",
            StreamCondition::RestrictedXml => "restricted-xml",
            StreamCondition::SystemShutdown => "system-shutdown",
            StreamCondition::UndefinedCondition => "undefined-condition",
            StreamCondition::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamCondition::UnsupportedVersion => "unsupported-version",
        }
    }

    /// Parses a condition element name; unknown names become `undefined-condition`.
    pub fn parse(name: &str) -> StreamCondition {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .unwrap_or(StreamCondition::UndefinedCondition)
    }
}

impl std::fmt::Display for StreamCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&ReadError> for StreamCondition {
    fn from(e: &ReadError) -> Self {
        match e {
            ReadError::NotWellFormed(_) | ReadError::InvalidUtf8 | ReadError::TextAtStreamLevel => {
                StreamCondition::NotWellFormed
            }
            ReadError::Restricted(_) => StreamCondition::RestrictedXml,
            ReadError::TooLarge(_)
            | ReadError::TooDeep(_)
            | ReadError::TooManyAttributes(_)
            | ReadError::TooManyElements(_)
            | ReadError::TooLong => StreamCondition::PolicyViolation,
            ReadError::InvalidNamespace => StreamCondition::InvalidNamespace,
        }
    }
}

/// The stanza error a canonical failure code is sent as.
pub fn condition_for_code(code: ErrorCode) -> (ErrorType, DefinedCondition) {
    match code {
        ErrorCode::NotAuthorized => (ErrorType::Auth, DefinedCondition::NotAuthorized),
        ErrorCode::BadRequest => (ErrorType::Modify, DefinedCondition::BadRequest),
        ErrorCode::ItemNotFound => (ErrorType::Cancel, DefinedCondition::ItemNotFound),
        ErrorCode::RecipientUnavailable => {
            (ErrorType::Wait, DefinedCondition::RecipientUnavailable)
        }
        ErrorCode::RemoteServerNotFound => {
            (ErrorType::Cancel, DefinedCondition::RemoteServerNotFound)
        }
        ErrorCode::RemoteServerTimeout => (ErrorType::Wait, DefinedCondition::RemoteServerTimeout),
        ErrorCode::PolicyViolation => (ErrorType::Modify, DefinedCondition::PolicyViolation),
        ErrorCode::RateLimited => (ErrorType::Wait, DefinedCondition::ResourceConstraint),
        ErrorCode::TooLarge => (ErrorType::Modify, DefinedCondition::NotAcceptable),
        ErrorCode::Internal => (ErrorType::Cancel, DefinedCondition::InternalServerError),
    }
}

/// The canonical failure code a received stanza error condition means.
pub fn code_for_condition(condition: &DefinedCondition) -> ErrorCode {
    use DefinedCondition as C;
    match condition {
        C::NotAuthorized | C::Forbidden | C::RegistrationRequired => ErrorCode::NotAuthorized,
        C::SubscriptionRequired => ErrorCode::NotAuthorized,
        C::BadRequest | C::JidMalformed | C::UnexpectedRequest | C::Conflict => {
            ErrorCode::BadRequest
        }
        C::ItemNotFound | C::Gone { .. } | C::Redirect { .. } => ErrorCode::ItemNotFound,
        C::RecipientUnavailable | C::ServiceUnavailable | C::FeatureNotImplemented => {
            ErrorCode::RecipientUnavailable
        }
        C::RemoteServerNotFound => ErrorCode::RemoteServerNotFound,
        C::RemoteServerTimeout => ErrorCode::RemoteServerTimeout,
        C::PolicyViolation | C::NotAllowed => ErrorCode::PolicyViolation,
        C::ResourceConstraint => ErrorCode::RateLimited,
        C::NotAcceptable => ErrorCode::TooLarge,
        C::InternalServerError | C::UndefinedCondition => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_the_round_trip() {
        for code in ErrorCode::ALL {
            let (_, condition) = condition_for_code(code);
            assert_eq!(code_for_condition(&condition), code, "{code}");
        }
    }

    #[test]
    fn stream_conditions_parse_back() {
        for c in StreamCondition::ALL {
            assert_eq!(StreamCondition::parse(c.as_str()), c);
        }
        assert_eq!(
            StreamCondition::parse("see-other-host"),
            StreamCondition::UndefinedCondition
        );
    }

    #[test]
    fn read_errors_map_to_the_documented_conditions() {
        assert_eq!(
            StreamCondition::from(&ReadError::Restricted("x".into())),
            StreamCondition::RestrictedXml
        );
        assert_eq!(
            StreamCondition::from(&ReadError::InvalidUtf8),
            StreamCondition::NotWellFormed
        );
        assert_eq!(
            StreamCondition::from(&ReadError::TooLarge(1)),
            StreamCondition::PolicyViolation
        );
    }
}
