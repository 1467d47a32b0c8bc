//! Incremental reader of one XML stream from an untrusted peer: yields the stream header, then each
//! complete top-level element, with every limit checked before the bytes behind it are kept.
//!
//! Built on rxml's raw parser (which already refuses DTDs, entity declarations, comments,
//! processing instructions, invalid UTF-8 and over-long tokens). rxml's namespace resolver is not
//! public and collects every attribute of an element before returning it, so this reader resolves
//! namespaces itself: each raw event is checked against [`Limits`] as it arrives, before anything
//! is kept, and the parser is never handed more input than the remaining stanza budget plus one
//! byte.

use minidom::Element;
use rxml::error::EndOrError;
use rxml::{Namespace, NcName, Parse, RawEvent, RawParser, WithOptions};

use crate::ns;

/// Limits applied to every stanza (and to the stream header) read from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza or negotiation element), in bytes on the wire. Whitespace
    /// between stanzas does not count.
    pub max_stanza_bytes: usize,
    /// Deepest nesting inside a stanza; the stanza element itself is depth 1.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    pub max_attributes: usize,
    /// Longest element or attribute name (`prefix:local`), in bytes.
    pub max_name_bytes: usize,
    /// Most elements inside one stanza, the stanza included.
    pub max_elements: usize,
    /// Longest single token rxml buffers (an attribute value, a name; text is split at this size).
    pub max_token_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
            max_name_bytes: 256,
            max_elements: 4096,
            max_token_bytes: 8 * 1024,
        }
    }
}

/// Why a stream cannot be read any further. Each maps to one stream error condition
/// (see [`crate::StreamCondition`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("XML is not well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted XML construct (DTD, entity, comment or processing instruction): {0}")]
    Restricted(String),
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} attributes on one element")]
    TooManyAttributes(usize),
    #[error("more than {0} elements in one stanza")]
    TooManyElements(usize),
    #[error("a name or value longer than allowed")]
    TooLong,
    #[error("the stream root is not <stream:stream> in the streams namespace")]
    InvalidNamespace,
    #[error("character data at stream level")]
    TextAtStreamLevel,
}

/// Attributes of a peer's `<stream:stream>` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

/// One complete item of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadEvent {
    Header(StreamHeader),
    /// A complete top-level element. Elements in `jabber:server` are already in `jabber:client`.
    Element(Element),
    /// `</stream:stream>`.
    End,
}

/// An element whose head (`<name attr=…`) is being read.
struct Head {
    prefix: Option<NcName>,
    local: NcName,
    declarations: Vec<(Option<NcName>, String)>,
    attributes: Vec<(Option<NcName>, NcName, String)>,
}

/// Incremental reader; feed it with [`StreamReader::read`] until it returns `Ok(None)`.
pub struct StreamReader {
    raw: RawParser,
    limits: Limits,
    /// Elements open, the stream root included (the root is depth 1, a stanza depth 2).
    depth: usize,
    elements: usize,
    /// Bytes consumed since the last complete top-level item.
    unit_bytes: usize,
    header_seen: bool,
    ended: bool,
    head: Option<Head>,
    /// Namespace declarations of each open element, the stream root first.
    scopes: Vec<Vec<(Option<NcName>, String)>>,
    /// Open elements of the stanza being read.
    stack: Vec<Element>,
    failed: Option<ReadError>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("depth", &self.depth)
            .field("unit_bytes", &self.unit_bytes)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    pub fn new(limits: Limits) -> StreamReader {
        let options = rxml::Options {
            max_token_length: limits.max_token_bytes.max(64),
            ..rxml::Options::default()
        };
        let mut raw = RawParser::with_options(options);
        // Text is handed over as soon as it is read, so that stream-level text is refused at once.
        raw.set_text_buffering(false);
        StreamReader {
            raw,
            limits,
            depth: 0,
            elements: 0,
            unit_bytes: 0,
            header_seen: false,
            ended: false,
            head: None,
            scopes: Vec::new(),
            stack: Vec::new(),
            failed: None,
        }
    }

    /// True while part of a top-level element has been read but not all of it.
    pub fn in_partial_element(&self) -> bool {
        self.header_seen && !self.ended && (self.depth > 1 || self.head.is_some())
    }

    /// Reads the next complete item from `input`, advancing it past the bytes used. `Ok(None)`
    /// means every byte was used and more are needed. After an error, every call returns it again.
    pub fn read(&mut self, input: &mut &[u8]) -> Result<Option<ReadEvent>, ReadError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.read_inner(input);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.stack.clear();
            self.head = None;
        }
        result
    }

    fn read_inner(&mut self, input: &mut &[u8]) -> Result<Option<ReadEvent>, ReadError> {
        loop {
            // Called even with no input left: rxml may hold queued events (the end of `<a/>`).
            if self.ended {
                return Ok(None);
            }
            let budget = self
                .limits
                .max_stanza_bytes
                .saturating_sub(self.unit_bytes)
                .saturating_add(1);
            let take = input.len().min(budget);
            let mut slice: &[u8] = input.get(..take).unwrap_or(input);
            let before = slice.len();
            let result = self.raw.parse(&mut slice, false);
            let consumed = before - slice.len();
            *input = input.get(consumed..).unwrap_or(&[]);
            self.unit_bytes = self.unit_bytes.saturating_add(consumed);
            if self.unit_bytes > self.limits.max_stanza_bytes {
                return Err(ReadError::TooLarge(self.limits.max_stanza_bytes));
            }
            match result {
                Ok(Some(ev)) => {
                    if let Some(item) = self.on_event(ev)? {
                        return Ok(Some(item));
                    }
                }
                Ok(None) => {
                    self.ended = true;
                    return Ok(None);
                }
                Err(EndOrError::NeedMoreData) => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                }
                Err(EndOrError::Error(e)) => return Err(map_rxml(e)),
            }
        }
    }

    fn on_event(&mut self, ev: RawEvent) -> Result<Option<ReadEvent>, ReadError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(_, (prefix, local)) => {
                self.depth += 1;
                if self.depth > self.limits.max_depth.saturating_add(1) {
                    return Err(ReadError::TooDeep(self.limits.max_depth));
                }
                if self.depth > 1 {
                    self.elements += 1;
                    if self.elements > self.limits.max_elements {
                        return Err(ReadError::TooManyElements(self.limits.max_elements));
                    }
                }
                check_name(prefix.as_ref(), &local, &self.limits)?;
                self.head = Some(Head {
                    prefix,
                    local,
                    declarations: Vec::new(),
                    attributes: Vec::new(),
                });
                Ok(None)
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                check_name(prefix.as_ref(), &local, &self.limits)?;
                let Some(head) = self.head.as_mut() else {
                    return Err(ReadError::NotWellFormed("attribute outside a tag".into()));
                };
                if head.declarations.len() + head.attributes.len() >= self.limits.max_attributes {
                    return Err(ReadError::TooManyAttributes(self.limits.max_attributes));
                }
                match (prefix, local) {
                    (None, local) if local.as_str() == "xmlns" => {
                        head.declarations.push((None, value))
                    }
                    (Some(p), local) if p.as_str() == "xmlns" => {
                        head.declarations.push((Some(local), value))
                    }
                    (prefix, local) => head.attributes.push((prefix, local, value)),
                }
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => {
                let Some(head) = self.head.take() else {
                    return Err(ReadError::NotWellFormed("tag end outside a tag".into()));
                };
                self.scopes.push(head.declarations);
                let namespace = self.resolve(head.prefix.as_ref(), true)?;
                let mut attrs = rxml::AttrMap::new();
                for (prefix, local, value) in head.attributes {
                    let attr_ns = match &prefix {
                        None => Namespace::none().clone(),
                        Some(_) => Namespace::from(self.resolve(prefix.as_ref(), false)?),
                    };
                    if attrs.insert(attr_ns, local, value).is_some() {
                        return Err(ReadError::NotWellFormed("duplicate attribute".into()));
                    }
                }
                if !self.header_seen {
                    return self.on_root(head.local, namespace, attrs).map(Some);
                }
                let namespace = if namespace == ns::SERVER {
                    ns::CLIENT.to_string()
                } else {
                    namespace
                };
                let mut el = Element::bare(head.local.as_str(), namespace);
                *el.attrs_mut() = attrs;
                self.stack.push(el);
                Ok(None)
            }
            RawEvent::Text(_, text) => {
                match self.stack.last_mut() {
                    Some(top) => top.append_text(text.as_str()),
                    None => {
                        if !text
                            .as_str()
                            .chars()
                            .all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
                        {
                            return Err(ReadError::TextAtStreamLevel);
                        }
                        // Whitespace between stanzas (keepalives) completes a unit of its own.
                        self.unit_bytes = 0;
                    }
                }
                Ok(None)
            }
            RawEvent::ElementFoot(_) => {
                self.depth = self.depth.saturating_sub(1);
                self.scopes.pop();
                let Some(el) = self.stack.pop() else {
                    self.ended = true;
                    return Ok(Some(ReadEvent::End));
                };
                match self.stack.last_mut() {
                    Some(parent) => {
                        parent.append_child(el);
                        Ok(None)
                    }
                    None => {
                        self.unit_bytes = 0;
                        self.elements = 0;
                        Ok(Some(ReadEvent::Element(el)))
                    }
                }
            }
        }
    }

    /// Looks a prefix up in the open scopes; `None` is the default namespace for elements.
    fn resolve(&self, prefix: Option<&NcName>, element: bool) -> Result<String, ReadError> {
        if let Some(p) = prefix {
            if p.as_str() == "xml" {
                return Ok(rxml::XMLNS_XML.to_string());
            }
        } else if !element {
            return Ok(String::new());
        }
        for scope in self.scopes.iter().rev() {
            for (declared, uri) in scope.iter().rev() {
                if declared.as_ref().map(|d| d.as_str()) == prefix.map(|p| p.as_str()) {
                    return Ok(uri.clone());
                }
            }
        }
        match prefix {
            None => Ok(String::new()),
            Some(p) => Err(ReadError::NotWellFormed(format!(
                "undeclared namespace prefix {}",
                p.as_str()
            ))),
        }
    }

    fn on_root(
        &mut self,
        local: NcName,
        namespace: String,
        attrs: rxml::AttrMap,
    ) -> Result<ReadEvent, ReadError> {
        if local.as_str() != "stream" || namespace != ns::STREAM {
            return Err(ReadError::InvalidNamespace);
        }
        let mut header = StreamHeader::default();
        for ((attr_ns, attr_name), value) in attrs.into_iter() {
            if attr_ns.is_none() {
                match attr_name.as_str() {
                    "from" => header.from = Some(value),
                    "to" => header.to = Some(value),
                    "id" => header.id = Some(value),
                    "version" => header.version = Some(value),
                    _ => {}
                }
            } else if attr_ns.as_str() == rxml::XMLNS_XML && attr_name.as_str() == "lang" {
                header.lang = Some(value);
            }
        }
        self.header_seen = true;
        self.unit_bytes = 0;
        Ok(ReadEvent::Header(header))
    }
}

fn check_name(prefix: Option<&NcName>, local: &NcName, limits: &Limits) -> Result<(), ReadError> {
    if prefix.map_or(0, |p| p.len()).saturating_add(local.len()) > limits.max_name_bytes {
        return Err(ReadError::TooLong);
    }
    Ok(())
}

fn map_rxml(e: rxml::Error) -> ReadError {
    match e {
        rxml::Error::RestrictedXml("long name or reference") => ReadError::TooLong,
        rxml::Error::RestrictedXml("event too long") => ReadError::TooLong,
        rxml::Error::RestrictedXml(what) => ReadError::Restricted(what.to_string()),
        // rxml reports `<!DOCTYPE` (and any other `<!` that is not a comment or CDATA) this way.
        rxml::Error::InvalidSyntax(what) if what.contains("cdata or comment") => {
            ReadError::Restricted("document type declaration".into())
        }
        rxml::Error::UndeclaredEntity => ReadError::Restricted("entity reference".into()),
        rxml::Error::InvalidUtf8Byte(_) => ReadError::InvalidUtf8,
        other => ReadError::NotWellFormed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        from='corp-a.test' to='hub.test' version='1.0'>";

    fn read_all(reader: &mut StreamReader, mut input: &[u8]) -> Result<Vec<ReadEvent>, ReadError> {
        let mut out = Vec::new();
        while let Some(ev) = reader.read(&mut input)? {
            out.push(ev);
        }
        Ok(out)
    }

    fn with_header(rest: &[u8]) -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn header_and_stanzas_byte_by_byte() {
        let input = with_header(
            b"<message to='bob@hub.test' from='alice@corp-a.test'><body>hi &amp; bye</body></message> \n<db:result from='corp-a.test' to='hub.test'>abc</db:result></stream:stream>",
        );
        let mut reader = StreamReader::new(Limits::default());
        let mut events = Vec::new();
        for byte in input.chunks(1) {
            let mut b = byte;
            while let Some(ev) = reader.read(&mut b).unwrap() {
                events.push(ev);
            }
            assert!(b.is_empty());
        }
        assert_eq!(events.len(), 4);
        let ReadEvent::Header(h) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(h.from.as_deref(), Some("corp-a.test"));
        assert_eq!(h.to.as_deref(), Some("hub.test"));
        assert_eq!(h.version.as_deref(), Some("1.0"));
        let ReadEvent::Element(m) = &events[1] else {
            panic!()
        };
        assert!(m.is("message", ns::CLIENT));
        assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "hi & bye");
        let ReadEvent::Element(db) = &events[2] else {
            panic!()
        };
        assert!(db.is("result", ns::DIALBACK));
        assert_eq!(db.text(), "abc");
        assert_eq!(events[3], ReadEvent::End);
    }

    #[test]
    fn self_closing_element_at_end_of_input_is_complete() {
        let input = with_header(b"<db:result from='a.test' to='b.test' type='valid'/>");
        let mut reader = StreamReader::new(Limits::default());
        let events = read_all(&mut reader, &input).unwrap();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn stops_right_after_each_element() {
        let input = with_header(b"<a xmlns='x'/><b xmlns='y'/>");
        let mut reader = StreamReader::new(Limits::default());
        let mut rest: &[u8] = &input;
        assert!(matches!(
            reader.read(&mut rest),
            Ok(Some(ReadEvent::Header(_)))
        ));
        assert!(matches!(
            reader.read(&mut rest),
            Ok(Some(ReadEvent::Element(_)))
        ));
        assert_eq!(rest, b"<b xmlns='y'/>");
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let laughs = include_bytes!("../testdata/billion_laughs.xml");
        let mut reader = StreamReader::new(Limits::default());
        let r = read_all(&mut reader, laughs);
        assert!(matches!(r, Err(ReadError::Restricted(_))), "{r:?}");
        let mut reader = StreamReader::new(Limits::default());
        let input = with_header(b"<message><body>&lol9;</body></message>");
        assert!(matches!(
            read_all(&mut reader, &input),
            Err(ReadError::Restricted(_))
        ));
    }

    #[test]
    fn refuses_comments_and_processing_instructions() {
        for bad in [
            &b"<!-- hi -->"[..],
            b"<?php echo 1; ?>",
            b"<message><!--x--></message>",
        ] {
            let mut reader = StreamReader::new(Limits::default());
            let input = with_header(bad);
            assert!(
                matches!(read_all(&mut reader, &input), Err(ReadError::Restricted(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn refuses_invalid_utf8() {
        let mut reader = StreamReader::new(Limits::default());
        let input = with_header(b"<message><body>\xff\xfe</body></message>");
        assert_eq!(read_all(&mut reader, &input), Err(ReadError::InvalidUtf8));
    }

    #[test]
    fn deep_nesting_is_refused_at_the_limit() {
        let limits = Limits::default();
        let ok = format!("{}{}", "<a>".repeat(32), "</a>".repeat(32));
        let mut reader = StreamReader::new(limits.clone());
        assert_eq!(
            read_all(&mut reader, &with_header(ok.as_bytes()))
                .unwrap()
                .len(),
            2
        );
        let deep = "<a>".repeat(100_000);
        let mut reader = StreamReader::new(limits);
        assert_eq!(
            read_all(&mut reader, &with_header(deep.as_bytes())),
            Err(ReadError::TooDeep(32))
        );
    }

    #[test]
    fn attribute_flood_is_refused_before_the_map_is_built() {
        let mut s = String::from("<message");
        for i in 0..20_000 {
            s.push_str(&format!(" a{i}='x'"));
        }
        s.push_str("/>");
        let mut reader = StreamReader::new(Limits::default());
        assert_eq!(
            read_all(&mut reader, &with_header(s.as_bytes())),
            Err(ReadError::TooManyAttributes(64))
        );
    }

    #[test]
    fn ten_megabyte_stanza_is_refused_without_reading_it_all() {
        let mut input = with_header(b"<message><body>");
        let header_len = input.len();
        input.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        let mut reader = StreamReader::new(Limits::default());
        let mut rest: &[u8] = &input;
        assert!(matches!(
            reader.read(&mut rest),
            Ok(Some(ReadEvent::Header(_)))
        ));
        assert_eq!(reader.read(&mut rest), Err(ReadError::TooLarge(256 * 1024)));
        let used = input.len() - rest.len() - header_len;
        assert!(used <= 256 * 1024 + 16, "read {used} bytes");
    }

    #[test]
    fn whitespace_between_stanzas_does_not_count() {
        // The header (~190 bytes) counts too.
        let limits = Limits {
            max_stanza_bytes: 250,
            ..Limits::default()
        };
        let mut input = with_header(b"");
        for _ in 0..50 {
            input.extend_from_slice(b"  \n <a xmlns='x'>0123456789</a>");
        }
        let mut reader = StreamReader::new(limits);
        assert_eq!(read_all(&mut reader, &input).unwrap().len(), 51);
    }

    #[test]
    fn long_names_and_text_at_stream_level_are_refused() {
        let name = "n".repeat(300);
        let input = with_header(format!("<{name}/>").as_bytes());
        let mut reader = StreamReader::new(Limits::default());
        assert_eq!(read_all(&mut reader, &input), Err(ReadError::TooLong));
        let mut reader = StreamReader::new(Limits::default());
        assert_eq!(
            read_all(&mut reader, &with_header(b"hello")),
            Err(ReadError::TextAtStreamLevel)
        );
    }

    #[test]
    fn wrong_root_is_refused() {
        let mut reader = StreamReader::new(Limits::default());
        assert_eq!(
            read_all(&mut reader, b"<stream xmlns='jabber:server'>"),
            Err(ReadError::InvalidNamespace)
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut reader = StreamReader::new(Limits::default());
        let input = with_header(b"<a></b>");
        assert!(read_all(&mut reader, &input).is_err());
        let mut more: &[u8] = b"<c/>";
        assert!(reader.read(&mut more).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut reader = StreamReader::new(Limits::default());
            let _ = read_all(&mut reader, &with_header(&bytes));
        }
    }
}
