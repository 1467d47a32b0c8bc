//! `message/cpim` (RFC 3862) wrappers: message headers, a blank line, MIME headers of the
//! inner content, a blank line, the content. Only the inner content type and body are used.

/// Most header lines read in either header block.
pub const MAX_HEADER_LINES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpimError {
    #[error("message/cpim without the two header blocks")]
    Truncated,
    #[error("message/cpim header block too long")]
    TooManyHeaders,
    #[error("message/cpim header not UTF-8")]
    BadBytes,
}

/// The encapsulated content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpim<'a> {
    /// Inner media type, lower-cased, without parameters (`text/plain` if absent).
    pub content_type: String,
    /// Its `charset` parameter, lower-cased.
    pub charset: Option<String>,
    pub body: &'a [u8],
}

/// Splits at the first blank line (CRLF CRLF, or LF LF from lenient senders).
fn split_block(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = data.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (i, n) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((data.get(..i)?, data.get(i + n..)?))
}

fn header_lines(block: &[u8]) -> Result<Vec<(String, String)>, CpimError> {
    let text = std::str::from_utf8(block).map_err(|_| CpimError::BadBytes)?;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_HEADER_LINES {
            return Err(CpimError::TooManyHeaders);
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(out)
}

pub fn parse(data: &[u8]) -> Result<Cpim<'_>, CpimError> {
    let (message_headers, rest) = split_block(data).ok_or(CpimError::Truncated)?;
    header_lines(message_headers)?;
    let (mime, body) = match split_block(rest) {
        Some(parts) => parts,
        None => (rest, &[][..]),
    };
    let mime = header_lines(mime)?;
    let value = mime
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
        .unwrap_or("text/plain");
    let content_type = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(Cpim {
        content_type,
        charset: crate::headers::charset_param(value),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3862_example() {
        let data = b"From: MR SANDERS <im:piglet@100akerwood.com>\r\nTo: Depressed Donkey <im:eeyore@100akerwood.com>\r\nDateTime: 2000-12-13T13:40:00-08:00\r\nSubject: the weather will be fine today\r\n\r\nContent-type: text/plain\r\nContent-ID: <1234567890@foo.com>\r\n\r\nHere is the text of my message.";
        let c = parse(data).unwrap();
        assert_eq!(c.content_type, "text/plain");
        assert_eq!(c.body, b"Here is the text of my message.");
    }

    #[test]
    fn hostile_wrappers() {
        assert_eq!(parse(b"From: a"), Err(CpimError::Truncated));
        let many = "X: y\r\n".repeat(100) + "\r\n\r\n";
        assert_eq!(parse(many.as_bytes()), Err(CpimError::TooManyHeaders));
        assert_eq!(parse(b"\xff: x\r\n\r\n"), Err(CpimError::BadBytes));
        let c = parse(b"From: a\n\nContent-Type: text/html\n\n<b>x</b>").unwrap();
        assert_eq!(c.content_type, "text/html");
    }
}
