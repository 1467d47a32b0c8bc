//! The one HTTP call the benchmark needs: `POST /api/v1/register`. A single request per
//! connection (`Connection: close`), the response read whole with a size cap and parsed with
//! `httparse`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted, headers and body together.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Most headers accepted in a response.
const MAX_HEADERS: usize = 64;

/// A response: status code and body as text (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Parses a complete HTTP/1.1 response read up to connection close.
pub fn parse_response(bytes: &[u8]) -> Result<Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => bail!("truncated HTTP response"),
        Err(e) => bail!("malformed HTTP response: {e}"),
    };
    let status = response
        .code
        .ok_or_else(|| anyhow!("HTTP response without a status code"))?;
    let mut body = bytes.get(head_len..).unwrap_or_default();
    let mut chunked = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let len: usize = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| anyhow!("bad Content-Length header"))?;
            body = body
                .get(..len)
                .ok_or_else(|| anyhow!("HTTP body shorter than its Content-Length"))?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding")
            && header.value.eq_ignore_ascii_case(b"chunked")
        {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Joins the chunks of a chunked body.
fn dechunk(mut bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (size, consumed) = match httparse::parse_chunk_size(bytes) {
            Ok(httparse::Status::Complete((consumed, size))) => (size, consumed),
            Ok(httparse::Status::Partial) => bail!("truncated chunked body"),
            Err(_) => bail!("malformed chunk size"),
        };
        bytes = bytes.get(consumed..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_RESPONSE)
            .ok_or_else(|| anyhow!("chunk too large"))?;
        let chunk = bytes
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        bytes = bytes
            .get(size..)
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
            .ok_or_else(|| anyhow!("chunk not followed by CRLF"))?;
    }
}

/// Sends `POST path` with a JSON body and returns the response.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    json: &str,
    timeout: Duration,
) -> Result<Response> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).ok();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
        limited.read_to_end(&mut buf).await?;
        if buf.len() > MAX_RESPONSE {
            bail!("HTTP response larger than {MAX_RESPONSE} bytes");
        }
        parse_response(&buf)
    })
    .await
    .map_err(|_| anyhow!("no HTTP response from {addr} within {}s", timeout.as_secs()))?
}

/// What registering one user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created,
    AlreadyExists,
    /// The server has registration closed (403): accounts must already exist.
    Closed,
}

/// Creates hub account `user`; an existing account is not an error.
pub async fn register(
    addr: SocketAddr,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Registration> {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    let response = post_json(addr, "/api/v1/register", &body, timeout).await?;
    registration_outcome(user, &response)
}

/// What registering a run's users did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Registered {
    pub created: usize,
    pub existing: usize,
    /// Registration is closed on the server: the accounts are assumed to exist.
    pub closed: bool,
    pub seconds: f64,
}

/// Registers `users` with `concurrency` requests in flight. The first request tells whether the
/// server takes registrations at all; if not, none of the others is sent.
pub async fn register_all(
    addr: SocketAddr,
    users: &[String],
    password: &str,
    concurrency: usize,
    timeout: Duration,
) -> Result<Registered> {
    use futures::StreamExt;
    let started = std::time::Instant::now();
    let mut out = Registered {
        created: 0,
        existing: 0,
        closed: false,
        seconds: 0.0,
    };
    let Some((first_user, rest)) = users.split_first() else {
        return Ok(out);
    };
    let first = register(addr, first_user, password, timeout).await?;
    if first == Registration::Closed {
        out.closed = true;
        out.seconds = started.elapsed().as_secs_f64();
        return Ok(out);
    }
    let outcomes: Vec<Result<Registration>> = futures::stream::iter(rest)
        .map(|user| register(addr, user, password, timeout))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for outcome in std::iter::once(Ok(first)).chain(outcomes) {
        match outcome? {
            Registration::Created => out.created += 1,
            Registration::AlreadyExists => out.existing += 1,
            Registration::Closed => bail!("the server closed registration during the run"),
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Interprets the answer to `POST /api/v1/register`.
pub fn registration_outcome(user: &str, response: &Response) -> Result<Registration> {
    match response.status {
        201 | 200 => Ok(Registration::Created),
        409 => Ok(Registration::AlreadyExists),
        403 => Ok(Registration::Closed),
        status => bail!(
            "registering `{user}`: HTTP {status}: {}",
            error_text(&response.body)
        ),
    }
}

/// The `error` field of a JSON error body, or the body itself cut short.
fn error_text(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(text) = value.get("error").and_then(|v| v.as_str()) {
            return text.chars().take(200).collect();
        }
    }
    let text: String = body.chars().take(200).collect();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_response_with_length() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 30\r\n\r\n{\"address\":\"bench0@localhost\"}",
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, "{\"address\":\"bench0@localhost\"}");
    }

    #[test]
    fn response_without_length_runs_to_close() {
        let r = parse_response(b"HTTP/1.1 409 Conflict\r\n\r\ntaken").unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.body, "taken");
    }

    #[test]
    fn chunked_response_is_joined() {
        let r = parse_response(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"err\r\n8\r\nor\":\"x\"}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.body, "{\"error\":\"x\"}");
    }

    #[test]
    fn hostile_responses_are_errors_not_panics() {
        let many_headers = {
            let mut s = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..(MAX_HEADERS + 5) {
                s.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
            }
            s.extend_from_slice(b"\r\n");
            s
        };
        let cases: Vec<&[u8]> = vec![
            b"",
            b"HTTP/1.1 200",
            b"HTTP/1.1 200 OK\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            &many_headers,
        ];
        for case in cases {
            assert!(
                parse_response(case).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn non_utf8_body_is_kept_lossily() {
        let r = parse_response(b"HTTP/1.1 500 Oops\r\n\r\n\xff\xfe").unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.body, "\u{fffd}\u{fffd}");
    }

    #[test]
    fn registration_statuses() {
        let resp = |status, body: &str| Response {
            status,
            body: body.to_string(),
        };
        assert_eq!(
            registration_outcome("a", &resp(201, "")).unwrap(),
            Registration::Created
        );
        assert_eq!(
            registration_outcome("a", &resp(409, "")).unwrap(),
            Registration::AlreadyExists
        );
        assert_eq!(
            registration_outcome("a", &resp(403, "")).unwrap(),
            Registration::Closed
        );
        let bad = registration_outcome("a b", &resp(400, "{\"error\":\"invalid name\"}"))
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("HTTP 400") && bad.contains("invalid name"),
            "{bad}"
        );
        let other = registration_outcome("a", &resp(500, ""))
            .unwrap_err()
            .to_string();
        assert!(other.contains("(empty body)"), "{other}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_clear_error() {
        // Bind then drop to find a port with nobody behind it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = register(addr, "a", "b", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("connecting to"), "{err:#}");
    }
}
