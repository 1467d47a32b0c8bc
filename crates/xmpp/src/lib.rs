//! XMPP server-to-server edge of Entente.
pub mod dialback;
pub mod error;
pub mod ns;
pub mod reader;
pub mod sasl;
pub mod writer;
