//! Our own SIP message type: a start line, an ordered list of checked header fields and a body.
//! Every constructor validates, so a value holding CR, LF or NUL can never reach the wire.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// A value refused because it would change the structure of a message (header injection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{0} contains a CR, LF, NUL or other control character")]
    ControlCharacter(&'static str),
    #[error("{0} is not a token")]
    NotAToken(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
}

/// SIP methods; those this crate does not handle travel as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Ack,
    Bye,
    Cancel,
    Info,
    Invite,
    Message,
    Notify,
    Options,
    Prack,
    Publish,
    Refer,
    Register,
    Subscribe,
    Update,
    Other(String),
}

impl Method {
    /// Parses a method token; methods are case-sensitive (RFC 3261 §7.1).
    pub fn parse(token: &str) -> Result<Method, BuildError> {
        Ok(match token {
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "INFO" => Method::Info,
            "INVITE" => Method::Invite,
            "MESSAGE" => Method::Message,
            "NOTIFY" => Method::Notify,
            "OPTIONS" => Method::Options,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "UPDATE" => Method::Update,
            other => {
                check_token(other, "method")?;
                Method::Other(other.to_string())
            }
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Info => "INFO",
            Method::Invite => "INVITE",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
            Method::Options => "OPTIONS",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// One header field: a canonical name (compact forms expanded) and a single-line value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: String,
    value: String,
}

/// Compact forms (RFC 3261 §7.3.3 and the extensions that define one).
const COMPACT: &[(char, &str)] = &[
    ('a', "Accept-Contact"),
    ('b', "Referred-By"),
    ('c', "Content-Type"),
    ('d', "Request-Disposition"),
    ('e', "Content-Encoding"),
    ('f', "From"),
    ('i', "Call-ID"),
    ('j', "Reject-Contact"),
    ('k', "Supported"),
    ('l', "Content-Length"),
    ('m', "Contact"),
    ('n', "Identity-Info"),
    ('o', "Event"),
    ('r', "Refer-To"),
    ('s', "Subject"),
    ('t', "To"),
    ('u', "Allow-Events"),
    ('v', "Via"),
    ('x', "Session-Expires"),
    ('y', "Identity"),
];

/// Long names written in their usual spelling, whatever case arrived.
const KNOWN: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Allow",
    "Authorization",
    "CSeq",
    "Content-Disposition",
    "Content-Language",
    "Date",
    "Expires",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "SIP-ETag",
    "SIP-If-Match",
    "Subscription-State",
    "Timestamp",
    "Unsupported",
    "User-Agent",
    "Warning",
    "WWW-Authenticate",
];

/// Maps a name as it arrived to the name this crate compares and writes.
pub fn canonical_name(name: &str) -> String {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let lower = c.to_ascii_lowercase();
        if let Some((_, long)) = COMPACT.iter().find(|(k, _)| *k == lower) {
            return (*long).to_string();
        }
    }
    if let Some((_, long)) = COMPACT.iter().find(|(_, l)| l.eq_ignore_ascii_case(name)) {
        return (*long).to_string();
    }
    if let Some(known) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        return (*known).to_string();
    }
    name.to_string()
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

pub(crate) fn check_token(s: &str, field: &'static str) -> Result<(), BuildError> {
    if s.is_empty() {
        return Err(BuildError::Empty(field));
    }
    if !s.chars().all(is_token_char) {
        return Err(BuildError::NotAToken(field));
    }
    Ok(())
}

/// Refuses every control character except HTAB: CR, LF and NUL above all.
pub(crate) fn check_line(s: &str, field: &'static str) -> Result<(), BuildError> {
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(BuildError::ControlCharacter(field));
    }
    Ok(())
}

impl Header {
    /// A checked header: the name must be a token, the value a single line.
    pub fn new(name: &str, value: impl Into<String>) -> Result<Header, BuildError> {
        check_token(name, "header name")?;
        let value = value.into();
        check_line(&value, "header value")?;
        Ok(Header {
            name: canonical_name(name),
            value: value.trim().to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// True if this header has the given name (compared as RFC 3261 says: case-insensitively,
    /// compact forms equal to long ones).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(&canonical_name(name))
    }
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    start: StartLine,
    headers: Vec<Header>,
    body: Bytes,
}

impl SipMessage {
    /// A request; `uri` must be a single line without spaces.
    pub fn request(method: Method, uri: &str) -> Result<SipMessage, BuildError> {
        check_line(uri, "Request-URI")?;
        if uri.is_empty() || uri.contains([' ', '\t']) {
            return Err(BuildError::NotAToken("Request-URI"));
        }
        Ok(SipMessage {
            start: StartLine::Request {
                method,
                uri: uri.to_string(),
            },
            headers: Vec::new(),
            body: Bytes::new(),
        })
    }

    /// A response; `code` must lie in 100..=699.
    pub fn response(code: u16, reason: &str) -> Result<SipMessage, BuildError> {
        if !(100..=699).contains(&code) {
            return Err(BuildError::NotAToken("status code"));
        }
        check_line(reason, "reason phrase")?;
        Ok(SipMessage {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers: Vec::new(),
            body: Bytes::new(),
        })
    }

    pub(crate) fn from_parts(start: StartLine, headers: Vec<Header>, body: Bytes) -> SipMessage {
        SipMessage {
            start,
            headers,
            body,
        }
    }

    pub fn start(&self) -> &StartLine {
        &self.start
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Appends a header (checked); returns self for chaining.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Result<SipMessage, BuildError> {
        self.push(name, value)?;
        Ok(self)
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> Result<(), BuildError> {
        let header = Header::new(name, value)?;
        if header.is("Content-Length") {
            // Written from the body at serialisation; never taken from a caller.
            return Ok(());
        }
        self.headers.push(header);
        Ok(())
    }

    pub fn push_header(&mut self, header: Header) {
        if !header.is("Content-Length") {
            self.headers.push(header);
        }
    }

    /// Removes every header of that name.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.is(name));
    }

    /// Sets the body and its Content-Type (checked like any header).
    pub fn set_body(
        &mut self,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(), BuildError> {
        self.remove("Content-Type");
        self.push("Content-Type", content_type)?;
        self.body = body.into();
        Ok(())
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, repeated header fields and comma-joined values alike, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = canonical_name(name);
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(&name))
            .flat_map(|h| split_list(&h.value))
            .collect()
    }

    /// Number of header fields (not values) with that name.
    pub fn count(&self, name: &str) -> usize {
        let name = canonical_name(name);
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(&name))
            .count()
    }

    /// Serialises: start line, headers, a Content-Length computed from the body, the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(uri.as_bytes());
                out.put_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.put_slice(format!("SIP/2.0 {code} ").as_bytes());
                out.put_slice(reason.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        for h in &self.headers {
            out.put_slice(h.name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(h.value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.put_slice(&self.body);
        out.freeze()
    }
}

impl fmt::Display for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Splits a comma-joined header value, respecting quoted strings and `<...>`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth_angle = false;
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '<' => depth_angle = true,
            '>' => depth_angle = false,
            ',' if !depth_angle => {
                let part = value.get(start..i).unwrap_or("").trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value.get(start..).unwrap_or("").trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_names_expand_and_compare_case_insensitively() {
        assert_eq!(canonical_name("v"), "Via");
        assert_eq!(canonical_name("I"), "Call-ID");
        assert_eq!(canonical_name("cAlL-iD"), "Call-ID");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        let h = Header::new("l", "0").unwrap();
        assert!(h.is("content-length"));
    }

    #[test]
    fn values_with_line_breaks_or_nul_are_refused() {
        for bad in ["a\r\nVia: x", "a\nb", "a\rb", "a\0b", "\x1b[0m"] {
            assert!(Header::new("Subject", bad).is_err(), "{bad:?}");
        }
        assert!(Header::new("Bad Name", "x").is_err());
        assert!(Header::new("Bad:Name", "x").is_err());
        assert!(SipMessage::request(Method::Message, "sip:a@b\r\nX: y").is_err());
        assert!(SipMessage::request(Method::Message, "sip:a@b c").is_err());
        assert!(SipMessage::response(200, "OK\r\nX: y").is_err());
        assert!(SipMessage::response(99, "x").is_err());
        assert!(Method::parse("ME SSAGE").is_err());
    }

    #[test]
    fn content_length_comes_from_the_body_only() {
        let mut m = SipMessage::request(Method::Message, "sip:bob@hub.test").unwrap();
        m.push("Content-Length", "999").unwrap();
        m.set_body("text/plain", "hi").unwrap();
        let text = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert!(text.ends_with("Content-Length: 2\r\n\r\nhi"));
        assert_eq!(text.matches("Content-Length").count(), 1);
    }

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""Doe, \"J\"" <sip:a@b;x=1,2>;q=1, <sip:c@d>"#),
            vec![r#""Doe, \"J\"" <sip:a@b;x=1,2>;q=1"#, "<sip:c@d>"]
        );
        assert_eq!(
            split_list("SIP/2.0/UDP a;branch=1 , SIP/2.0/UDP [::1]:5060"),
            vec!["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP [::1]:5060"]
        );
    }
}
