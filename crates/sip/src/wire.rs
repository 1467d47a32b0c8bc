//! Bytes → [`SipMessage`]: datagram parsing and the stream framer for TCP/TLS, with limits.
//!
//! Framing and header-section parsing are delegated to `sipx-sip` behind the [`SipParser`]
//! trait; its output is converted to our own types and checked again (UTF-8 only, no NUL, the
//! headers every transaction needs). Nothing here panics on any input.

use bytes::Bytes;

use crate::message::{canonical_name, Header, Method, SipMessage, StartLine};

/// Bounds on what is accepted from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, header section and body together (default 64 KiB).
    pub max_message_bytes: usize,
    /// Most header fields (default 128).
    pub max_headers: usize,
    /// Longest header field, folding included (default 8 KiB).
    pub max_header_line: usize,
    /// Most continuation lines in one folded header (default 16).
    pub max_folding_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_headers: 128,
            max_header_line: 8 * 1024,
            max_folding_lines: 16,
        }
    }
}

/// Why bytes are not a message. [`ParseError::status`] is the answer to send, if any can be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a limit was exceeded: {0}")]
    Limit(&'static str),
    #[error("the message cannot be framed: {0}")]
    Framing(String),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("a start line or header is not UTF-8 or holds a NUL")]
    BadBytes,
}

impl ParseError {
    /// The SIP status this error maps to (RFC 3261 §21): 513 for size, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Limit(_) => 513,
            _ => 400,
        }
    }
}

/// A SIP parser we can swap out: one datagram at a time, or a stream framer per connection.
pub trait SipParser {
    type Framer: StreamDecoder;
    /// One message from one datagram. Content-Length is optional here (RFC 3261 §18.3):
    /// without it the body runs to the end of the datagram; with it, octets past it are ignored.
    fn parse_datagram(&self, data: &[u8]) -> Result<SipMessage, ParseError>;
    /// A framer for one TCP/TLS connection, where Content-Length is required.
    fn framer(&self) -> Self::Framer;
}

/// Incremental framing of a byte stream.
pub trait StreamDecoder {
    /// Appends bytes and returns the messages they completed. An error is fatal for the
    /// connection: framing is lost, close it.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SipMessage>, ParseError>;
    /// Bytes held for an incomplete message (a driver can time out a slow sender).
    fn pending(&self) -> usize;
    /// CRLF pairs seen between messages since the last call (RFC 5626 §4.4.1: CRLFCRLF is a
    /// keep-alive ping, to be answered with one CRLF).
    fn take_keepalives(&mut self) -> usize {
        0
    }
}

/// The production parser: `sipx-sip` framing, our types and checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SipxParser {
    pub limits: Limits,
}

impl SipxParser {
    pub fn new(limits: Limits) -> Self {
        SipxParser { limits }
    }

    fn sipx_limits(&self) -> sipx_sip::Limits {
        sipx_sip::Limits {
            max_message_bytes: self.limits.max_message_bytes,
            max_body_bytes: self.limits.max_message_bytes,
            max_headers: self.limits.max_headers,
            max_header_bytes: self.limits.max_header_line,
            max_folding_lines: self.limits.max_folding_lines,
        }
    }
}

impl SipParser for SipxParser {
    type Framer = StreamFramer;

    fn parse_datagram(&self, data: &[u8]) -> Result<SipMessage, ParseError> {
        if data.len() > self.limits.max_message_bytes {
            return Err(ParseError::Limit("message size"));
        }
        let msg = sipx_sip::parse_datagram(Bytes::copy_from_slice(data), &self.sipx_limits())
            .map_err(convert_error)?;
        convert(&msg)
    }

    fn framer(&self) -> StreamFramer {
        StreamFramer {
            inner: sipx_sip::StreamParser::new(self.sipx_limits()),
            failed: None,
        }
    }
}

/// Frames SIP messages out of a TCP/TLS byte stream (Content-Length required, CRLF
/// keep-alives between messages ignored, at most one partial message held).
#[derive(Debug)]
pub struct StreamFramer {
    inner: sipx_sip::StreamParser,
    failed: Option<ParseError>,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        SipxParser::new(limits).framer()
    }
}

impl StreamDecoder for StreamFramer {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SipMessage>, ParseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self
            .inner
            .push(chunk)
            .map_err(convert_error)
            .and_then(|msgs| msgs.iter().map(convert).collect::<Result<Vec<_>, _>>());
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    fn take_keepalives(&mut self) -> usize {
        self.inner.take_keepalives()
    }
}

fn convert_error(e: sipx_sip::error::ParseError) -> ParseError {
    use sipx_sip::error::{LimitKind as L, ParseError as P};
    match e {
        P::Limit { limit, .. } => ParseError::Limit(match limit {
            L::Headers => "header count",
            L::HeaderBytes => "header line length",
            L::FoldingLines => "folded lines",
            L::BodyBytes => "body size",
            _ => "message size",
        }),
        P::Framing(f) => ParseError::Framing(f.to_string()),
        other => ParseError::Malformed(other.to_string()),
    }
}

fn text(bytes: &[u8]) -> Result<&str, ParseError> {
    let s = std::str::from_utf8(bytes).map_err(|_| ParseError::BadBytes)?;
    if s.contains('\0') {
        return Err(ParseError::BadBytes);
    }
    Ok(s)
}

/// sipx message → ours. Re-checks every header through [`Header::new`].
fn convert(msg: &sipx_sip::Message) -> Result<SipMessage, ParseError> {
    let start = match msg {
        sipx_sip::Message::Request(r) => {
            let method = text(r.method.as_bytes())?;
            let method = Method::parse(method).map_err(|e| ParseError::Malformed(e.to_string()))?;
            let uri = r.uri.to_bytes();
            let uri = text(&uri)?.to_string();
            if !r.version.is_supported() {
                return Err(ParseError::Malformed("unsupported SIP version".into()));
            }
            StartLine::Request { method, uri }
        }
        sipx_sip::Message::Response(r) => {
            if !r.version.is_supported() {
                return Err(ParseError::Malformed("unsupported SIP version".into()));
            }
            StartLine::Response {
                code: r.status.code(),
                reason: text(&r.reason)?.to_string(),
            }
        }
    };
    let mut headers = Vec::with_capacity(msg.headers().len());
    for h in msg.headers().iter() {
        let value = h.value();
        let value = text(&value)?;
        let name = match h.name() {
            sipx_sip::HeaderName::Other(raw) => text(raw)?.to_string(),
            known => text(known.canonical())?.to_string(),
        };
        let header = Header::new(&canonical_name(&name), value)
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        headers.push(header);
    }
    let mut out = SipMessage::from_parts(start, headers, msg.body().clone());
    // Our serialiser computes Content-Length from the body; keep the parsed value out.
    out.remove("Content-Length");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> SipxParser {
        SipxParser::default()
    }

    #[test]
    fn udp_without_content_length_takes_the_rest() {
        let m = p()
            .parse_datagram(b"MESSAGE sip:bob@hub.test SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\r\nhello")
            .unwrap();
        assert_eq!(m.body().as_ref(), b"hello");
        assert_eq!(m.header("Via"), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
    }

    #[test]
    fn stream_requires_content_length() {
        let mut f = p().framer();
        let e = f
            .push(b"MESSAGE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/TCP a\r\n\r\nhello")
            .unwrap_err();
        assert!(matches!(e, ParseError::Framing(_)));
        // and stays failed
        assert!(f.push(b"\r\n").is_err());
    }

    #[test]
    fn stream_frames_split_and_joined_messages() {
        let one = b"OPTIONS sip:hub.test SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bKx\r\nl: 3\r\n\r\nabc";
        let mut all = Vec::new();
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(one);
        all.extend_from_slice(b"\r\n");
        all.extend_from_slice(one);
        for split in 0..all.len() {
            let mut f = p().framer();
            let (a, b) = all.split_at(split);
            let mut got = f.push(a).unwrap();
            got.extend(f.push(b).unwrap());
            assert_eq!(got.len(), 2, "split at {split}");
            assert!(got.iter().all(|m| m.body().as_ref() == b"abc"));
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert_eq!(
            p().parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nSubject: a\0b\r\n\r\n"),
            Err(ParseError::BadBytes)
        );
        assert_eq!(
            p().parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nSubject: \xff\r\n\r\n"),
            Err(ParseError::BadBytes)
        );
    }
}
