//! Load generator for the Entente hub. Each mode drives one protocol edge of a server on this
//! machine with many client sessions and reports throughput, latency and server memory.
//!
//! - [`ws`]: the hub client protocol over WebSocket (`/api/v1/ws`).
//! - [`oscar`]: AIM-style clients on the OSCAR listener (BUCP login, BOS sessions, IMs).
//! - [`s2s`]: a peer XMPP server for a partner domain, sending over s2s streams (STARTTLS,
//!   dialback) to hub users connected over WebSocket.
//! - [`sip`]: a SIP partner domain: user agents send MESSAGE to hub users over UDP or TCP, and
//!   the partner answers the hub users' messages 200.
//!
//! Every run is bounded in sessions, messages and time, talks only to loopback addresses, and
//! stops by itself.

pub mod http;
pub mod oscar;
pub mod process;
pub mod report;
pub mod s2s;
pub mod sip;
pub mod target;
pub mod ws;
