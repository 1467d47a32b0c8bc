//! The XMPP server-to-server edge of Entente: an incremental XML stream reader with limits,
//! inbound and outbound s2s negotiation (STARTTLS, SASL EXTERNAL, dialback) and the translation
//! between stanzas and canonical [`entente_model::Event`]s.
//!
//! **Sans-IO**: this crate opens no sockets, spawns no tasks, reads no clock and does not depend
//! on tokio. Bytes and the current time go in, bytes, outputs and the next deadline come out; the
//! driver (listener, TLS, DNS, reconnects) lives elsewhere and only moves bytes and timers.
//!
//! # Driving a stream
//!
//! One [`Inbound`] per accepted connection, one [`Outbound`] per connection the gateway opens
//! (the `Outbound` has its stream header ready at once). For each, the driver loops:
//!
//! 1. Bytes read from the socket (decrypted once TLS is up) → `handle_input(bytes, now)`.
//!    End of the connection → `handle_eof(now)`.
//! 2. Drain `poll_transmit()` and write every chunk, in order, to the socket.
//! 3. Drain `poll_event()` and act on each [`Output`]:
//!    - [`Output::StartTls`]: having written everything from step 2 in plaintext, run the TLS
//!      handshake (server side for `Inbound`, client side for `Outbound`), verify the peer's
//!      certificate per RFC 6125 and call `tls_established(verified_domains, now)` (or
//!      `tls_failed(now)`); then continue at step 2. Bytes read before that are dropped.
//!    - [`Output::Event`]: hand the canonical event to the router.
//!    - [`Output::Reply`]: pass it to [`Outbound::send_reply`] of a stream to
//!      [`Reply::to_domain`] (s2s streams are one-way).
//!    - [`Output::VerifyDialback`]: call [`Outbound::verify_dialback`] on a stream to the
//!      `originating` domain; when that stream yields [`Output::DialbackVerified`], call
//!      [`Inbound::dialback_verified`] on the stream the request came from.
//!    - [`Output::Authorised`] / [`Output::Refused`]: a domain pair is usable / was refused (the
//!      refused events come back, to be reported as failures to their senders).
//!    - [`Output::Closed`]: write what `poll_transmit()` still holds, then close the socket.
//! 4. Sleep until `poll_timeout()` (or the next socket event); when it passes, call
//!    `handle_timeout(now)` and go to step 2. This sends whitespace keepalives and closes idle,
//!    stalled or never-negotiated streams with `connection-timeout`.
//!
//! Outbound events go in with [`Outbound::send`] at any time; they wait until their domain pair
//! is authorised on the stream (SASL EXTERNAL for the stream's own pair, dialback for any other).
//!
//! # Choice of XML reader
//!
//! DEPENDENCIES.md recommends rxml 0.14; the evidence here confirms it, with one change in how it
//! is used. rxml refuses DTDs (`<!DOCTYPE` — it reports it as a malformed comment/CDATA start,
//! which the reader maps to `restricted-xml`), undeclared entities, comments, processing
//! instructions and invalid UTF-8 by construction, and bounds every token it buffers (names,
//! attribute values; text is split) — the tests on billion laughs, comments, PIs and
//! `\xff\xfe` show each refusal. What it lacks: stanza, depth and count limits, and its
//! namespace-resolving `Parser` collects an element's whole attribute map before returning it,
//! with the resolver itself private. So [`reader::StreamReader`] drives rxml's *raw* parser and
//! resolves namespaces itself (undeclared prefixes and duplicate attributes are still refused):
//! every limit (stanza bytes, depth, attributes, names, element count) is checked as each raw
//! event arrives, and rxml is never handed more input than the remaining stanza budget plus one
//! byte, so a 10 MB stanza costs at most 256 KiB of reading. One trap found on the way: the end
//! of a self-closing element (`<a/>`) is queued inside rxml, so the reader polls it even when no
//! input is left. rxml's default features pull in tokio; this crate turns them off.
//!
//! Elements are built as minidom [`minidom::Element`]s so that xmpp-parsers 0.23 can type them;
//! `jabber:server` is mapped to `jabber:client` on the way in and back on the way out
//! (xmpp-parsers' `component` feature is never enabled). xmpp-parsers has no SASL EXTERNAL
//! `<auth/>` and no dialback types, so [`sasl`] and [`dialback`] are written here.
//!
//! # Interop
//!
//! `interop/run_prosody_dialback.sh [plain|tls]` and `interop/run_ejabberd_dialback.sh
//! [plain|tls]` run Prosody 0.12 / ejabberd 23.01 (Debian packages) on loopback against
//! `examples/s2s_peer.rs`, a small blocking driver of these machines: the real server's message
//! arrives as an event through dialback (with `db:verify` to the real server), and an echo goes
//! back on the gateway's own stream, with STARTTLS both ways in `tls` mode. In `pki` mode both
//! sides hold certificates from a test CA, and SASL EXTERNAL authenticates both directions
//! without any dialback. All six runs pass. Bytes captured from Prosody and
//! ejabberd are replayed by `tests/captured.rs`.
//!
//! # Not covered
//!
//! Bidirectional streams (XEP-0288), stream management (XEP-0198), direct TLS (XEP-0368, a
//! driver matter), POSH/DNSSEC, MUC. Stanzas arriving on an outbound stream are ignored, as
//! RFC 6120 streams are one-way.

pub mod dialback;
pub mod error;
pub mod ns;
pub mod reader;
pub mod s2s;
pub mod sasl;
pub mod translate;
pub mod writer;

pub use error::StreamCondition;
pub use reader::{Limits, ReadError, ReadEvent, StreamHeader, StreamReader};
pub use s2s::{
    CloseReason, Config, DialbackRequest, DomainPair, Inbound, Outbound, Output, SendError,
};
pub use translate::Reply;
