//! Server dialback (XEP-0220): the `db:result` and `db:verify` elements, and stateless keys as
//! XEP-0185 recommends them, so any `db:verify` for any served domain can be answered without
//! remembering what was sent.

use hmac::{KeyInit, Mac};
use minidom::Element;
use sha2::{Digest, Sha256};

use crate::ns;
use crate::writer::escape;

/// The `type` of a dialback answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialbackType {
    Valid,
    Invalid,
    Error,
}

impl DialbackType {
    pub fn as_str(self) -> &'static str {
        match self {
            DialbackType::Valid => "valid",
            DialbackType::Invalid => "invalid",
            DialbackType::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<DialbackType> {
        match s {
            "valid" => Some(DialbackType::Valid),
            "invalid" => Some(DialbackType::Invalid),
            "error" => Some(DialbackType::Error),
            _ => None,
        }
    }
}

/// Why a dialback element could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialbackError {
    #[error("missing or invalid 'from'")]
    From,
    #[error("missing or invalid 'to'")]
    To,
    #[error("missing 'id' on db:verify")]
    Id,
    #[error("unknown 'type'")]
    Type,
    #[error("a request without a key, or a key too long")]
    Key,
}

/// Longest key accepted (an XEP-0185 key is 64 hex digits).
const MAX_KEY: usize = 1024;

/// `<db:result/>`: a request (with a key, without a type) or its answer (with a type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbResult {
    pub from: String,
    pub to: String,
    pub key: Option<String>,
    pub type_: Option<DialbackType>,
}

/// `<db:verify/>`: a request (with a key) or its answer (with a type), about stream `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbVerify {
    pub from: String,
    pub to: String,
    pub id: String,
    pub key: Option<String>,
    pub type_: Option<DialbackType>,
}

fn parts(
    el: &Element,
) -> Result<(String, String, Option<String>, Option<DialbackType>), DialbackError> {
    let from = el
        .attr("from")
        .and_then(parse_domain)
        .ok_or(DialbackError::From)?;
    let to = el
        .attr("to")
        .and_then(parse_domain)
        .ok_or(DialbackError::To)?;
    let type_ = match el.attr("type") {
        None => None,
        Some(t) => Some(DialbackType::parse(t).ok_or(DialbackError::Type)?),
    };
    let text = el.text();
    let key = text.trim();
    if key.len() > MAX_KEY {
        return Err(DialbackError::Key);
    }
    let key = (type_.is_none()).then(|| key.to_string());
    if key.as_deref() == Some("") {
        return Err(DialbackError::Key);
    }
    Ok((from, to, key, type_))
}

impl TryFrom<&Element> for DbResult {
    type Error = DialbackError;
    fn try_from(el: &Element) -> Result<Self, Self::Error> {
        let (from, to, key, type_) = parts(el)?;
        Ok(DbResult {
            from,
            to,
            key,
            type_,
        })
    }
}

impl TryFrom<&Element> for DbVerify {
    type Error = DialbackError;
    fn try_from(el: &Element) -> Result<Self, Self::Error> {
        let (from, to, key, type_) = parts(el)?;
        let id = el.attr("id").ok_or(DialbackError::Id)?;
        if id.is_empty() || id.len() > MAX_KEY {
            return Err(DialbackError::Id);
        }
        Ok(DbVerify {
            from,
            to,
            id: id.to_string(),
            key,
            type_,
        })
    }
}

fn write(
    name: &str,
    from: &str,
    to: &str,
    id: Option<&str>,
    key: Option<&str>,
    type_: Option<DialbackType>,
) -> Vec<u8> {
    let mut s = format!("<db:{name} from='{}' to='{}'", escape(from), escape(to));
    if let Some(id) = id {
        s.push_str(&format!(" id='{}'", escape(id)));
    }
    if let Some(t) = type_ {
        s.push_str(&format!(" type='{}'", t.as_str()));
    }
    match (key, type_) {
        (_, Some(DialbackType::Error)) => s.push_str(&format!(
            "><error type='cancel'><item-not-found xmlns='{}'/></error></db:{name}>",
            ns::STANZA_ERRORS
        )),
        (Some(key), _) => s.push_str(&format!(">{}</db:{name}>", escape(key))),
        (None, _) => s.push_str("/>"),
    }
    s.into_bytes()
}

impl DbResult {
    pub fn to_bytes(&self) -> Vec<u8> {
        write(
            "result",
            &self.from,
            &self.to,
            None,
            self.key.as_deref(),
            self.type_,
        )
    }
}

impl DbVerify {
    pub fn to_bytes(&self) -> Vec<u8> {
        write(
            "verify",
            &self.from,
            &self.to,
            Some(&self.id),
            self.key.as_deref(),
            self.type_,
        )
    }
}

/// XEP-0185 key: HMAC-SHA256 keyed with the hex SHA-256 of the secret, over
/// "receiving originating stream-id", in lower-case hex.
pub fn dialback_key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let mac = mac(secret, receiving, originating, stream_id);
    hex(&mac.finalize().into_bytes())
}

/// Checks a key in constant time.
pub fn key_is_valid(
    secret: &[u8],
    receiving: &str,
    originating: &str,
    stream_id: &str,
    key: &str,
) -> bool {
    let Some(bytes) = unhex(key) else {
        return false;
    };
    mac(secret, receiving, originating, stream_id)
        .verify_slice(&bytes)
        .is_ok()
}

fn mac(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> hmac::Hmac<Sha256> {
    let hashed = hex(&Sha256::digest(secret));
    // HMAC takes keys of any length.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(hashed.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if (s.len() & 1) != 0 || s.len() > MAX_KEY {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Normalises a domain-only JID (`example.com`), as used in stream headers and dialback.
pub fn parse_domain(s: &str) -> Option<String> {
    let jid = jid::Jid::new(s).ok()?;
    if jid.node().is_some() || jid.resource().is_some() {
        return None;
    }
    Some(jid.domain().as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(xml: &str) -> Element {
        let mut input = crate::writer::stream_header("a.test", "b.test", None);
        input.extend_from_slice(xml.as_bytes());
        let mut reader = crate::reader::StreamReader::new(Default::default());
        let mut slice: &[u8] = &input;
        reader.read(&mut slice).unwrap();
        match reader.read(&mut slice).unwrap() {
            Some(crate::reader::ReadEvent::Element(el)) => el,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_verify_only_for_their_inputs() {
        let key = dialback_key(b"s3cr3t", "hub.test", "corp-a.test", "D60000229F");
        assert_eq!(key.len(), 64);
        assert!(key_is_valid(
            b"s3cr3t",
            "hub.test",
            "corp-a.test",
            "D60000229F",
            &key
        ));
        assert!(!key_is_valid(
            b"other",
            "hub.test",
            "corp-a.test",
            "D60000229F",
            &key
        ));
        assert!(!key_is_valid(
            b"s3cr3t",
            "corp-a.test",
            "hub.test",
            "D60000229F",
            &key
        ));
        assert!(!key_is_valid(
            b"s3cr3t",
            "hub.test",
            "corp-a.test",
            "D60000229G",
            &key
        ));
        assert!(!key_is_valid(
            b"s3cr3t",
            "hub.test",
            "corp-a.test",
            "D60000229F",
            "zz"
        ));
        assert!(!key_is_valid(
            b"s3cr3t",
            "hub.test",
            "corp-a.test",
            "D60000229F",
            &key[..63]
        ));
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let req = DbResult {
            from: "corp-a.test".into(),
            to: "hub.test".into(),
            key: Some("abcd".into()),
            type_: None,
        };
        let el = element(std::str::from_utf8(&req.to_bytes()).unwrap());
        assert_eq!(DbResult::try_from(&el).unwrap(), req);
        let answer = DbVerify {
            from: "hub.test".into(),
            to: "corp-a.test".into(),
            id: "x'1".into(),
            key: None,
            type_: Some(DialbackType::Invalid),
        };
        let el = element(std::str::from_utf8(&answer.to_bytes()).unwrap());
        assert_eq!(DbVerify::try_from(&el).unwrap(), answer);
    }

    #[test]
    fn malformed_elements_are_refused() {
        let el = element("<db:result to='hub.test'>k</db:result>");
        assert_eq!(DbResult::try_from(&el), Err(DialbackError::From));
        let el = element("<db:result from='a@corp-a.test' to='hub.test'>k</db:result>");
        assert_eq!(DbResult::try_from(&el), Err(DialbackError::From));
        let el = element("<db:result from='corp-a.test' to='hub.test'/>");
        assert_eq!(DbResult::try_from(&el), Err(DialbackError::Key));
        let el = element("<db:verify from='corp-a.test' to='hub.test'>k</db:verify>");
        assert_eq!(DbVerify::try_from(&el), Err(DialbackError::Id));
        let el = element("<db:result from='corp-a.test' to='hub.test' type='maybe'/>");
        assert_eq!(DbResult::try_from(&el), Err(DialbackError::Type));
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(parse_domain("Corp-A.Test").as_deref(), Some("corp-a.test"));
        assert_eq!(parse_domain("a@b.test"), None);
        assert_eq!(parse_domain("b.test/r"), None);
        assert_eq!(parse_domain(""), None);
    }
}
