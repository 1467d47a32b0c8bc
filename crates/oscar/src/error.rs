//! Errors of the wire layer and their one mapping onto OSCAR's SNAC error codes.

/// Why bytes could not be decoded. Incomplete input is never an error: decoders return `Ok(None)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a FLAP frame must start with 0x2A, found {0:#04x}")]
    BadMarker(u8),
    #[error("unknown FLAP channel {0}")]
    UnknownChannel(u8),
    #[error("FLAP payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("too many {0} for the bytes that remain or the limit")]
    TooMany(&'static str),
    #[error("unexpected bytes after {0}")]
    Trailing(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// SNAC error codes (the `u16` of an `xx,01` error SNAC), as the OSCAR documentation lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SnacErrorCode {
    InvalidHeader = 0x01,
    RateToHost = 0x02,
    RateToClient = 0x03,
    RecipientNotLoggedIn = 0x04,
    ServiceUnavailable = 0x05,
    ServiceNotDefined = 0x06,
    ObsoleteSnac = 0x07,
    NotSupportedByHost = 0x08,
    NotSupportedByClient = 0x09,
    RefusedByClient = 0x0A,
    ReplyTooBig = 0x0B,
    ResponsesLost = 0x0C,
    RequestDenied = 0x0D,
    BadSnacFormat = 0x0E,
    InsufficientRights = 0x0F,
    InLocalPermitDeny = 0x10,
    SenderTooEvil = 0x11,
    ReceiverTooEvil = 0x12,
    UserTemporarilyUnavailable = 0x13,
    NoMatch = 0x14,
    ListOverflow = 0x15,
    RequestAmbiguous = 0x16,
    QueueFull = 0x17,
}

impl SnacErrorCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl From<&DecodeError> for SnacErrorCode {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::TooMany(_) | DecodeError::FrameTooLarge { .. } => {
                SnacErrorCode::ReplyTooBig
            }
            _ => SnacErrorCode::BadSnacFormat,
        }
    }
}

impl From<entente_model::ErrorCode> for SnacErrorCode {
    fn from(code: entente_model::ErrorCode) -> Self {
        use entente_model::ErrorCode as E;
        match code {
            E::NotAuthorized => SnacErrorCode::InLocalPermitDeny,
            E::BadRequest => SnacErrorCode::BadSnacFormat,
            E::ItemNotFound | E::RecipientUnavailable => SnacErrorCode::RecipientNotLoggedIn,
            E::RemoteServerNotFound | E::RemoteServerTimeout => {
                SnacErrorCode::UserTemporarilyUnavailable
            }
            E::PolicyViolation => SnacErrorCode::RequestDenied,
            E::RateLimited => SnacErrorCode::RateToHost,
            E::TooLarge => SnacErrorCode::ReplyTooBig,
            E::Internal => SnacErrorCode::ServiceUnavailable,
        }
    }
}

/// BUCP / sign-on error codes carried in TLV 0x08 of a login reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum LoginErrorCode {
    /// "Username does not exist" in libpurple.
    UnknownName = 0x01,
    ServiceUnavailable = 0x02,
    /// "Incorrect password" in libpurple.
    WrongPassword = 0x05,
    InvalidAccount = 0x07,
    Suspended = 0x11,
    /// "You have been connecting and disconnecting too frequently".
    RateLimited = 0x18,
    /// "The client version you are using is too old".
    ClientTooOld = 0x1C,
}

impl LoginErrorCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}
