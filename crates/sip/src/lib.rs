//! SIP/SIMPLE for Entente: the wire format, RFC 3261 non-INVITE transactions, RFC 6665
//! subscription dialogs, and the translation of SIMPLE (MESSAGE, presence SUBSCRIBE/NOTIFY,
//! PUBLISH, PIDF, isComposing) to and from canonical [`entente_model::Event`]s.
//!
//! **Sans-IO.** This crate opens no sockets, uses no tokio, spawns nothing and never reads a
//! clock: bytes and the current time go in, bytes, events and the next deadline come out. The
//! tokio driver (UDP/TCP/TLS listeners, RFC 3263 resolution, mutual TLS) only moves bytes and
//! timers.
//!
//! # Driving an [`Endpoint`]
//!
//! ```text
//! let mut ep = Endpoint::new(config, Instant::now(), OffsetDateTime::now_utc());
//! loop {
//!     // 1. Feed input, with the time it arrived:
//!     //      ep.handle_datagram(src_addr, &datagram, now)               UDP
//!     //      ep.handle_stream_bytes(conn_id, Transport::Tcp, &bytes, now) TCP/TLS
//!     //        (Err => framing is lost: close that connection, then
//!     //         ep.handle_connection_closed(conn_id))
//!     //      ep.send(event, now)                                        from the router
//!     //      ep.handle_timeout(now)                                     when the timer fired
//!     // 2. Drain every output until None, in any order:
//!     //      while let Some(t) = ep.poll_transmit() { write t.payload to t.destination }
//!     //      while let Some(e) = ep.poll_event()    { hand e to the router }
//!     // 3. Re-arm the single timer:
//!     //      ep.poll_timeout() -> Option<Instant>; call handle_timeout(now) at that time.
//! }
//! ```
//!
//! `poll_timeout` may change after any `handle_*` or `send` call, so re-read it after step 2
//! every time. A [`Destination::Resolve`] names a host (partner domain or URI host) the driver
//! resolves per RFC 3263 and sends to over the given transport; responses are matched to our
//! transactions by branch whatever connection or socket they arrive on.
//!
//! # Layers
//! - [`message`]: our message type; every constructor rejects CR/LF/NUL, so values coming from
//!   other protocols can never create a header. Content-Length is always computed.
//! - [`wire`]: datagram parsing and the TCP/TLS stream framer, behind the [`wire::SipParser`]
//!   trait (implemented with `sipx-sip`), with size, header-count and line-length limits.
//! - [`headers`]: Via (IPv6 references, comma-joined lists), name-addr, CSeq, Subscription-State.
//! - [`transaction`]: timers E, F, J, K; retransmission on UDP only; T1/T2/T4 configurable.
//! - [`pidf`], [`iscomposing`], [`cpim`], [`xml`]: SIMPLE bodies, read with limits and built
//!   with an escaping XML writer.
//! - [`status`]: the single `ErrorCode` ⇄ SIP status mapping.
//! - [`endpoint`]: everything above put together.
//!
//! SIP users appear in events as `user@domain` ([`entente_model::DomainKind::Sip`]). The
//! endpoint does not authenticate `From`: the driver or router checks that an event's `from`
//! domain belongs to the partner the bytes came from (mutual TLS identity, pinned address).
//! `README.md` beside this crate has the full SIP ⇄ canonical mapping and what was measured.

pub mod cpim;
pub mod endpoint;
pub mod headers;
pub mod iscomposing;
pub mod message;
pub mod pidf;
pub mod status;
pub mod transaction;
pub mod wire;
pub mod xml;

pub use endpoint::{
    Admission, Config, ConnectionId, Destination, Endpoint, SendError, Transmit, Transport,
    Unanswered,
};
pub use message::{BuildError, Header, Method, SipMessage, StartLine};
pub use transaction::Timers;
pub use wire::{Limits, ParseError, SipParser, SipxParser, StreamDecoder, StreamFramer};
