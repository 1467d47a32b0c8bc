//! RFC 3994 isComposing (`application/im-iscomposing+xml`) ⇄ canonical chat states.

use entente_model::ChatState;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event as X};
use quick_xml::Writer;

use crate::xml::{self, XmlError, XmlLimits};

pub const CONTENT_TYPE: &str = "application/im-iscomposing+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:im-iscomposing";

/// Seconds after which an `active` indication lapses (RFC 3994 §3: default 120 s).
pub const DEFAULT_REFRESH: u32 = 60;

/// What an isComposing document says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsComposing {
    pub active: bool,
    pub refresh: Option<u32>,
}

impl IsComposing {
    pub fn chat_state(self) -> ChatState {
        if self.active {
            ChatState::Composing
        } else {
            ChatState::Paused
        }
    }

    /// `composing` is `active`; every other chat state is `idle`.
    pub fn from_chat_state(state: ChatState) -> IsComposing {
        let active = state == ChatState::Composing;
        IsComposing {
            active,
            refresh: active.then_some(DEFAULT_REFRESH),
        }
    }
}

pub fn parse(body: &[u8], limits: &XmlLimits) -> Result<IsComposing, XmlError> {
    let root = xml::parse(body, limits)?;
    if !root.is(NS, "isComposing") {
        return Err(XmlError::WrongRoot);
    }
    let state = root
        .child(NS, "state")
        .ok_or_else(|| XmlError::Syntax("isComposing without state".into()))?;
    let active = match state.text.trim() {
        "active" => true,
        "idle" => false,
        _ => return Err(XmlError::Syntax("unknown isComposing state".into())),
    };
    let refresh = root
        .child(NS, "refresh")
        .and_then(|r| r.text.trim().parse().ok());
    Ok(IsComposing { active, refresh })
}

pub fn build(doc: IsComposing) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = (|| -> std::io::Result<()> {
        w.write_event(X::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let mut root = BytesStart::new("isComposing");
        root.push_attribute(("xmlns", NS));
        w.write_event(X::Start(root))?;
        w.write_event(X::Start(BytesStart::new("state")))?;
        w.write_event(X::Text(BytesText::new(if doc.active {
            "active"
        } else {
            "idle"
        })))?;
        w.write_event(X::End(BytesEnd::new("state")))?;
        w.write_event(X::Start(BytesStart::new("contenttype")))?;
        w.write_event(X::Text(BytesText::new("text/plain")))?;
        w.write_event(X::End(BytesEnd::new("contenttype")))?;
        if let Some(r) = doc.refresh {
            w.write_event(X::Start(BytesStart::new("refresh")))?;
            w.write_event(X::Text(BytesText::new(&r.to_string())))?;
            w.write_event(X::End(BytesEnd::new("refresh")))?;
        }
        w.write_event(X::End(BytesEnd::new("isComposing")))?;
        Ok(())
    })();
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3994_example() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
   <isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing iscomposing.xsd">
     <state>active</state>
     <contenttype>text/plain</contenttype>
     <refresh>90</refresh>
   </isComposing>"#;
        let d = parse(doc, &XmlLimits::default()).unwrap();
        assert_eq!(
            d,
            IsComposing {
                active: true,
                refresh: Some(90)
            }
        );
        assert_eq!(d.chat_state(), ChatState::Composing);
    }

    #[test]
    fn round_trip_and_mapping() {
        for state in [
            ChatState::Composing,
            ChatState::Paused,
            ChatState::Active,
            ChatState::Gone,
        ] {
            let doc = IsComposing::from_chat_state(state);
            let back = parse(&build(doc), &XmlLimits::default()).unwrap();
            assert_eq!(back, doc);
            let expect = if state == ChatState::Composing {
                ChatState::Composing
            } else {
                ChatState::Paused
            };
            assert_eq!(back.chat_state(), expect);
        }
        assert!(parse(b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>bogus</state></isComposing>", &XmlLimits::default()).is_err());
    }
}
