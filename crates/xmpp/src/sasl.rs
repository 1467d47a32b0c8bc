//! SASL EXTERNAL for server-to-server streams (RFC 6120 §6, XEP-0178): the initiating server
//! asserts its domain and the receiving server checks it against the certificate the TLS layer
//! verified.

use base64::Engine;
use minidom::Element;

use crate::ns;
use crate::writer::escape;

/// Why an `<auth/>` element was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("mechanism other than EXTERNAL")]
    InvalidMechanism,
    #[error("authorization identity is not base64 of a domain")]
    MalformedRequest,
}

/// `<auth mechanism='EXTERNAL'>`: `authzid` is `None` when the initiator sent `=` (empty), which
/// means "the domain of my stream header".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub authzid: Option<String>,
}

impl TryFrom<&Element> for Auth {
    type Error = SaslError;
    fn try_from(el: &Element) -> Result<Self, Self::Error> {
        if el.attr("mechanism") != Some("EXTERNAL") {
            return Err(SaslError::InvalidMechanism);
        }
        let text = el.text();
        let text = text.trim();
        if text.is_empty() || text == "=" {
            return Ok(Auth { authzid: None });
        }
        if text.len() > 1024 {
            return Err(SaslError::MalformedRequest);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| SaslError::MalformedRequest)?;
        let s = String::from_utf8(bytes).map_err(|_| SaslError::MalformedRequest)?;
        let domain = crate::dialback::parse_domain(&s).ok_or(SaslError::MalformedRequest)?;
        Ok(Auth {
            authzid: Some(domain),
        })
    }
}

impl Auth {
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = match &self.authzid {
            Some(d) => base64::engine::general_purpose::STANDARD.encode(d.as_bytes()),
            None => "=".to_string(),
        };
        format!(
            "<auth xmlns='{}' mechanism='EXTERNAL'>{}</auth>",
            ns::SASL,
            escape(&payload)
        )
        .into_bytes()
    }
}

pub fn success() -> Vec<u8> {
    format!("<success xmlns='{}'/>", ns::SASL).into_bytes()
}

/// `<failure/>` with a SASL condition such as `not-authorized` or `invalid-mechanism`.
pub fn failure(condition: &str) -> Vec<u8> {
    format!("<failure xmlns='{}'><{condition}/></failure>", ns::SASL).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(xml: &[u8]) -> Element {
        let mut input = crate::writer::stream_header("a.test", "b.test", None);
        input.extend_from_slice(xml);
        let mut reader = crate::reader::StreamReader::new(Default::default());
        let mut slice: &[u8] = &input;
        reader.read(&mut slice).unwrap();
        match reader.read(&mut slice).unwrap() {
            Some(crate::reader::ReadEvent::Element(el)) => el,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_round_trips() {
        for auth in [
            Auth {
                authzid: Some("hub.test".into()),
            },
            Auth { authzid: None },
        ] {
            assert_eq!(Auth::try_from(&element(&auth.to_bytes())).unwrap(), auth);
        }
    }

    #[test]
    fn captured_prosody_style_auth_is_read() {
        // base64("corp-a.test")
        let el = element(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Y29ycC1hLnRlc3Q=</auth>",
        );
        assert_eq!(
            Auth::try_from(&el).unwrap().authzid.as_deref(),
            Some("corp-a.test")
        );
    }

    #[test]
    fn other_mechanisms_and_garbage_are_refused() {
        let el = element(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
        );
        assert_eq!(Auth::try_from(&el), Err(SaslError::InvalidMechanism));
        let el = element(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>!!!</auth>",
        );
        assert_eq!(Auth::try_from(&el), Err(SaslError::MalformedRequest));
        // base64("a@b.test"): a user, not a domain.
        let el = element(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>YUBiLnRlc3Q=</auth>");
        assert_eq!(Auth::try_from(&el), Err(SaslError::MalformedRequest));
    }
}
