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
//! 2. After every read from the socket: `handle_input(bytes, now)`. Reads of bounded size (say
//!    16 KiB) keep memory bounded: the machine holds at most them plus one partial frame.
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
//! To end a session from the host side (same account signed on elsewhere, shutdown) call
//! [`Session::sign_off`]; the client is told why on channel 4.
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
//! # What the BOS machine answers itself, and what it translates
//! Answered from the machine's own state: 01,03/17/18/06/07/0E/0F, 02,02/03, 03,02/03, 04,04/05,
//! 04,10 (→ 04,17), 09,02/03, 13,02/03/04/05/06/0F, 13,08/09/0A (→ 13,0E, applied to the feedbag the
//! driver loaded with the cookie, then [`SessionRequest::StoreFeedbag`]). 01,04 (other services)
//! gets an error. SNACs are counted against their rate class: past the alert level the client gets
//! 01,0A warnings, past the limit its SNACs are dropped, past the disconnect level it is signed off.
//!
//! | client sends | becomes |
//! |---|---|
//! | 01,02 client ready | [`SessionOutput::SignedOn`] and a presence broadcast |
//! | 01,1E status, 02,04 away message | presence broadcast (when it changed) |
//! | 02,04 profile | [`SessionRequest::StoreProfile`] |
//! | 02,05 / 02,15 user info | [`SessionRequest::UserInfo`] → 02,06 or 02,01 |
//! | 04,06 channel 1 | `Message` (id = hex cookie, body = HTML reduced to text); 04,0C if TLV 0x03 |
//! | 04,14 | `Typing` (begun → composing, typed → paused, finished → active) |
//! | 13,08 / 13,0A of a buddy item | `Subscription` subscribe / unsubscribe |
//! | 13,07 activate, 03,04 | a presence probe per buddy |
//! | 13,18 / 13,1A | `Subscription` subscribe / subscribed or unsubscribed |
//! | channel 4, timeout, error | unavailable presence broadcast, then `Closed` |
//!
//! | delivered event | client receives |
//! |---|---|
//! | `Message` | 04,07 with the text HTML-escaped (a `Receipt` goes back when configured) |
//! | `Typing` | 04,14 |
//! | `Presence` available / unavailable | 03,0B (away flag, status) / 03,0C |
//! | `Presence` probe | this user's presence, directed back |
//! | `Subscription` subscribe / subscribed / unsubscribed | 13,19 / 13,1B accepted / 13,1B denied |
//! | `Failure` | 04,01 answering the request of the failed message |
//! | `Receipt` | nothing: OSCAR has no per-message receipts beyond the host ack |
//!
//! The permit/deny items of the feedbag (classes 2, 3 and the PD mode in class 4) are enforced
//! here: events from a blocked sender are refused or dropped. Idle time (01,11) appears in the
//! user's own info only; canonical presence has no idle.
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
    SignOffReason,
};
pub use session::{
    Account, Delivery, FeedbagOp, Session, SessionConfig, SessionOutput, SessionRequest,
    UserDetails,
};
pub use snac::{Snac, SnacBody, SnacError, SnacHeader};
pub use tlv::{Tlv, TlvList};
pub use userinfo::UserInfo;
