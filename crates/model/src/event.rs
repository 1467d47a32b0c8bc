//! Canonical events: what every protocol edge turns wire traffic into, and what the router routes.

use crate::{Address, Failure};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    Presence(Presence),
    Subscription(Subscription),
    Typing(Typing),
    Receipt(Receipt),
    /// A delivery failure reported back to the original sender.
    Failure(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Message,
    Presence,
    Subscription,
    Typing,
    Receipt,
    Failure,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Presence => "presence",
            EventKind::Subscription => "subscription",
            EventKind::Typing => "typing",
            EventKind::Receipt => "receipt",
            EventKind::Failure => "failure",
        }
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Message(_) => EventKind::Message,
            Event::Presence(_) => EventKind::Presence,
            Event::Subscription(_) => EventKind::Subscription,
            Event::Typing(_) => EventKind::Typing,
            Event::Receipt(_) => EventKind::Receipt,
            Event::Failure(_) => EventKind::Failure,
        }
    }

    pub fn from(&self) -> &Address {
        match self {
            Event::Message(m) => &m.from,
            Event::Presence(p) => &p.from,
            Event::Subscription(s) => &s.from,
            Event::Typing(t) => &t.from,
            Event::Receipt(r) => &r.from,
            Event::Failure(f) => &f.from,
        }
    }

    /// The sender and the recipient, to rewrite them (normalisation).
    pub fn addresses_mut(&mut self) -> (&mut Address, Option<&mut Address>) {
        match self {
            Event::Message(m) => (&mut m.from, Some(&mut m.to)),
            Event::Presence(p) => (&mut p.from, p.to.as_mut()),
            Event::Subscription(s) => (&mut s.from, Some(&mut s.to)),
            Event::Typing(t) => (&mut t.from, Some(&mut t.to)),
            Event::Receipt(r) => (&mut r.from, Some(&mut r.to)),
            Event::Failure(f) => (&mut f.from, Some(&mut f.to)),
        }
    }

    /// The recipient; `None` for a presence broadcast, which goes to every subscriber.
    pub fn to(&self) -> Option<&Address> {
        match self {
            Event::Message(m) => Some(&m.to),
            Event::Presence(p) => p.to.as_ref(),
            Event::Subscription(s) => Some(&s.to),
            Event::Typing(t) => Some(&t.to),
            Event::Receipt(r) => Some(&r.to),
            Event::Failure(f) => Some(&f.to),
        }
    }
}

/// An instant message. `id` is the originator's own id, echoed in receipts and failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub from: Address,
    pub to: Address,
    pub body: String,
    pub thread: Option<String>,
    pub ts: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Show {
    Available,
    Away,
    /// Away for a long time (XMPP `xa`, RPID `away` with a long idle).
    ExtendedAway,
    Dnd,
}

impl Show {
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Available => "available",
            Show::Away => "away",
            Show::ExtendedAway => "xa",
            Show::Dnd => "dnd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceKind {
    Available {
        show: Show,
        status: Option<String>,
    },
    Unavailable {
        status: Option<String>,
    },
    /// A request for the current presence of `to`.
    Probe,
}

/// Presence of `from`. With `to` set it is directed (or a probe); without, a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub from: Address,
    pub to: Option<Address>,
    pub kind: PresenceKind,
}

/// RFC 6121 subscription requests and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionKind {
    /// `from` asks to see the presence of `to`.
    Subscribe,
    /// `from` lets `to` see its presence.
    Subscribed,
    /// `from` no longer wants to see the presence of `to`.
    Unsubscribe,
    /// `from` denies or revokes `to`'s view of its presence.
    Unsubscribed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub from: Address,
    pub to: Address,
    pub kind: SubscriptionKind,
}

/// XEP-0085 chat states; RFC 3994 isComposing and OSCAR 04,14 map onto the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatState {
    Composing,
    Paused,
    Active,
    Inactive,
    Gone,
}

impl ChatState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatState::Composing => "composing",
            ChatState::Paused => "paused",
            ChatState::Active => "active",
            ChatState::Inactive => "inactive",
            ChatState::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Option<ChatState> {
        Some(match s {
            "composing" => ChatState::Composing,
            "paused" => ChatState::Paused,
            "active" => ChatState::Active,
            "inactive" => ChatState::Inactive,
            "gone" => ChatState::Gone,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typing {
    pub from: Address,
    pub to: Address,
    pub state: ChatState,
}

/// `from` confirms it received message `id` (XEP-0184, OSCAR host ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub from: Address,
    pub to: Address,
    pub id: String,
}
