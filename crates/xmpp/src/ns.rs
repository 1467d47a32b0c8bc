//! Namespace names used on server-to-server streams, in one place.

/// Stanzas on a server-to-server stream (RFC 6120 §4.8.3).
pub const SERVER: &str = "jabber:server";
/// The namespace xmpp-parsers expects stanzas in; `jabber:server` is mapped onto it on input and back
/// on output.
pub const CLIENT: &str = "jabber:client";
pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// XEP-0220 dialback elements (`db:result`, `db:verify`).
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 stream feature advertising dialback.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const PING: &str = "urn:xmpp:ping";
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub const RECEIPTS: &str = "urn:xmpp:receipts";
pub const XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
pub const XHTML: &str = "http://www.w3.org/1999/xhtml";
