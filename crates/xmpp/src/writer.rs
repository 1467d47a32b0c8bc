//! Serialisation of everything this edge writes: stream framing, negotiation elements and stanzas.
//! Stanzas are always written from parsed values, never from received bytes.

use minidom::{Element, Node};

use crate::error::StreamCondition;
use crate::ns;

/// Escapes text for use inside an attribute value delimited by `'` or in character data.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Opens a stream. `id` is set by the receiving side only.
pub fn stream_header(from: &str, to: &str, id: Option<&str>) -> Vec<u8> {
    let mut s = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'",
    );
    if !from.is_empty() {
        s.push_str(&format!(" from='{}'", escape(from)));
    }
    if !to.is_empty() {
        s.push_str(&format!(" to='{}'", escape(to)));
    }
    if let Some(id) = id {
        s.push_str(&format!(" id='{}'", escape(id)));
    }
    s.push_str(" version='1.0'>");
    s.into_bytes()
}

/// A stream error followed by the closing tag: nothing may follow it on the stream.
pub fn stream_error(condition: StreamCondition) -> Vec<u8> {
    format!(
        "<stream:error><{} xmlns='{}'/></stream:error></stream:stream>",
        condition.as_str(),
        ns::STREAM_ERRORS
    )
    .into_bytes()
}

pub const STREAM_CLOSE: &[u8] = b"</stream:stream>";

/// Stream features offered by a receiving server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// `Some(true)`: STARTTLS offered and required.
    pub starttls: Option<bool>,
    pub sasl_external: bool,
    pub dialback: bool,
}

impl Features {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut s = String::from("<stream:features>");
        match self.starttls {
            Some(true) => s.push_str(&format!(
                "<starttls xmlns='{}'><required/></starttls>",
                ns::TLS
            )),
            Some(false) => s.push_str(&format!("<starttls xmlns='{}'/>", ns::TLS)),
            None => {}
        }
        if self.sasl_external {
            s.push_str(&format!(
                "<mechanisms xmlns='{}'><mechanism>EXTERNAL</mechanism></mechanisms>",
                ns::SASL
            ));
        }
        if self.dialback {
            s.push_str(&format!(
                "<dialback xmlns='{}'><errors/></dialback>",
                ns::DIALBACK_FEATURE
            ));
        }
        s.push_str("</stream:features>");
        s.into_bytes()
    }

    /// Reads a `<stream:features/>` element received from a peer.
    pub fn parse(el: &Element) -> Features {
        let starttls = el
            .get_child("starttls", ns::TLS)
            .map(|t| t.has_child("required", ns::TLS));
        let sasl_external = el.get_child("mechanisms", ns::SASL).is_some_and(|m| {
            m.children()
                .any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == "EXTERNAL")
        });
        let dialback = el.has_child("dialback", ns::DIALBACK_FEATURE);
        Features {
            starttls,
            sasl_external,
            dialback,
        }
    }
}

/// Serialises a stanza built in `jabber:client` (as xmpp-parsers builds it) into `jabber:server`.
pub fn stanza(el: &Element) -> Vec<u8> {
    let el = remap(el, ns::CLIENT, ns::SERVER);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every name and namespace came from a parsed value.
    if el.write_to(&mut out).is_err() {
        out.clear();
    }
    out
}

/// Copies `el`, moving every element in namespace `from` into namespace `to`.
pub fn remap(el: &Element, from: &str, to: &str) -> Element {
    let namespace = if el.ns() == from {
        to.to_string()
    } else {
        el.ns()
    };
    let mut copy = Element::bare(el.name(), namespace);
    *copy.attrs_mut() = el.attrs().clone();
    for node in el.nodes() {
        match node {
            Node::Element(child) => {
                copy.append_child(remap(child, from, to));
            }
            Node::Text(text) => copy.append_text(text.as_str()),
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_escapes_attributes() {
        let h = String::from_utf8(stream_header("a.test", "b'.test", Some("x<y"))).unwrap();
        assert!(h.contains("to='b&apos;.test'"));
        assert!(h.contains("id='x&lt;y'"));
    }

    #[test]
    fn features_round_trip() {
        for f in [
            Features {
                starttls: Some(true),
                sasl_external: false,
                dialback: true,
            },
            Features {
                starttls: None,
                sasl_external: true,
                dialback: true,
            },
            Features::default(),
        ] {
            let bytes = f.to_bytes();
            let mut input = crate::writer::stream_header("a.test", "b.test", None);
            input.extend_from_slice(&bytes);
            let mut reader = crate::reader::StreamReader::new(Default::default());
            let mut slice: &[u8] = &input;
            reader.read(&mut slice).unwrap();
            let Some(crate::reader::ReadEvent::Element(el)) = reader.read(&mut slice).unwrap()
            else {
                panic!()
            };
            assert_eq!(Features::parse(&el), f);
        }
    }

    #[test]
    fn stanzas_are_written_in_jabber_server() {
        let el = Element::builder("message", ns::CLIENT)
            .append(Element::builder("body", ns::CLIENT).append("a<b").build())
            .build();
        let s = String::from_utf8(stanza(&el)).unwrap();
        assert!(s.contains("jabber:server"), "{s}");
        assert!(!s.contains("jabber:client"), "{s}");
        assert!(s.contains("a&lt;b"), "{s}");
    }
}
