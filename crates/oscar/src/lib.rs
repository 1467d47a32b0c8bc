//! OSCAR, the AIM/ICQ protocol, for Entente: the FLAP/SNAC/TLV codec, the BUCP login machine and
//! the BOS session machine that turns a client's traffic into canonical events and back.
//!
//! **Sans-IO**: this crate has no sockets, no tokio, no clock and no randomness of its own. Bytes
//! and the current time go in (`handle_*`), bytes, events, requests and the next deadline come out
//! (`poll_*`). The tokio driver only moves bytes and timers.
//!
//! # Layers
//! - [`flap`]: the 6-byte frame header (0x2A, channel, sequence, length), per-direction sequence
//!   numbers, inbound payloads capped at [`flap::DEFAULT_MAX_INBOUND_PAYLOAD`] (8 KiB).
//! - [`snac`]: the SNAC header and the optional block of flag 0x8000; [`tlv`]: TLV lists and
//!   blocks. Every length is checked against the bytes that remain, every count against the
//!   bytes it would need and a fixed limit, before anything is allocated. An incomplete frame is
//!   `Ok(None)`, never an error.
//! - [`family`]: one module per food group (OSERVICE, LOCATE, BUDDY, ICBM, PD, FEEDBAG, BUCP),
//!   typed bodies implementing [`SnacBody`].
//! - [`login::Login`]: the authorizer connection. [`session::Session`]: the BOS connection.
//!
//! # Driving a machine
//! Both machines are driven the same way:
//! 1. `new(config, now, …)` — the server's FLAP hello is already queued.
//! 2. After every read from the socket: `handle_input(bytes, now)`.
//! 3. Then, until each returns `None`: `poll_transmit()` (write every frame, in order) and
//!    `poll_event()` (act on each output). Outputs that are requests are answered with the
//!    machine's `answer_*` method — at once or later, from any task; after answering, drain
//!    `poll_transmit`/`poll_event` again.
//! 4. Arm a timer for `poll_timeout()`; when it fires call `handle_timeout(now)` and drain again.
//! 5. When an output is `Closed(reason)`, write what `poll_transmit` still holds, then close the
//!    socket. A closed machine ignores further input.
//!
//! For a [`Session`], canonical events addressed to its user come in through
//! [`Session::handle_event`], which says whether they were delivered; drain `poll_transmit` after.
//!
//! # Login and the account store
//! The store stays outside the machine. A BUCP login (17,06 → 17,07 key → 17,02) carries one of
//! two MD5 hashes, and the old channel-1 login carries the password XOR-"roasted":
//! - **strong**: MD5(key ‖ MD5(password) ‖ "AOL Instant Messenger (SM)"). The machine emits
//!   [`AccountRequest::Md5Password`]; the driver answers with `MD5(password)`. The hub stores
//!   argon2 hashes for its other clients, so it must also keep `MD5(password)` per account for
//!   OSCAR clients. That value is a password equivalent for this protocol (whoever holds it can
//!   sign on as the user over OSCAR), though not the password itself: keep it as protected as the
//!   argon2 hash, and let operators disable OSCAR logins for accounts that do not need them.
//! - **weak**: MD5(key ‖ password ‖ "AOL Instant Messenger (SM)") can only be checked with the
//!   password itself. The machine emits [`AccountRequest::Password`]; a store that keeps only
//!   hashes answers with the MD5 credential and the client is told to upgrade (code 0x1C).
//! - **roasted**: the machine recovers the password and emits [`AccountRequest::VerifyPassword`];
//!   the driver checks it against argon2 and answers [`Credential::Verified`] or a refusal.
//!
//! Success hands out a random cookie ([`LoginOutput::Authenticated`]) that the driver keeps for
//! the BOS connection, where the client presents it on channel 1 and the machine asks the driver
//! to redeem it ([`SessionRequest::RedeemCookie`]). Failures carry code 1 (unknown name),
//! 5 (wrong password) or 0x18 (too many attempts, on one connection or as the driver reports).
//!
//! # Addresses
//! A plain screen name is a hub user (`name@HUB`, case-folded, spaces removed); an email-style
//! screen name such as `alice@corp-a.example` is that federated address ([`names`]).
//! Message HTML from clients is reduced to plain text, and plain text is escaped on the way out
//! ([`html`]).

mod error;
pub mod family;
pub mod flap;
pub mod html;
pub mod login;
pub mod names;
pub mod rate;
pub mod session;
pub mod snac;
pub mod tlv;
pub mod userinfo;
pub mod wire;

pub use error::{DecodeError, LoginErrorCode, SnacErrorCode};
pub use flap::{Channel, Flap, FlapReader, FlapWriter, SignOnFrame};
pub use login::{
    AccountAnswer, AccountRequest, CloseReason, Credential, Login, LoginConfig, LoginOutput,
};
pub use session::{
    Account, Delivery, FeedbagOp, Session, SessionConfig, SessionOutput, SessionRequest,
    UserDetails,
};
pub use snac::{Snac, SnacBody, SnacError, SnacHeader};
pub use tlv::{Tlv, TlvList};
pub use userinfo::UserInfo;
