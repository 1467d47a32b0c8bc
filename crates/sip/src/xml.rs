//! A small namespace-resolved XML tree with limits, for SIMPLE bodies (PIDF, isComposing).
//! Refuses DOCTYPE (no entity expansion), non-UTF-8 encodings, too deep or too large documents.

use quick_xml::events::Event as X;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Bounds on a SIMPLE XML body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
    pub max_text: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_bytes: 32 * 1024,
            max_depth: 16,
            max_elements: 512,
            max_attributes: 16,
            max_text: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML body exceeds a limit: {0}")]
    Limit(&'static str),
    #[error("XML body is not well-formed: {0}")]
    Syntax(String),
    #[error("XML body uses a forbidden construct: {0}")]
    Forbidden(&'static str),
    #[error("unexpected root element")]
    WrongRoot,
}

/// An element: namespace URI (empty if none), local name, attributes, text and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every descendant (depth-first), self excluded.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut stack: Vec<&Element> = self.children.iter().rev().collect();
        while let Some(e) = stack.pop() {
            out.push(e);
            stack.extend(e.children.iter().rev());
        }
        out
    }
}

fn syntax(e: impl std::fmt::Display) -> XmlError {
    XmlError::Syntax(e.to_string())
}

fn resolve_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a whole document into its root element.
pub fn parse(input: &[u8], limits: &XmlLimits) -> Result<Element, XmlError> {
    if input.len() > limits.max_bytes {
        return Err(XmlError::Limit("size"));
    }
    let text = std::str::from_utf8(input).map_err(|_| XmlError::Forbidden("non-UTF-8 bytes"))?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(syntax)?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(_) => return Err(XmlError::Syntax("unbound prefix".into())),
        };
        match event {
            X::Start(ref e) | X::Empty(ref e) => {
                if root.is_some() {
                    return Err(XmlError::Syntax("content after the root".into()));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(XmlError::Limit("elements"));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::Limit("depth"));
                }
                let mut el = Element {
                    ns,
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(syntax)?;
                    if attr.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    if el.attrs.len() >= limits.max_attributes {
                        return Err(XmlError::Limit("attributes"));
                    }
                    let value = attr.unescape_value().map_err(syntax)?;
                    if value.len() > limits.max_text {
                        return Err(XmlError::Limit("attribute length"));
                    }
                    el.attrs.push((
                        String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned(),
                        value.into_owned(),
                    ));
                }
                if matches!(event, X::Empty(_)) {
                    close(el, &mut stack, &mut root);
                } else {
                    stack.push(el);
                }
            }
            X::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Syntax("unbalanced end tag".into()))?;
                close(el, &mut stack, &mut root);
            }
            X::Text(t) => {
                let t = t.decode().map_err(syntax)?;
                push_text(&mut stack, &t, limits)?;
            }
            X::CData(t) => {
                let t = t.decode().map_err(syntax)?;
                push_text(&mut stack, &t, limits)?;
            }
            X::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(syntax)? {
                    Some(c) => c,
                    None => {
                        let name = r.decode().map_err(syntax)?;
                        resolve_entity(&name).ok_or(XmlError::Forbidden("undeclared entity"))?
                    }
                };
                push_text(&mut stack, c.encode_utf8(&mut [0; 4]), limits)?;
            }
            X::DocType(_) => return Err(XmlError::Forbidden("DOCTYPE")),
            X::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(syntax)?;
                    let enc = String::from_utf8_lossy(&enc).to_ascii_lowercase();
                    if enc != "utf-8" && enc != "utf8" {
                        return Err(XmlError::Forbidden("an encoding other than UTF-8"));
                    }
                }
            }
            X::PI(_) => return Err(XmlError::Forbidden("processing instruction")),
            X::Comment(_) => {}
            X::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Syntax("unclosed element".into()));
    }
    root.ok_or_else(|| XmlError::Syntax("no root element".into()))
}

fn close(el: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], t: &str, limits: &XmlLimits) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(el) => {
            if el.text.len() + t.len() > limits.max_text {
                return Err(XmlError::Limit("text length"));
            }
            el.text.push_str(t);
            Ok(())
        }
        None if t.trim().is_empty() => Ok(()),
        None => Err(XmlError::Syntax("text outside the root".into())),
    }
}

/// Text from elsewhere made legal for XML 1.0: characters XML cannot carry are dropped.
/// (Escaping of `<`, `&`, quotes is the writer's job.)
pub fn xml_safe(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || ('\u{20}'..='\u{D7FF}').contains(&c)
                || ('\u{E000}'..='\u{FFFD}').contains(&c)
                || c >= '\u{10000}'
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_and_entities() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<p:a xmlns:p="urn:x" xmlns="urn:d" k="&lt;v&gt;"><b>1 &amp; 2 &#65;<![CDATA[<c>]]></b><p:c/></p:a>"#;
        let root = parse(doc, &XmlLimits::default()).unwrap();
        assert!(root.is("urn:x", "a"));
        assert_eq!(root.attr("k"), Some("<v>"));
        let b = root.child("urn:d", "b").unwrap();
        assert_eq!(b.text, "1 & 2 A<c>");
        assert!(root.child("urn:x", "c").is_some());
    }

    #[test]
    fn hostile_documents_are_refused() {
        let l = XmlLimits::default();
        let doctype = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>"#;
        assert_eq!(parse(doctype, &l), Err(XmlError::Forbidden("DOCTYPE")));
        assert!(matches!(
            parse(b"<a>&x;</a>", &l),
            Err(XmlError::Forbidden(_) | XmlError::Syntax(_))
        ));
        let latin = br#"<?xml version="1.0" encoding="ISO-8859-1"?><a/>"#;
        assert!(matches!(parse(latin, &l), Err(XmlError::Forbidden(_))));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(deep.as_bytes(), &l), Err(XmlError::Limit("depth")));
        let wide = format!("<a>{}</a>", "<b/>".repeat(1000));
        assert_eq!(parse(wide.as_bytes(), &l), Err(XmlError::Limit("elements")));
        let attrs: String = (0..100).map(|i| format!(" a{i}='x'")).collect();
        assert_eq!(
            parse(format!("<a{attrs}/>").as_bytes(), &l),
            Err(XmlError::Limit("attributes"))
        );
        assert!(parse(b"<a><b></a>", &l).is_err());
        assert!(parse(b"<a/><b/>", &l).is_err());
        assert!(parse(b"", &l).is_err());
        assert!(parse(b"<p:a/>", &l).is_err());
        assert!(parse(b"\xff<a/>", &l).is_err());
    }

    #[test]
    fn xml_safe_drops_illegal_characters() {
        assert_eq!(xml_safe("a\0b\u{1}c\u{FFFE}d\te"), "abcd\te");
    }
}
