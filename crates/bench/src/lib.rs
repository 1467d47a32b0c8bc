//! Load generator for the Entente hub. Each mode drives one protocol edge of a server on this
//! machine with many client sessions and reports throughput, latency and server memory.
//!
//! - [`ws`]: the hub client protocol over WebSocket (`/api/v1/ws`).
//!
//! Every run is bounded in sessions, messages and time, talks only to loopback addresses, and
//! stops by itself.

pub mod http;
pub mod process;
pub mod report;
pub mod target;
pub mod ws;
