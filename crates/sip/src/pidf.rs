//! PIDF (RFC 3863) with RPID activities (RFC 4480) ⇄ canonical presence. Parsing goes
//! through the limited reader in [`crate::xml`]; building uses quick-xml's writer, which escapes.

use entente_model::{PresenceKind, Show};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event as X};
use quick_xml::Writer;

use crate::xml::{self, xml_safe, XmlError, XmlLimits};

pub const CONTENT_TYPE: &str = "application/pidf+xml";
pub const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
pub const NS_DM: &str = "urn:ietf:params:xml:ns:pidf:data-model";
pub const NS_RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";

/// Longest status note kept from a document.
pub const MAX_NOTE_CHARS: usize = 1024;

/// What we read from a PIDF document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidfDocument {
    pub entity: String,
    /// Any tuple with `<basic>open</basic>` (or, without any basic, a person with activities).
    pub open: bool,
    /// RPID activity names (`away`, `busy`, `on-the-phone`, ...).
    pub activities: Vec<String>,
    /// `<rpid:user-input>idle</rpid:user-input>` was present.
    pub idle: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("a probe has no PIDF form")]
    Probe,
}

/// Parses a PIDF body.
pub fn parse(body: &[u8], limits: &XmlLimits) -> Result<PidfDocument, PidfError> {
    let root = xml::parse(body, limits)?;
    if !root.is(NS_PIDF, "presence") {
        return Err(XmlError::WrongRoot.into());
    }
    let entity = root.attr("entity").unwrap_or("").to_string();
    let all = root.descendants();
    let mut basic_seen = false;
    let mut open = false;
    for e in all.iter().filter(|e| e.is(NS_PIDF, "basic")) {
        basic_seen = true;
        if e.text.trim().eq_ignore_ascii_case("open") {
            open = true;
        }
    }
    let mut activities = Vec::new();
    for acts in all.iter().filter(|e| e.is(NS_RPID, "activities")) {
        for a in &acts.children {
            if a.ns == NS_RPID && a.name != "other" && activities.len() < 16 {
                activities.push(a.name.clone());
            }
        }
    }
    if !basic_seen && !activities.is_empty() {
        open = true;
    }
    let idle = all
        .iter()
        .any(|e| e.is(NS_RPID, "user-input") && e.text.trim().eq_ignore_ascii_case("idle"));
    let note = all
        .iter()
        .find(|e| e.name == "note" && (e.ns == NS_PIDF || e.ns == NS_DM))
        .map(|e| clean_note(&e.text))
        .filter(|n| !n.is_empty());
    Ok(PidfDocument {
        entity,
        open,
        activities,
        idle,
        note,
    })
}

fn clean_note(text: &str) -> String {
    let t: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NOTE_CHARS)
        .collect();
    t.trim().to_string()
}

impl PidfDocument {
    /// The canonical presence this document says.
    pub fn presence_kind(&self) -> PresenceKind {
        if !self.open {
            return PresenceKind::Unavailable {
                status: self.note.clone(),
            };
        }
        let has = |names: &[&str]| self.activities.iter().any(|a| names.contains(&a.as_str()));
        let show = if has(&[
            "busy",
            "on-the-phone",
            "meeting",
            "performance",
            "presentation",
            "appointment",
            "worship",
        ]) {
            Show::Dnd
        } else if has(&["vacation", "holiday", "sleeping", "permanent-absence"])
            || (self.idle && has(&["away"]))
        {
            Show::ExtendedAway
        } else if has(&[
            "away",
            "meal",
            "breakfast",
            "lunch",
            "dinner",
            "travel",
            "steering",
        ]) || self.idle
        {
            Show::Away
        } else {
            Show::Available
        };
        PresenceKind::Available {
            show,
            status: self.note.clone(),
        }
    }
}

/// Builds a PIDF document for `entity` (a `sip:` URI). Text is made XML-safe and escaped.
pub fn build(entity: &str, kind: &PresenceKind) -> Result<Vec<u8>, PidfError> {
    let (open, show, status) = match kind {
        PresenceKind::Available { show, status } => (true, Some(*show), status.as_deref()),
        PresenceKind::Unavailable { status } => (false, None, status.as_deref()),
        PresenceKind::Probe => return Err(PidfError::Probe),
    };
    let mut w = Writer::new(Vec::new());
    let io = |e: std::io::Error| PidfError::Xml(XmlError::Syntax(e.to_string()));
    w.write_event(X::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(io)?;
    let mut presence = BytesStart::new("presence");
    presence.push_attribute(("xmlns", NS_PIDF));
    presence.push_attribute(("xmlns:dm", NS_DM));
    presence.push_attribute(("xmlns:rpid", NS_RPID));
    presence.push_attribute(("entity", xml_safe(entity).as_str()));
    w.write_event(X::Start(presence)).map_err(io)?;

    let mut tuple = BytesStart::new("tuple");
    tuple.push_attribute(("id", "t1"));
    w.write_event(X::Start(tuple)).map_err(io)?;
    w.write_event(X::Start(BytesStart::new("status")))
        .map_err(io)?;
    w.write_event(X::Start(BytesStart::new("basic")))
        .map_err(io)?;
    w.write_event(X::Text(BytesText::new(if open {
        "open"
    } else {
        "closed"
    })))
    .map_err(io)?;
    w.write_event(X::End(BytesEnd::new("basic"))).map_err(io)?;
    w.write_event(X::End(BytesEnd::new("status"))).map_err(io)?;
    if let Some(note) = status {
        let note = xml_safe(note);
        w.write_event(X::Start(BytesStart::new("note")))
            .map_err(io)?;
        w.write_event(X::Text(BytesText::new(&note))).map_err(io)?;
        w.write_event(X::End(BytesEnd::new("note"))).map_err(io)?;
    }
    w.write_event(X::End(BytesEnd::new("tuple"))).map_err(io)?;

    let (activity, idle) = match show {
        Some(Show::Away) => (Some("away"), false),
        Some(Show::ExtendedAway) => (Some("away"), true),
        Some(Show::Dnd) => (Some("busy"), false),
        Some(Show::Available) | None => (None, false),
    };
    if let Some(activity) = activity {
        let mut person = BytesStart::new("dm:person");
        person.push_attribute(("id", "p1"));
        w.write_event(X::Start(person)).map_err(io)?;
        w.write_event(X::Start(BytesStart::new("rpid:activities")))
            .map_err(io)?;
        w.write_event(X::Empty(BytesStart::new(format!("rpid:{activity}"))))
            .map_err(io)?;
        w.write_event(X::End(BytesEnd::new("rpid:activities")))
            .map_err(io)?;
        if idle {
            w.write_event(X::Start(BytesStart::new("rpid:user-input")))
                .map_err(io)?;
            w.write_event(X::Text(BytesText::new("idle"))).map_err(io)?;
            w.write_event(X::End(BytesEnd::new("rpid:user-input")))
                .map_err(io)?;
        }
        w.write_event(X::End(BytesEnd::new("dm:person")))
            .map_err(io)?;
    }
    w.write_event(X::End(BytesEnd::new("presence")))
        .map_err(io)?;
    Ok(w.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: XmlLimits = XmlLimits {
        max_bytes: 32 * 1024,
        max_depth: 16,
        max_elements: 512,
        max_attributes: 16,
        max_text: 4096,
    };

    #[test]
    fn rfc4480_example_reads_as_busy() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
  xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
  xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
  entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status><basic>open</basic></status>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <timestamp>2005-10-27T16:49:29Z</timestamp>
  </tuple>
  <dm:person id="p1">
    <rpid:activities><rpid:on-the-phone/><rpid:busy/></rpid:activities>
  </dm:person>
</presence>"#;
        let d = parse(doc, &LIMITS).unwrap();
        assert_eq!(d.entity, "pres:someone@example.com");
        assert_eq!(
            d.presence_kind(),
            PresenceKind::Available {
                show: Show::Dnd,
                status: Some("Don't Disturb Please!".into())
            }
        );
    }

    #[test]
    fn closed_tuple_is_unavailable_and_other_roots_are_refused() {
        let doc = b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'><tuple id='t'><status><basic>closed</basic></status></tuple></presence>";
        assert_eq!(
            parse(doc, &LIMITS).unwrap().presence_kind(),
            PresenceKind::Unavailable { status: None }
        );
        assert_eq!(
            parse(b"<presence/>", &LIMITS),
            Err(PidfError::Xml(XmlError::WrongRoot))
        );
    }

    #[test]
    fn built_documents_escape_and_read_back() {
        let kind = PresenceKind::Available {
            show: Show::ExtendedAway,
            status: Some("<b>out</b> & \"about\"\0".into()),
        };
        let body = build("sip:bob@hub.test", &kind).unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(!text.contains("<b>"));
        assert!(!text.contains('\0'));
        let back = parse(&body, &LIMITS).unwrap();
        assert_eq!(back.entity, "sip:bob@hub.test");
        assert_eq!(
            back.presence_kind(),
            PresenceKind::Available {
                show: Show::ExtendedAway,
                status: Some("<b>out</b> & \"about\"".into())
            }
        );
        assert_eq!(
            build("sip:x@y", &PresenceKind::Probe),
            Err(PidfError::Probe)
        );
    }
}
