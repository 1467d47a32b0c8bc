//! Answers the driver gives without the endpoint: refusals decided before a request reaches it
//! (unknown partner, missing certificate, rate limit) and a best-effort 400/513 to bytes the
//! parser refused, when enough of the header section survives to address an answer.

use bytes::Bytes;
use entente_sip::headers::{self, NameAddr};
use entente_sip::status::reason;
use entente_sip::wire::{ParseError, SipParser};
use entente_sip::{Method, SipMessage, SipxParser};
use std::net::SocketAddr;

/// A stateless final response to `req` (RFC 3261 §8.2.6): Via, From, Call-ID and CSeq copied,
/// a To tag added. `None` for ACK (never answered) and for requests without those headers.
pub fn stateless(
    req: &SipMessage,
    code: u16,
    warning: Option<&str>,
    host: &str,
    extra: &[(&str, String)],
) -> Option<Bytes> {
    if !req.is_request() || req.method() == Some(&Method::Ack) {
        return None;
    }
    let mut resp = SipMessage::response(code, reason(code)).ok()?;
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        if req.count(name) == 0 {
            return None;
        }
    }
    for h in req.headers() {
        if h.is("Via") || h.is("From") || h.is("Call-ID") || h.is("CSeq") {
            resp.push_header(h.clone());
        }
    }
    let to = req.header("To")?;
    let to = match NameAddr::parse(to) {
        Ok(n) if n.tag().is_some() => to.to_string(),
        Ok(_) => format!("{to};tag=r{:08x}", rand::random::<u32>()),
        Err(_) => return None,
    };
    resp.push("To", to).ok()?;
    resp.push("Server", "Entente").ok()?;
    for (name, value) in extra {
        resp.push(name, value.clone()).ok()?;
    }
    if let Some(text) = warning {
        let text = headers::single_line(text).replace('"', "'");
        resp.push("Warning", format!("399 {host} \"{text}\""))
            .ok()?;
    }
    Some(resp.to_bytes())
}

/// Where a response to a request that came in a datagram from `source` goes (RFC 3261 §18.2.2,
/// RFC 3581): the source address when the top Via asks for `rport` or names no port, otherwise
/// the source IP with the Via port.
pub fn datagram_reply_to(req: &SipMessage, source: SocketAddr) -> SocketAddr {
    let Ok(vias) = headers::vias(req) else {
        return source;
    };
    match vias.first() {
        Some(top) if !top.has_rport() => match top.port {
            Some(p) => SocketAddr::new(source.ip(), p),
            None => source,
        },
        _ => source,
    }
}

/// Largest header section searched for when salvaging an answer from refused bytes.
const MAX_SALVAGE: usize = 16 * 1024;

/// Bytes the parser refused: if their header section still parses (without its
/// Content-Length, the usual liar) and is a request, the 400 (or 513 for a size limit) that
/// tells the sender why. Works on one datagram or on the last chunk read from a stream.
pub fn refused_bytes(
    parser: &SipxParser,
    data: &[u8],
    error: &ParseError,
    host: &str,
) -> Option<(SipMessage, Bytes)> {
    let window = data.get(..data.len().min(MAX_SALVAGE))?;
    let end = window.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = window.get(..end)?;
    let mut salvaged = Vec::with_capacity(head.len() + 4);
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let lower = line.to_ascii_lowercase();
        let name = lower.split(|b| *b == b':').next().unwrap_or(&[]);
        let name = name.trim_ascii();
        if name == b"content-length" || name == b"l" {
            continue;
        }
        salvaged.extend_from_slice(line);
        salvaged.extend_from_slice(b"\r\n");
    }
    salvaged.extend_from_slice(b"\r\n");
    let req = parser.parse_datagram(&salvaged).ok()?;
    let text = error.to_string();
    let bytes = stateless(&req, error.status(), Some(&text), host, &[])?;
    Some((req, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"MESSAGE sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\r\nFrom: <sip:carol@corp.test>;tag=a\r\nTo: <sip:bob@hub.test>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\n";

    fn parse(bytes: &[u8]) -> SipMessage {
        SipxParser::default().parse_datagram(bytes).unwrap()
    }

    #[test]
    fn a_lying_content_length_still_gets_a_400() {
        let mut data = REQ.to_vec();
        data.extend_from_slice(b"Content-Length: 500\r\n\r\nshort");
        let parser = SipxParser::default();
        let err = parser.parse_datagram(&data).unwrap_err();
        let (req, resp) = refused_bytes(&parser, &data, &err, "hub.test").unwrap();
        let resp = parse(&resp);
        assert_eq!(resp.status(), Some(400));
        assert_eq!(resp.header("Call-ID"), Some("c1"));
        assert!(NameAddr::parse(resp.header("To").unwrap())
            .unwrap()
            .tag()
            .is_some());
        assert_eq!(
            datagram_reply_to(&req, "192.0.2.1:40000".parse().unwrap()),
            "192.0.2.1:5070".parse().unwrap()
        );
    }

    #[test]
    fn garbage_and_acks_get_nothing() {
        let parser = SipxParser::default();
        let err = ParseError::Malformed("x".into());
        assert!(refused_bytes(&parser, b"\x00\x01garbage\r\n\r\n", &err, "h").is_none());
        assert!(refused_bytes(&parser, b"no header end", &err, "h").is_none());
        let ack = parse(b"ACK sip:bob@hub.test SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK2\r\nFrom: <sip:c@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: 1\r\nCSeq: 1 ACK\r\n\r\n");
        assert!(stateless(&ack, 403, None, "h", &[]).is_none());
    }

    #[test]
    fn every_cut_and_flipped_byte_is_salvaged_or_ignored_without_panic() {
        let parser = SipxParser::default();
        let mut data = REQ.to_vec();
        data.extend_from_slice(b"Content-Length: 5\r\n\r\nhello");
        let err = ParseError::Malformed("x".into());
        for cut in 0..=data.len() {
            let _ = refused_bytes(&parser, &data[..cut], &err, "h");
        }
        for i in 0..data.len() {
            for b in [0u8, b'\r', b'\n', b':', b' ', 0xff, b'<', b';'] {
                let mut m = data.clone();
                m[i] = b;
                if let Some((_, resp)) = refused_bytes(&parser, &m, &err, "h") {
                    // Whatever is salvaged answers with a well-formed response.
                    assert_eq!(parse(&resp).status(), Some(400));
                }
            }
        }
        // A header section beyond the salvage window is not searched at all.
        let mut long = b"MESSAGE sip:a@b SIP/2.0\r\nSubject: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 20_000));
        long.extend_from_slice(b"\r\n\r\n");
        assert!(refused_bytes(&parser, &long, &err, "h").is_none());
    }

    #[test]
    fn warnings_cannot_break_the_header() {
        let mut data = REQ.to_vec();
        data.extend_from_slice(b"\r\n");
        let req = parse(&data);
        let resp = stateless(&req, 403, Some("a \"quoted\"\r\nInjected: 1"), "h", &[]).unwrap();
        let resp = parse(&resp);
        assert_eq!(resp.header("Injected"), None);
        assert_eq!(resp.status(), Some(403));
    }
}
