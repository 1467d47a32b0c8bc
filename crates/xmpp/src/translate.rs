//! Stanzas ⇄ canonical events. Inbound stanzas are parsed with xmpp-parsers and turned into
//! [`Event`]s (or into a [`Reply`] the gateway owes the sender); outbound stanzas are built from the
//! event alone, so nothing received is ever copied onto the wire.

use std::collections::BTreeMap;

use entente_model::{
    Address, ChatState, DomainKind, ErrorCode, Event, Failure, Message, Presence, PresenceKind,
    Receipt, Show, Subscription, SubscriptionKind, Typing,
};
use jid::Jid;
use minidom::{Element, Node};
use time::OffsetDateTime;
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Id, Lang, Message as XMessage, MessageType, Thread};
use xmpp_parsers::presence::{Presence as XPresence, Show as XShow, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::error::{code_for_condition, condition_for_code};
use crate::ns;

/// Features answered to disco#info (XEP-0030).
pub const FEATURES: [&str; 4] = [ns::DISCO_INFO, ns::PING, ns::RECEIPTS, ns::CHATSTATES];

/// What the translation needs to know about the gateway.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Domains the gateway answers for, with the rules their local parts follow.
    pub served: &'a BTreeMap<String, DomainKind>,
    pub max_body_bytes: usize,
    /// Wall-clock time stamped on messages.
    pub now: OffsetDateTime,
}

/// A stanza the gateway owes a peer (an IQ answer or a stanza error), built from parsed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    from_domain: String,
    to_domain: String,
    element: Element,
}

impl Reply {
    /// The served domain the reply comes from.
    pub fn from_domain(&self) -> &str {
        &self.from_domain
    }
    /// The peer domain the reply goes to: send it on the outbound stream to that domain.
    pub fn to_domain(&self) -> &str {
        &self.to_domain
    }
    pub(crate) fn element(&self) -> &Element {
        &self.element
    }
}

/// The outcome of one inbound stanza.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event(Event),
    Reply(Reply),
    /// Nothing to do (an IQ result, a groupchat error, a stanza to the server itself…).
    Ignored(&'static str),
}

/// Why an event cannot be written as a stanza.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("address {0} is not a valid JID")]
    BadAddress(String),
    #[error("a presence broadcast needs one stanza per subscriber: set `to`")]
    NoRecipient,
}

fn reply(from: &Jid, to: &Jid, element: Element) -> Reply {
    Reply {
        from_domain: from.domain().as_str().to_string(),
        to_domain: to.domain().as_str().to_string(),
        element,
    }
}

/// An address for the sender (an XMPP partner user).
fn peer_address(jid: &Jid) -> Option<Address> {
    let node = jid.node()?;
    Address::new(node.as_str(), jid.domain().as_str(), DomainKind::Xmpp).ok()
}

/// An address for the recipient (a user of a served domain).
fn local_address(jid: &Jid, ctx: &Context) -> Option<Address> {
    let node = jid.node()?;
    let kind = ctx.served.get(jid.domain().as_str())?;
    Address::new(node.as_str(), jid.domain().as_str(), *kind).ok()
}

/// What a bounce needs to know of the stanza it answers: kept before the stanza is consumed.
struct Origin {
    name: String,
    id: Option<String>,
    type_: Option<String>,
}

impl Origin {
    fn of(el: &Element) -> Origin {
        Origin {
            name: el.name().to_string(),
            id: el.attr("id").map(str::to_string),
            type_: el.attr("type").map(str::to_string),
        }
    }

    fn is_error(&self) -> bool {
        self.type_.as_deref() == Some("error")
    }
}

fn error_stanza_for(el: &Origin, from: &Jid, to: &Jid, code: ErrorCode) -> Reply {
    let (type_, condition) = condition_for_code(code);
    stanza_error_reply(el, from, to, type_, condition)
}

/// Bounces `el` back to its sender with a stanza error, keeping only its name and id.
fn stanza_error_reply(
    el: &Origin,
    from: &Jid,
    to: &Jid,
    type_: ErrorType,
    condition: DefinedCondition,
) -> Reply {
    let error = StanzaError {
        type_,
        by: None,
        defined_condition: condition,
        texts: BTreeMap::new(),
        other: None,
    };
    let id = el.id.clone();
    let element = match el.name.as_str() {
        "iq" => Iq::Error {
            from: Some(to.clone()),
            to: Some(from.clone()),
            id: id.unwrap_or_default(),
            error,
            payload: None,
        }
        .into(),
        "presence" => {
            let mut p = XPresence::new(PresenceType::Error)
                .with_from(to.clone())
                .with_to(from.clone());
            p.id = id;
            p.payloads.push(error.into());
            p.into()
        }
        _ => {
            let mut m = XMessage::new_with_type(MessageType::Error, Some(from.clone()));
            m.from = Some(to.clone());
            m.id = id.map(Id);
            m.payloads.push(error.into());
            m.into()
        }
    };
    reply(to, from, element)
}

/// Translates one authorised inbound stanza (`from` and `to` already checked against the pairs
/// authorised on the stream).
pub fn incoming(el: Element, from: &Jid, to: &Jid, ctx: &Context) -> Incoming {
    match el.name() {
        "message" => incoming_message(el, from, to, ctx),
        "presence" => incoming_presence(el, from, to, ctx),
        "iq" => incoming_iq(el, from, to),
        _ => Incoming::Ignored("not a stanza"),
    }
}

fn incoming_message(el: Element, from: &Jid, to: &Jid, ctx: &Context) -> Incoming {
    let origin = Origin::of(&el);
    let parsed = match XMessage::try_from(el) {
        Ok(m) => m,
        Err(_) if origin.is_error() => return Incoming::Ignored("malformed error message"),
        Err(_) => {
            return Incoming::Reply(error_stanza_for(&origin, from, to, ErrorCode::BadRequest))
        }
    };
    let id = parsed.id.as_ref().map(|i| i.0.clone()).unwrap_or_default();
    let (Some(sender), Some(recipient)) = (peer_address(from), local_address(to, ctx)) else {
        if parsed.type_ == MessageType::Error {
            return Incoming::Ignored("error message to or from a non-user address");
        }
        return Incoming::Reply(stanza_error_reply(
            &origin,
            from,
            to,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
        ));
    };
    match parsed.type_ {
        MessageType::Error => {
            let error = parsed
                .payloads
                .iter()
                .find(|p| p.is("error", ns::CLIENT))
                .and_then(|p| StanzaError::try_from(p.clone()).ok());
            let (code, text) = match error {
                Some(e) => (
                    code_for_condition(&e.defined_condition),
                    e.texts.values().next().cloned().unwrap_or_default(),
                ),
                None => (ErrorCode::Internal, String::new()),
            };
            return Incoming::Event(Event::Failure(Failure {
                from: sender,
                to: recipient,
                id,
                code,
                text,
            }));
        }
        MessageType::Groupchat => {
            return Incoming::Reply(stanza_error_reply(
                &origin,
                from,
                to,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
            ));
        }
        MessageType::Chat | MessageType::Normal | MessageType::Headline => {}
    }
    let body = parsed
        .get_best_body_cloned(vec![])
        .map(|(_, b)| b)
        .or_else(|| xhtml_text(&parsed.payloads, ctx.max_body_bytes + 1));
    if let Some(body) = body {
        if body.len() > ctx.max_body_bytes {
            return Incoming::Reply(error_stanza_for(&origin, from, to, ErrorCode::TooLarge));
        }
        return Incoming::Event(Event::Message(Message {
            id,
            from: sender,
            to: recipient,
            body,
            thread: parsed.thread.map(|t| t.id),
            ts: ctx.now,
        }));
    }
    if let Some(received) = parsed
        .payloads
        .iter()
        .find(|p| p.is("received", ns::RECEIPTS))
    {
        if let Some(receipt_id) = received.attr("id").filter(|i| !i.is_empty()) {
            return Incoming::Event(Event::Receipt(Receipt {
                from: sender,
                to: recipient,
                id: receipt_id.to_string(),
            }));
        }
    }
    if let Some(state) = parsed
        .payloads
        .iter()
        .filter(|p| p.ns() == ns::CHATSTATES)
        .find_map(|p| ChatState::parse(p.name()))
    {
        return Incoming::Event(Event::Typing(Typing {
            from: sender,
            to: recipient,
            state,
        }));
    }
    Incoming::Ignored("message without body, receipt or chat state")
}

/// The text of an XHTML-IM body (XEP-0071): text nodes only, `<br/>` and block ends as newlines.
/// No markup, attribute or style survives.
fn xhtml_text(payloads: &[Element], limit: usize) -> Option<String> {
    let html = payloads.iter().find(|p| p.is("html", ns::XHTML_IM))?;
    let body = html.children().find(|c| c.is("body", ns::XHTML))?;
    let mut out = String::new();
    collect_text(body, &mut out, limit);
    let text = out.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn collect_text(el: &Element, out: &mut String, limit: usize) {
    for node in el.nodes() {
        if out.len() > limit {
            return;
        }
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Element(child) => {
                if child.name() == "br" {
                    out.push('\n');
                    continue;
                }
                // Scripts and styles carry no message text.
                if matches!(child.name(), "script" | "style") {
                    continue;
                }
                collect_text(child, out, limit);
                if matches!(child.name(), "p" | "div" | "li" | "blockquote") {
                    out.push('\n');
                }
            }
        }
    }
}

fn incoming_presence(el: Element, from: &Jid, to: &Jid, ctx: &Context) -> Incoming {
    let origin = Origin::of(&el);
    let parsed = match XPresence::try_from(el) {
        Ok(p) => p,
        Err(_) if origin.is_error() => return Incoming::Ignored("malformed error presence"),
        Err(_) => {
            return Incoming::Reply(error_stanza_for(&origin, from, to, ErrorCode::BadRequest))
        }
    };
    let (Some(sender), Some(recipient)) = (peer_address(from), local_address(to, ctx)) else {
        return Incoming::Ignored("presence to or from a non-user address");
    };
    let status = parsed
        .statuses
        .get("")
        .or_else(|| parsed.statuses.values().next())
        .cloned();
    let subscription = |kind| {
        Incoming::Event(Event::Subscription(Subscription {
            from: sender.clone(),
            to: recipient.clone(),
            kind,
        }))
    };
    let presence = |kind| {
        Incoming::Event(Event::Presence(Presence {
            from: sender.clone(),
            to: Some(recipient.clone()),
            kind,
        }))
    };
    match parsed.type_ {
        PresenceType::None => presence(PresenceKind::Available {
            show: match parsed.show {
                None | Some(XShow::Chat) => Show::Available,
                Some(XShow::Away) => Show::Away,
                Some(XShow::Xa) => Show::ExtendedAway,
                Some(XShow::Dnd) => Show::Dnd,
            },
            status,
        }),
        PresenceType::Unavailable => presence(PresenceKind::Unavailable { status }),
        PresenceType::Probe => presence(PresenceKind::Probe),
        PresenceType::Subscribe => subscription(SubscriptionKind::Subscribe),
        PresenceType::Subscribed => subscription(SubscriptionKind::Subscribed),
        PresenceType::Unsubscribe => subscription(SubscriptionKind::Unsubscribe),
        PresenceType::Unsubscribed => subscription(SubscriptionKind::Unsubscribed),
        PresenceType::Error => {
            let error = parsed
                .payloads
                .iter()
                .find(|p| p.is("error", ns::CLIENT))
                .and_then(|p| StanzaError::try_from(p.clone()).ok());
            Incoming::Event(Event::Failure(Failure {
                from: sender,
                to: recipient,
                id: parsed.id.clone().unwrap_or_default(),
                code: error
                    .as_ref()
                    .map(|e| code_for_condition(&e.defined_condition))
                    .unwrap_or(ErrorCode::Internal),
                text: error
                    .and_then(|e| e.texts.values().next().cloned())
                    .unwrap_or_default(),
            }))
        }
    }
}

fn incoming_iq(el: Element, from: &Jid, to: &Jid) -> Incoming {
    let origin = Origin::of(&el);
    let parsed = match Iq::try_from(el) {
        Ok(iq) => iq,
        Err(_) if origin.is_error() || origin.type_.as_deref() == Some("result") => {
            return Incoming::Ignored("malformed iq answer")
        }
        Err(_) => {
            return Incoming::Reply(error_stanza_for(&origin, from, to, ErrorCode::BadRequest))
        }
    };
    match parsed {
        Iq::Get { id, payload, .. } if payload.is("query", ns::DISCO_INFO) => {
            if payload.attr("node").is_some() {
                return Incoming::Reply(stanza_error_reply(
                    &origin,
                    from,
                    to,
                    ErrorType::Cancel,
                    DefinedCondition::ItemNotFound,
                ));
            }
            let (category, type_) = if to.node().is_some() {
                ("client", "pc")
            } else {
                ("server", "im")
            };
            let identity = Identity {
                category: category.into(),
                type_: type_.into(),
                lang: None,
                name: None,
            };
            let result = DiscoInfoResult {
                node: None,
                identities: vec![identity],
                features: FEATURES.iter().map(|f| f.to_string()).collect(),
                extensions: Vec::new(),
            };
            let iq = Iq::Result {
                from: Some(to.clone()),
                to: Some(from.clone()),
                id,
                payload: Some(result.into()),
            };
            Incoming::Reply(reply(to, from, iq.into()))
        }
        Iq::Get { id, payload, .. } if payload.is("ping", ns::PING) => {
            let iq = Iq::Result {
                from: Some(to.clone()),
                to: Some(from.clone()),
                id,
                payload: None,
            };
            Incoming::Reply(reply(to, from, iq.into()))
        }
        Iq::Get { .. } | Iq::Set { .. } => Incoming::Reply(stanza_error_reply(
            &origin,
            from,
            to,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
        )),
        Iq::Result { .. } | Iq::Error { .. } => Incoming::Ignored("iq answer"),
    }
}

/// Drops characters XML 1.0 cannot carry (most C0 controls, U+FFFE, U+FFFF): a body from another
/// protocol must not make the stanza unparseable for the peer.
pub fn xml_safe(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
        })
        .collect()
}

fn jid_of(address: &Address) -> Result<Jid, TranslateError> {
    Jid::new(&address.to_string()).map_err(|_| TranslateError::BadAddress(address.to_string()))
}

fn payload(name: &str, namespace: &str) -> Element {
    Element::bare(name, namespace)
}

/// Writes a canonical event as a stanza (in `jabber:client`; the writer maps it onto
/// `jabber:server`). `new_id` supplies ids for stanzas the event has none for.
pub fn outgoing(
    event: &Event,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Element, TranslateError> {
    Ok(match event {
        Event::Message(m) => {
            let mut x = XMessage::chat(Some(jid_of(&m.to)?));
            x.from = Some(jid_of(&m.from)?);
            let id = xml_safe(&m.id);
            x.id = Some(Id(if id.is_empty() { new_id() } else { id }));
            x.bodies.insert(Lang::new(), xml_safe(&m.body));
            x.thread = m.thread.as_ref().map(|t| Thread {
                parent: None,
                id: xml_safe(t),
            });
            x.payloads.push(payload("active", ns::CHATSTATES));
            x.payloads.push(payload("request", ns::RECEIPTS));
            x.into()
        }
        Event::Typing(t) => {
            let mut x = XMessage::chat(Some(jid_of(&t.to)?));
            x.from = Some(jid_of(&t.from)?);
            x.id = Some(Id(new_id()));
            x.payloads.push(payload(t.state.as_str(), ns::CHATSTATES));
            x.into()
        }
        Event::Receipt(r) => {
            let mut x = XMessage::chat(Some(jid_of(&r.to)?));
            x.from = Some(jid_of(&r.from)?);
            x.id = Some(Id(new_id()));
            let mut received = payload("received", ns::RECEIPTS);
            received.attrs_mut().insert(
                rxml::Namespace::none().clone(),
                rxml::NcName::try_from("id").unwrap_or_else(|_| unreachable!()),
                xml_safe(&r.id),
            );
            x.payloads.push(received);
            x.into()
        }
        Event::Presence(p) => {
            let to = p.to.as_ref().ok_or(TranslateError::NoRecipient)?;
            let (type_, show, status) = match &p.kind {
                PresenceKind::Available { show, status } => (
                    PresenceType::None,
                    match show {
                        Show::Available => None,
                        Show::Away => Some(XShow::Away),
                        Show::ExtendedAway => Some(XShow::Xa),
                        Show::Dnd => Some(XShow::Dnd),
                    },
                    status.clone(),
                ),
                PresenceKind::Unavailable { status } => {
                    (PresenceType::Unavailable, None, status.clone())
                }
                PresenceKind::Probe => (PresenceType::Probe, None, None),
            };
            let mut x = XPresence::new(type_)
                .with_from(jid_of(&p.from)?)
                .with_to(jid_of(to)?);
            x.show = show;
            if let Some(status) = status {
                x.statuses.insert(Lang::new(), xml_safe(&status));
            }
            x.into()
        }
        Event::Subscription(s) => {
            let type_ = match s.kind {
                SubscriptionKind::Subscribe => PresenceType::Subscribe,
                SubscriptionKind::Subscribed => PresenceType::Subscribed,
                SubscriptionKind::Unsubscribe => PresenceType::Unsubscribe,
                SubscriptionKind::Unsubscribed => PresenceType::Unsubscribed,
            };
            XPresence::new(type_)
                .with_from(jid_of(&s.from)?)
                .with_to(jid_of(&s.to)?)
                .into()
        }
        Event::Failure(f) => {
            let (type_, condition) = condition_for_code(f.code);
            let mut texts = BTreeMap::new();
            if !f.text.is_empty() {
                texts.insert("en".to_string(), xml_safe(&f.text));
            }
            let error = StanzaError {
                type_,
                by: None,
                defined_condition: condition,
                texts,
                other: None,
            };
            let mut x = XMessage::new_with_type(MessageType::Error, Some(jid_of(&f.to)?));
            x.from = Some(jid_of(&f.from)?);
            let id = xml_safe(&f.id);
            x.id = (!id.is_empty()).then_some(Id(id));
            x.payloads.push(error.into());
            x.into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{ReadEvent, StreamReader};

    fn served() -> BTreeMap<String, DomainKind> {
        let mut m = BTreeMap::new();
        m.insert("hub.test".to_string(), DomainKind::Hub);
        m
    }

    fn ctx(served: &BTreeMap<String, DomainKind>) -> Context<'_> {
        Context {
            served,
            max_body_bytes: 16 * 1024,
            now: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn parse(stanza: &[u8]) -> Element {
        let mut input = crate::writer::stream_header("corp-a.test", "hub.test", None);
        input.extend_from_slice(stanza);
        let mut reader = StreamReader::new(Default::default());
        let mut slice: &[u8] = &input;
        reader.read(&mut slice).unwrap();
        match reader.read(&mut slice).unwrap() {
            Some(ReadEvent::Element(el)) => el,
            other => panic!("{other:?}"),
        }
    }

    fn translate(stanza: &[u8]) -> Incoming {
        let el = parse(stanza);
        let from = Jid::new(el.attr("from").unwrap()).unwrap();
        let to = Jid::new(el.attr("to").unwrap()).unwrap();
        let served = served();
        incoming(el, &from, &to, &ctx(&served))
    }

    fn juliet() -> Address {
        Address::new("juliet", "corp-a.test", DomainKind::Xmpp).unwrap()
    }

    fn alice() -> Address {
        Address::new("alice", "hub.test", DomainKind::Hub).unwrap()
    }

    fn reply_text(incoming: Incoming) -> String {
        match incoming {
            Incoming::Reply(r) => String::from_utf8(crate::writer::stanza(r.element())).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chat_message_with_extras() {
        let got = translate(include_bytes!("../testdata/chat_message.xml"));
        assert_eq!(
            got,
            Incoming::Event(Event::Message(Message {
                id: "purple2a7c".into(),
                from: juliet(),
                to: alice(),
                body: "Wherefore art thou?".into(),
                thread: Some("th-1".into()),
                ts: OffsetDateTime::UNIX_EPOCH,
            }))
        );
    }

    #[test]
    fn xhtml_only_message_is_reduced_to_text() {
        let Incoming::Event(Event::Message(m)) =
            translate(include_bytes!("../testdata/xhtml_only.xml"))
        else {
            panic!()
        };
        assert_eq!(m.body, "Hello there\nline\ntwo");
    }

    #[test]
    fn error_message_becomes_a_failure() {
        assert_eq!(
            translate(include_bytes!("../testdata/error_message.xml")),
            Incoming::Event(Event::Failure(Failure {
                from: juliet(),
                to: alice(),
                id: "m42".into(),
                code: ErrorCode::ItemNotFound,
                text: "no such user".into(),
            }))
        );
    }

    #[test]
    fn presence_show_and_status() {
        assert_eq!(
            translate(include_bytes!("../testdata/presence_away.xml")),
            Incoming::Event(Event::Presence(Presence {
                from: juliet(),
                to: Some(alice()),
                kind: PresenceKind::Available {
                    show: Show::ExtendedAway,
                    status: Some("gone fishing".into()),
                },
            }))
        );
    }

    #[test]
    fn chat_states_receipts_and_subscriptions() {
        let typing = translate(b"<message from='juliet@corp-a.test/r' to='alice@hub.test' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>");
        assert_eq!(
            typing,
            Incoming::Event(Event::Typing(Typing {
                from: juliet(),
                to: alice(),
                state: ChatState::Paused,
            }))
        );
        let receipt = translate(b"<message from='juliet@corp-a.test/r' to='alice@hub.test' id='r1'><received xmlns='urn:xmpp:receipts' id='m1'/></message>");
        assert_eq!(
            receipt,
            Incoming::Event(Event::Receipt(Receipt {
                from: juliet(),
                to: alice(),
                id: "m1".into(),
            }))
        );
        for (t, kind) in [
            ("subscribe", SubscriptionKind::Subscribe),
            ("subscribed", SubscriptionKind::Subscribed),
            ("unsubscribe", SubscriptionKind::Unsubscribe),
            ("unsubscribed", SubscriptionKind::Unsubscribed),
        ] {
            let xml =
                format!("<presence from='juliet@corp-a.test' to='alice@hub.test' type='{t}'/>");
            assert_eq!(
                translate(xml.as_bytes()),
                Incoming::Event(Event::Subscription(Subscription {
                    from: juliet(),
                    to: alice(),
                    kind,
                }))
            );
        }
        let probe =
            translate(b"<presence from='juliet@corp-a.test' to='alice@hub.test' type='probe'/>");
        assert_eq!(
            probe,
            Incoming::Event(Event::Presence(Presence {
                from: juliet(),
                to: Some(alice()),
                kind: PresenceKind::Probe,
            }))
        );
    }

    #[test]
    fn oversized_body_is_bounced_not_delivered() {
        let body = "x".repeat(17 * 1024);
        let xml = format!("<message from='juliet@corp-a.test' to='alice@hub.test' id='big'><body>{body}</body></message>");
        let text = reply_text(translate(xml.as_bytes()));
        assert!(
            text.contains("type=\"error\"") || text.contains("type='error'"),
            "{text}"
        );
        assert!(text.contains("not-acceptable"), "{text}");
        assert!(text.contains("big"), "{text}");
        assert!(
            !text.contains("xxxx"),
            "the bounce must not echo the body: {text}"
        );
    }

    #[test]
    fn iq_handling() {
        let disco = reply_text(translate(b"<iq type='get' id='d1' from='juliet@corp-a.test/r' to='hub.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
        for f in FEATURES {
            assert!(disco.contains(f), "{disco}");
        }
        assert!(disco.contains("result"), "{disco}");
        let pong = reply_text(translate(b"<iq type='get' id='p1' from='corp-a.test' to='hub.test'><ping xmlns='urn:xmpp:ping'/></iq>"));
        assert!(pong.contains("p1") && pong.contains("result"), "{pong}");
        let other = reply_text(translate(b"<iq type='get' id='v1' from='juliet@corp-a.test/r' to='alice@hub.test'><query xmlns='jabber:iq:version'/></iq>"));
        assert!(other.contains("service-unavailable"), "{other}");
        let set = reply_text(translate(b"<iq type='set' id='s1' from='juliet@corp-a.test/r' to='hub.test'><query xmlns='jabber:iq:roster'/></iq>"));
        assert!(set.contains("service-unavailable"), "{set}");
        assert!(matches!(
            translate(b"<iq type='result' id='x' from='corp-a.test' to='hub.test'/>"),
            Incoming::Ignored(_)
        ));
    }

    #[test]
    fn outgoing_stanzas_read_back_as_the_same_event() {
        let served_b = {
            let mut m = BTreeMap::new();
            m.insert("corp-a.test".to_string(), DomainKind::Xmpp);
            m
        };
        let events = vec![
            Event::Message(Message {
                id: "m1".into(),
                from: alice(),
                to: juliet(),
                body: "a <b> & 'c'".into(),
                thread: Some("t".into()),
                ts: OffsetDateTime::UNIX_EPOCH,
            }),
            Event::Typing(Typing {
                from: alice(),
                to: juliet(),
                state: ChatState::Gone,
            }),
            Event::Presence(Presence {
                from: alice(),
                to: Some(juliet()),
                kind: PresenceKind::Available {
                    show: Show::Away,
                    status: None,
                },
            }),
        ];
        let mut n = 0;
        for event in events {
            let el = outgoing(&event, &mut || {
                n += 1;
                format!("id{n}")
            })
            .unwrap();
            let bytes = crate::writer::stanza(&el);
            let back = parse(&bytes);
            let from = Jid::new(back.attr("from").unwrap()).unwrap();
            let to = Jid::new(back.attr("to").unwrap()).unwrap();
            let got = incoming(back, &from, &to, &ctx(&served_b));
            assert_eq!(got, Incoming::Event(event));
        }
        let broadcast = Event::Presence(Presence {
            from: alice(),
            to: None,
            kind: PresenceKind::Probe,
        });
        assert_eq!(
            outgoing(&broadcast, &mut String::new),
            Err(TranslateError::NoRecipient)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_message_survives_the_wire(
            id in "\\PC{0,40}",
            body in "\\PC{1,200}",
            thread in proptest::option::of("[a-z0-9-]{1,20}"),
        ) {
            let event = Event::Message(Message {
                id,
                from: alice(),
                to: juliet(),
                body,
                thread,
                ts: OffsetDateTime::UNIX_EPOCH,
            });
            let el = outgoing(&event, &mut || "generated".to_string()).unwrap();
            let back = parse(&crate::writer::stanza(&el));
            let from = Jid::new(back.attr("from").unwrap()).unwrap();
            let to = Jid::new(back.attr("to").unwrap()).unwrap();
            let mut served_b = BTreeMap::new();
            served_b.insert("corp-a.test".to_string(), DomainKind::Xmpp);
            let Incoming::Event(Event::Message(got)) = incoming(back, &from, &to, &ctx(&served_b)) else {
                panic!("not a message");
            };
            let Event::Message(sent) = event else { unreachable!() };
            let expected_id = if xml_safe(&sent.id).is_empty() { "generated".to_string() } else { xml_safe(&sent.id) };
            proptest::prop_assert_eq!(got.id, expected_id);
            // Bodies are compared as XML carries them (CR LF and lone CR read back as LF).
            let expected_body = xml_safe(&sent.body).replace("\r\n", "\n").replace('\r', "\n");
            let got_body = got.body.replace("\r\n", "\n").replace('\r', "\n");
            proptest::prop_assert_eq!(got_body, expected_body);
            proptest::prop_assert_eq!(got.thread, sent.thread);
        }

        #[test]
        fn control_characters_never_reach_the_wire(body in "[\\x00-\\x1f a-z]{1,50}") {
            let event = Event::Message(Message {
                id: "m".into(),
                from: alice(),
                to: juliet(),
                body,
                thread: None,
                ts: OffsetDateTime::UNIX_EPOCH,
            });
            let el = outgoing(&event, &mut String::new).unwrap();
            // Parses back: the peer would not see a not-well-formed stream.
            let _ = parse(&crate::writer::stanza(&el));
        }
    }
}
