//! The canonical language of Entente: addresses, the events every protocol edge translates to and
//! from, and the one set of error codes every protocol maps its own errors onto.
//!
//! Nothing here knows about sockets, protocols or storage; every other crate depends on this one.

mod address;
mod error;
mod event;

pub use address::{Address, AddressError, DomainKind};

/// Normalisation rules, for callers that hold a bare name or domain.
pub mod address_rules {
    pub use crate::address::{normalize_domain, normalize_hub_name};
}
pub use error::{ErrorCode, Failure};
pub use event::{
    ChatState, Event, EventKind, Message, Presence, PresenceKind, Receipt, Show, Subscription,
    SubscriptionKind, Typing,
};

/// Largest message body, in bytes, that any edge accepts unless configured lower.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
