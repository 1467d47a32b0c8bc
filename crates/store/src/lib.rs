//! Durable state of the hub behind one trait, [`Store`]: accounts (argon2 hashes), rosters with
//! their RFC 6121 subscription state, and the offline queue. SQLite is the embedded default;
//! PostgreSQL implements the same trait.

mod password;
mod sqlite;

use async_trait::async_trait;
use entente_model::{Address, Message};
use time::OffsetDateTime;

pub use password::{hash_password, verify_password};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("that name is taken")]
    AlreadyExists,
    #[error("no such account")]
    NoSuchAccount,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store cannot write now: {0}")]
    Unavailable(String),
    #[error("password hashing: {0}")]
    Hash(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The owner's side of a subscription (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubState {
    None,
    /// The owner sees the contact's presence.
    To,
    /// The contact sees the owner's presence.
    From,
    Both,
}

impl SubState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::None => "none",
            SubState::To => "to",
            SubState::From => "from",
            SubState::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<SubState> {
        Some(match s {
            "none" => SubState::None,
            "to" => SubState::To,
            "from" => SubState::From,
            "both" => SubState::Both,
            _ => return None,
        })
    }

    /// Does the owner see the contact's presence?
    pub fn has_to(self) -> bool {
        matches!(self, SubState::To | SubState::Both)
    }

    /// Does the contact see the owner's presence?
    pub fn has_from(self) -> bool {
        matches!(self, SubState::From | SubState::Both)
    }

    pub fn with_to(self, on: bool) -> SubState {
        SubState::from_bits(on, self.has_from())
    }

    pub fn with_from(self, on: bool) -> SubState {
        SubState::from_bits(self.has_to(), on)
    }

    fn from_bits(to: bool, from: bool) -> SubState {
        match (to, from) {
            (false, false) => SubState::None,
            (true, false) => SubState::To,
            (false, true) => SubState::From,
            (true, true) => SubState::Both,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    pub contact: Address,
    pub subscription: SubState,
    /// The owner asked to see the contact's presence; no answer yet.
    pub pending_out: bool,
    /// The contact asked to see the owner's presence; the owner has not answered.
    pub pending_in: bool,
}

impl RosterItem {
    pub fn new(contact: Address) -> RosterItem {
        RosterItem {
            contact,
            subscription: SubState::None,
            pending_out: false,
            pending_in: false,
        }
    }
}

/// A message accepted for a hub user and waiting in the offline queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Position in the queue; increases with every accepted message.
    pub seq: i64,
    pub to: Address,
    pub from: Address,
    pub id: String,
    pub body: String,
    pub thread: Option<String>,
    pub ts: OffsetDateTime,
}

impl QueuedMessage {
    /// A message not yet queued (`seq` 0).
    pub fn from_message(m: Message) -> QueuedMessage {
        QueuedMessage {
            seq: 0,
            to: m.to,
            from: m.from,
            id: m.id,
            body: m.body,
            thread: m.thread,
            ts: m.ts,
        }
    }

    /// The message again, without its queue position.
    pub fn into_message(self) -> Message {
        Message {
            id: self.id,
            from: self.from,
            to: self.to,
            body: self.body,
            thread: self.thread,
            ts: self.ts,
        }
    }
}

/// One item of an OSCAR server-stored buddy list; `attrs` is the encoded TLV block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbagRow {
    pub group_id: u16,
    pub item_id: u16,
    pub class: u16,
    pub name: String,
    pub attrs: Vec<u8>,
}

/// One record of the audit archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Milliseconds since the epoch.
    pub ts: i64,
    pub kind: String,
    pub sender: String,
    pub recipient: String,
    pub action: String,
    pub rule: Option<String>,
    pub body: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a hub account; `name` is an already normalised hub name.
    async fn create_account(&self, name: &str, password: &str) -> Result<()>;
    /// `Ok(None)` when there is no such account, else whether the password matches.
    async fn check_password(&self, name: &str, password: &str) -> Result<Option<bool>>;
    async fn set_password(&self, name: &str, password: &str) -> Result<()>;
    /// Removes an account with its roster and queued messages.
    async fn remove_account(&self, name: &str, hub_domain: &str) -> Result<()>;
    async fn account_exists(&self, name: &str) -> Result<bool>;
    async fn list_accounts(&self) -> Result<Vec<String>>;
    /// MD5(password), kept for OSCAR's strong-hash login; `None` without account or value.
    async fn oscar_md5(&self, name: &str) -> Result<Option<[u8; 16]>>;

    async fn feedbag(&self, owner: &Address) -> Result<Vec<FeedbagRow>>;
    /// Inserts or replaces items (keyed by group and item id).
    async fn feedbag_put(&self, owner: &Address, items: &[FeedbagRow]) -> Result<()>;
    async fn feedbag_delete(&self, owner: &Address, items: &[FeedbagRow]) -> Result<()>;
    async fn profile(&self, owner: &Address) -> Result<Option<String>>;
    async fn set_profile(&self, owner: &Address, profile: &str) -> Result<()>;

    async fn roster(&self, owner: &Address) -> Result<Vec<RosterItem>>;
    async fn roster_item(&self, owner: &Address, contact: &Address) -> Result<Option<RosterItem>>;
    async fn put_roster_item(&self, owner: &Address, item: &RosterItem) -> Result<()>;
    async fn remove_roster_item(&self, owner: &Address, contact: &Address) -> Result<()>;
    /// The owners who may see `contact`'s presence (their item has `to` or `both`).
    async fn watchers(&self, contact: &Address) -> Result<Vec<Address>>;

    /// Adds `blocked` to `owner`'s block list; false when it was there already.
    async fn block(&self, owner: &Address, blocked: &Address) -> Result<bool>;
    /// Removes `blocked` from `owner`'s block list; false when it was not there.
    async fn unblock(&self, owner: &Address, blocked: &Address) -> Result<bool>;
    /// Every block list entry, as (owner, blocked) pairs.
    async fn all_blocks(&self) -> Result<Vec<(Address, Address)>>;

    /// Commits a message to the recipient's queue and returns it with its sequence number.
    async fn enqueue(&self, msg: QueuedMessage) -> Result<QueuedMessage>;
    /// Queued messages for `to` with `seq > after`, oldest first.
    async fn queued(&self, to: &Address, after: i64, limit: u32) -> Result<Vec<QueuedMessage>>;
    /// Removes a delivered message from the queue.
    async fn dequeue(&self, to: &Address, seq: i64) -> Result<()>;
    /// Removes several delivered messages in one transaction.
    async fn dequeue_many(&self, to: &Address, seqs: &[i64]) -> Result<()>;
    /// Holds a message (outbreak containment) with the reason; returns its number.
    async fn hold(&self, msg: &QueuedMessage, reason: &str) -> Result<i64>;
    /// Held messages (`seq` is the hold number), optionally only `sender`'s, oldest first.
    async fn held(&self, sender: Option<&Address>, limit: u32) -> Result<Vec<QueuedMessage>>;
    /// Removes and returns every message held from `sender`, oldest first.
    async fn take_held(&self, sender: &Address) -> Result<Vec<QueuedMessage>>;
    /// Records an outbreak containment (`kind` "sender" or "fingerprint") until `until` (ms).
    async fn contain(&self, kind: &str, key: &str, until: i64) -> Result<()>;
    /// Lifts one; false when there was none.
    async fn lift(&self, kind: &str, key: &str) -> Result<bool>;
    /// Containments still in force at `now` (ms), as (kind, key, until); older ones are removed.
    async fn containments(&self, now: i64) -> Result<Vec<(String, String, i64)>>;
    async fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Entries at or after `since` (ms), optionally only from `sender`, oldest first.
    async fn audit_since(
        &self,
        since: i64,
        sender: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>>;
    /// Removes entries older than `before` (ms); returns how many.
    async fn audit_prune(&self, before: i64) -> Result<u64>;
    /// Number of messages waiting in all queues.
    async fn queue_depth(&self) -> Result<i64>;
}
