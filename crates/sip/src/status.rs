//! The one place where canonical [`ErrorCode`]s and SIP status codes meet, both ways.

use entente_model::ErrorCode;

/// Warn-code used on 403 responses that a policy rule caused (RFC 3261 §20.43: 399 is
/// "miscellaneous warning", free text for a human).
pub const POLICY_WARN_CODE: u16 = 399;

/// The status and reason phrase we answer with for an error.
pub fn status_for(code: ErrorCode) -> (u16, &'static str) {
    match code {
        ErrorCode::BadRequest => (400, "Bad Request"),
        ErrorCode::NotAuthorized => (603, "Decline"),
        ErrorCode::PolicyViolation => (403, "Forbidden"),
        ErrorCode::ItemNotFound => (404, "Not Found"),
        ErrorCode::RemoteServerTimeout => (408, "Request Timeout"),
        ErrorCode::TooLarge => (413, "Request Entity Too Large"),
        ErrorCode::RecipientUnavailable => (480, "Temporarily Unavailable"),
        ErrorCode::Internal => (500, "Server Internal Error"),
        ErrorCode::RemoteServerNotFound => (502, "Bad Gateway"),
        ErrorCode::RateLimited => (503, "Service Unavailable"),
    }
}

/// The error a final non-2xx status from a peer means. `None` for 1xx/2xx/3xx-free successes.
pub fn error_for(status: u16) -> Option<ErrorCode> {
    Some(match status {
        100..=299 => return None,
        400 | 415 | 416 | 420 | 488 | 489 => ErrorCode::BadRequest,
        401 | 407 | 603 => ErrorCode::NotAuthorized,
        403 => ErrorCode::PolicyViolation,
        404 | 410 | 484 | 604 => ErrorCode::ItemNotFound,
        408 | 504 => ErrorCode::RemoteServerTimeout,
        413 | 513 => ErrorCode::TooLarge,
        429 | 503 => ErrorCode::RateLimited,
        480 | 486 | 600 => ErrorCode::RecipientUnavailable,
        502 => ErrorCode::RemoteServerNotFound,
        300..=399 => ErrorCode::ItemNotFound,
        400..=499 => ErrorCode::BadRequest,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::RecipientUnavailable,
    })
}

/// Reason phrase for statuses this crate sends on its own.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_survives_a_round_trip() {
        for code in ErrorCode::ALL {
            let (status, _) = status_for(code);
            assert_eq!(error_for(status), Some(code), "{code}");
        }
    }

    #[test]
    fn the_documented_statuses() {
        assert_eq!(status_for(ErrorCode::ItemNotFound).0, 404);
        assert_eq!(status_for(ErrorCode::PolicyViolation).0, 403);
        assert_eq!(status_for(ErrorCode::TooLarge).0, 413);
        assert_eq!(status_for(ErrorCode::RecipientUnavailable).0, 480);
        assert_eq!(status_for(ErrorCode::RemoteServerTimeout).0, 408);
        assert_eq!(error_for(429), Some(ErrorCode::RateLimited));
        assert_eq!(error_for(503), Some(ErrorCode::RateLimited));
        assert_eq!(error_for(200), None);
        assert_eq!(error_for(202), None);
        assert_eq!(error_for(486), Some(ErrorCode::RecipientUnavailable));
        assert_eq!(error_for(599), Some(ErrorCode::Internal));
        assert_eq!(error_for(699), Some(ErrorCode::RecipientUnavailable));
    }
}
