//! Typed views of the headers the transaction and dialog layers need (Via, From/To/Contact,
//! CSeq, Subscription-State) and conversion of SIP URIs to canonical addresses.

use entente_model::{Address, DomainKind};

use crate::message::{check_line, SipMessage};

/// A header value that does not have the grammar it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed header {0}")]
    Malformed(&'static str),
    #[error("not a usable SIP address: {0}")]
    Address(String),
}

/// `;name=value` parameters, names lower-cased.
pub type Params = Vec<(String, Option<String>)>;

fn parse_params(s: &str) -> Params {
    let mut out = Params::new();
    for part in split_outside_quotes(s, ';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) => out.push((
                k.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            )),
            None => out.push((part.to_ascii_lowercase(), None)),
        }
    }
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(s.get(start..i).unwrap_or(""));
            start = i + c.len_utf8();
        }
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}

pub fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
}

fn has_param(params: &Params, name: &str) -> bool {
    params.iter().any(|(k, _)| k == name)
}

/// One Via value: `SIP/2.0/UDP host[:port];params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    /// Host as written; IPv6 references keep their brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        let bad = HeaderError::Malformed("Via");
        // RFC 3261 allows linear whitespace around each "/" of the sent-protocol.
        let mut compact = String::with_capacity(value.len());
        for part in value.trim().split('/') {
            if !compact.is_empty() {
                compact.push('/');
            }
            compact.push_str(part.trim());
        }
        let value = compact.as_str();
        let (proto, rest) = value
            .split_once(|c: char| c.is_whitespace())
            .ok_or(bad.clone())?;
        let mut parts = proto.split('/').map(str::trim);
        let (name, version, transport) = (parts.next(), parts.next(), parts.next());
        if !name.is_some_and(|n| n.eq_ignore_ascii_case("SIP"))
            || version != Some("2.0")
            || parts.next().is_some()
        {
            return Err(bad);
        }
        let transport = transport
            .filter(|t| !t.is_empty())
            .ok_or(bad.clone())?
            .to_ascii_uppercase();
        let rest = rest.trim();
        let (sent_by, params) = match rest.split_once(';') {
            Some((s, p)) => (s.trim(), parse_params(p)),
            None => (rest, Params::new()),
        };
        let (host, port) = split_hostport(sent_by).ok_or(bad)?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch")
    }

    pub fn has_rport(&self) -> bool {
        has_param(&self.params, "rport")
    }

    /// `host[:port]`, the sent-by used to match transactions.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Splits `host[:port]`, where host may be an IPv6 reference `[...]`.
pub fn split_hostport(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((format!("[{addr}]"), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (s, None),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return None;
    }
    Some((host.to_string(), port))
}

/// Every Via value of a message, top first, comma-joined and repeated fields alike.
pub fn vias(msg: &SipMessage) -> Result<Vec<Via>, HeaderError> {
    let values = msg.header_values("Via");
    if values.is_empty() {
        return Err(HeaderError::Missing("Via"));
    }
    values.into_iter().map(Via::parse).collect()
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let bad = HeaderError::Malformed("name-addr");
        let value = value.trim();
        if let Some(lt) = find_unquoted(value, '<') {
            let display = value.get(..lt).unwrap_or("").trim();
            let rest = value.get(lt + 1..).ok_or(bad.clone())?;
            let (uri, after) = rest.split_once('>').ok_or(bad.clone())?;
            let display = if display.is_empty() {
                None
            } else {
                Some(unquote(display))
            };
            let uri = uri.trim();
            if uri.is_empty() {
                return Err(bad);
            }
            let after = after.trim();
            let params = match after.strip_prefix(';') {
                Some(p) => parse_params(p),
                None if after.is_empty() => Params::new(),
                None => return Err(bad),
            };
            Ok(NameAddr {
                display,
                uri: uri.to_string(),
                params,
            })
        } else {
            // addr-spec form: the parameters belong to the header, not to the URI.
            let (uri, params) = match value.split_once(';') {
                Some((u, p)) => (u.trim(), parse_params(p)),
                None => (value, Params::new()),
            };
            if uri.is_empty() || uri.contains(char::is_whitespace) {
                return Err(bad);
            }
            Ok(NameAddr {
                display: None,
                uri: uri.to_string(),
                params,
            })
        }
    }

    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag")
    }

    /// Serialises with the display name quoted and escaped, so no value can break out of it.
    pub fn to_value(&self) -> String {
        let mut out = String::new();
        if let Some(d) = &self.display {
            out.push_str(&quote(d));
            out.push(' ');
        }
        out.push('<');
        out.push_str(&self.uri);
        out.push('>');
        for (k, v) in &self.params {
            out.push(';');
            out.push_str(k);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c == target {
            return Some(i);
        }
    }
    None
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => s.to_string(),
    }
}

/// A quoted-string for a display name: control characters (CR, LF, NUL...) become spaces,
/// `"` and `\` are escaped. The result is always a single safe line.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Free text (a Subject, a Warning text) made safe for one header line.
pub fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first value of a name-addr header.
pub fn name_addr(msg: &SipMessage, name: &'static str) -> Result<NameAddr, HeaderError> {
    let value = msg.header(name).ok_or(HeaderError::Missing(name))?;
    NameAddr::parse(value)
}

/// `CSeq: 1 MESSAGE`.
pub fn cseq(msg: &SipMessage) -> Result<(u32, String), HeaderError> {
    let value = msg.header("CSeq").ok_or(HeaderError::Missing("CSeq"))?;
    let mut it = value.split_whitespace();
    let n = it
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or(HeaderError::Malformed("CSeq"))?;
    let m = it.next().ok_or(HeaderError::Malformed("CSeq"))?;
    if it.next().is_some() {
        return Err(HeaderError::Malformed("CSeq"));
    }
    Ok((n, m.to_string()))
}

pub fn call_id(msg: &SipMessage) -> Result<&str, HeaderError> {
    msg.header("Call-ID")
        .filter(|v| !v.is_empty())
        .ok_or(HeaderError::Missing("Call-ID"))
}

/// `Expires` as seconds.
pub fn expires(msg: &SipMessage) -> Option<u32> {
    msg.header("Expires")?.trim().parse().ok()
}

/// The media type of the body, lower-cased, without parameters.
pub fn content_type(msg: &SipMessage) -> Option<String> {
    let v = msg.header("Content-Type")?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// The `charset` parameter of a Content-Type value, lower-cased, unquoted.
pub fn charset_param(content_type: &str) -> Option<String> {
    let (_, params) = content_type.split_once(';')?;
    param(&parse_params(params), "charset").map(|c| c.to_ascii_lowercase())
}

/// The event package of an `Event` header, lower-cased, without parameters.
pub fn event_package(msg: &SipMessage) -> Option<String> {
    let v = msg.header("Event")?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// RFC 6665 `Subscription-State`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub state: SubState,
    pub expires: Option<u32>,
    pub reason: Option<String>,
    pub retry_after: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    Pending,
    Active,
    Terminated,
}

impl SubState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::Pending => "pending",
            SubState::Active => "active",
            SubState::Terminated => "terminated",
        }
    }
}

impl SubscriptionState {
    pub fn parse(value: &str) -> Result<SubscriptionState, HeaderError> {
        let (state, params) = match value.split_once(';') {
            Some((s, p)) => (s.trim(), parse_params(p)),
            None => (value.trim(), Params::new()),
        };
        let state = match state.to_ascii_lowercase().as_str() {
            "pending" => SubState::Pending,
            "active" => SubState::Active,
            "terminated" => SubState::Terminated,
            _ => return Err(HeaderError::Malformed("Subscription-State")),
        };
        Ok(SubscriptionState {
            state,
            expires: param(&params, "expires").and_then(|v| v.parse().ok()),
            reason: param(&params, "reason").map(str::to_ascii_lowercase),
            retry_after: param(&params, "retry-after").and_then(|v| v.parse().ok()),
        })
    }

    pub fn to_value(&self) -> String {
        let mut out = self.state.as_str().to_string();
        if let Some(e) = self.expires {
            out.push_str(&format!(";expires={e}"));
        }
        if let Some(r) = &self.reason {
            out.push_str(";reason=");
            out.push_str(r);
        }
        out
    }
}

/// A SIP user as a canonical address: `sip:user@host[:port];params` → `user@host`.
/// Percent-escapes in the user part are decoded; other schemes are refused.
pub fn uri_to_address(uri: &str) -> Result<Address, HeaderError> {
    let err = || HeaderError::Address(uri.chars().take(80).collect());
    let lower = uri
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("sips:") {
        uri.get(5..).ok_or_else(err)?
    } else if lower.starts_with("sip:") {
        uri.get(4..).ok_or_else(err)?
    } else {
        return Err(err());
    };
    let rest = rest.split([';', '?']).next().unwrap_or("");
    let (user, hostport) = rest.rsplit_once('@').ok_or_else(err)?;
    let user = user.split(':').next().unwrap_or(""); // drop a password
    let user = percent_decode(user).ok_or_else(err)?;
    let (host, _port) = split_hostport(hostport).ok_or_else(err)?;
    Address::new(&user, &host, DomainKind::Sip).map_err(|_| err())
}

/// `user@domain` → `sip:user@domain`, escaping what RFC 3261 does not allow in a user part.
pub fn address_to_uri(addr: &Address) -> String {
    let mut user = String::new();
    for b in addr.local().bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric()
            || matches!(
                c,
                '-' | '_'
                    | '.'
                    | '!'
                    | '~'
                    | '*'
                    | '\''
                    | '('
                    | ')'
                    | '&'
                    | '='
                    | '+'
                    | '$'
                    | ','
                    | ';'
                    | '?'
                    | '/'
            )
        {
            if matches!(c, ';' | '?') {
                user.push_str(&format!("%{b:02X}"));
            } else {
                user.push(c);
            }
        } else {
            user.push_str(&format!("%{b:02X}"));
        }
    }
    format!("sip:{user}@{}", addr.domain())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    check_line(&text, "user").ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_ipv6_and_params() {
        let v = Via::parse("SIP/2.0/udp [2001:db8::1]:5062;branch=z9hG4bK77;rport;received=::1")
            .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.branch(), Some("z9hG4bK77"));
        assert!(v.has_rport());
        assert_eq!(v.sent_by(), "[2001:db8::1]:5062");
        assert!(Via::parse("SIP/2.0/UDP [zz::1]:5060").is_err());
        assert!(Via::parse("SIP/3.0/UDP a").is_err());
        assert!(Via::parse("garbage").is_err());
        let v = Via::parse("SIP / 2.0 / TCP  host.test:5061 ; branch=z9hG4bKa").unwrap();
        assert_eq!(
            (v.transport.as_str(), v.host.as_str(), v.port),
            ("TCP", "host.test", Some(5061))
        );
        assert_eq!(v.branch(), Some("z9hG4bKa"));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""Carol \"C\" <x>" <sip:carol@corp-b.test>;tag=abc"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Carol "C" <x>"#));
        assert_eq!(n.uri, "sip:carol@corp-b.test");
        assert_eq!(n.tag(), Some("abc"));
        let n = NameAddr::parse("sip:bob@hub.test;tag=9").unwrap();
        assert_eq!(n.uri, "sip:bob@hub.test");
        assert_eq!(n.tag(), Some("9"));
        assert!(NameAddr::parse("<sip:a@b").is_err());
        assert!(NameAddr::parse("<>").is_err());
    }

    #[test]
    fn display_names_cannot_break_out() {
        let n = NameAddr {
            display: Some("Eve\"\r\nVia: evil\0".to_string()),
            uri: "sip:eve@x.test".into(),
            params: vec![("tag".into(), Some("1".into()))],
        };
        let v = n.to_value();
        assert!(!v.contains(['\r', '\n', '\0']));
        let back = NameAddr::parse(&v).unwrap();
        assert_eq!(back.uri, "sip:eve@x.test");
        assert_eq!(back.display.as_deref(), Some("Eve\"  Via: evil "));
    }

    #[test]
    fn uris_become_addresses() {
        let a = uri_to_address("sip:Carol@Corp-B.test:5061;transport=tcp").unwrap();
        assert_eq!(a.to_string(), "Carol@corp-b.test");
        let a = uri_to_address("sips:a%20b@[::1]:5061").unwrap_err();
        assert!(matches!(a, HeaderError::Address(_)));
        assert!(uri_to_address("tel:+123").is_err());
        assert!(uri_to_address("sip:%0d%0a@x.test").is_err());
        assert!(uri_to_address("sip:hub.test").is_err());
        let a = uri_to_address("sip:bob@[2001:db8::1]").unwrap();
        assert_eq!(a.domain(), "[2001:db8::1]");
        let a = Address::new("o'neil+x", "corp.test", DomainKind::Sip).unwrap();
        assert_eq!(uri_to_address(&address_to_uri(&a)).unwrap(), a);
    }

    #[test]
    fn subscription_state() {
        let s = SubscriptionState::parse("terminated;reason=timeout;retry-after=5").unwrap();
        assert_eq!(s.state, SubState::Terminated);
        assert_eq!(s.reason.as_deref(), Some("timeout"));
        assert_eq!(s.retry_after, Some(5));
        let s = SubscriptionState::parse("Active ; expires=600").unwrap();
        assert_eq!(s.state, SubState::Active);
        assert_eq!(s.expires, Some(600));
        assert!(SubscriptionState::parse("maybe").is_err());
    }
}
