//! SIP/SIMPLE for Entente. Sans-IO: no sockets, no tokio, no clock reads.
pub mod cpim;
pub mod headers;
pub mod iscomposing;
pub mod message;
pub mod pidf;
pub mod status;
pub mod wire;
pub mod xml;
