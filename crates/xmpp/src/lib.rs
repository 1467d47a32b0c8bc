//! XMPP server-to-server edge of Entente.
pub mod ns;
pub mod reader;
