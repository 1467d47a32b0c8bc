//! The `sips` listener and outbound TLS to certificate partners (RFC 5922): a partner must
//! present a certificate valid for its domain, issued by a CA the hub trusts, or its requests
//! are answered 403; the hub sends to a certificate partner only over TLS to a peer whose
//! certificate is valid for the partner's domain.

mod common;
mod sip;

use common::Server;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sip::{partner_toml, request, Pki, HUB};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECURE: &str = "secure.test";
const ANSWER: Duration = Duration::from_secs(5);

fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(pki: &Pki) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in chain(&pki.ca()) {
        roots.add(c).unwrap();
    }
    Arc::new(roots)
}

/// A hub whose own certificate comes from the test CA, which it also trusts for partners.
fn hub(pki: &Pki, partner_address: Option<SocketAddr>) -> Server {
    hub_with(pki, partner_address, "")
}

/// [`hub`] with more configuration (`[dns]`).
fn hub_with(pki: &Pki, partner_address: Option<SocketAddr>, more: &str) -> Server {
    let (cert, key) = pki.leaf(HUB);
    let mut extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\ntrust = [\"{}\"]\n",
        cert.display(),
        key.display(),
        pki.ca().display()
    );
    extra.push_str("[admin]\ntoken = \"tls-links\"\n");
    extra.push_str(more);
    extra.push_str(&partner_toml(SECURE, partner_address, "certificate"));
    Server::start_listening(&extra, "sip = \"127.0.0.1:0\"\nsips = \"127.0.0.1:0\"\n")
}

/// A TLS connection to the hub's `sips` listener, presenting `client` when given.
async fn connect(
    pki: &Pki,
    gateway: SocketAddr,
    client: Option<(PathBuf, PathBuf)>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(pki));
    let config = match client {
        Some((c, k)) => builder
            .with_client_auth_cert(chain(&c), PrivateKeyDer::from_pem_file(&k).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(HUB).unwrap(), tcp)
        .await
        .expect("TLS handshake with the hub (its certificate is valid for hub.test)")
}

/// Sends one request and reads the answer (one message; the gateway frames it).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> entente_sip::SipMessage {
    use entente_sip::wire::StreamDecoder;
    stream.write_all(bytes).await.unwrap();
    let mut framer = entente_sip::StreamFramer::new(Default::default());
    let mut buf = vec![0u8; 16_384];
    loop {
        let n = tokio::time::timeout(ANSWER, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the hub closed the connection");
        let mut got = framer.push(&buf[..n]).unwrap();
        if !got.is_empty() {
            return got.remove(0);
        }
    }
}

fn message(from: &str, body: &str) -> Vec<u8> {
    request(
        "MESSAGE",
        &format!("bob@{HUB}"),
        from,
        "TLS 127.0.0.1:5061",
        "Content-Type: text/plain\r\n",
        body,
    )
}

#[tokio::test]
async fn a_partner_with_a_valid_certificate_is_heard_and_others_get_403() {
    let pki = Pki::new();
    let server = hub(&pki, None);
    let sips = server.listeners["sips"];
    let mut bob = server.login("bob").await;

    // Valid for secure.test, issued by the trusted CA: accepted and delivered.
    let mut good = connect(&pki, sips, Some(pki.leaf(SECURE))).await;
    let r = exchange(&mut good, &message("dave@secure.test", "over mutual TLS")).await;
    assert_eq!(r.status(), Some(200), "{r}");
    let m = bob
        .expect("the message", |v| {
            v["type"] == "message" && v["body"] == "over mutual TLS"
        })
        .await;
    assert_eq!(m["from"], "dave@secure.test");
    // The admin API shows the link: inbound TLS, authenticated by the certificate.
    let (status, body) = server
        .http_with(
            "GET",
            "/api/v1/admin/partners",
            None,
            "Authorization: Bearer tls-links\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let partner = &v["partners"][0];
    assert_eq!(partner["domain"], SECURE, "{v}");
    assert_eq!(partner["connected"], true, "{v}");
    let links = partner["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{v}");
    assert_eq!(links[0]["transport"], "sip-tls");
    assert_eq!(links[0]["auth"], "certificate");
    assert_eq!(links[0]["direction"], "inbound");
    assert_eq!(
        links[0]["peer"],
        good.get_ref().0.local_addr().unwrap().to_string().as_str()
    );

    // No certificate at all.
    let mut anonymous = connect(&pki, sips, None).await;
    let r = exchange(&mut anonymous, &message("dave@secure.test", "no cert")).await;
    assert_eq!(r.status(), Some(403), "{r}");

    // A certificate for another domain, from the same CA.
    let mut other = connect(&pki, sips, Some(pki.leaf("other.test"))).await;
    let r = exchange(&mut other, &message("dave@secure.test", "wrong cert")).await;
    assert_eq!(r.status(), Some(403), "{r}");

    // A self-signed certificate for the right domain.
    let stranger = Pki::new();
    let mut selfish = connect(&pki, sips, Some(stranger.leaf(SECURE))).await;
    let r = exchange(&mut selfish, &message("dave@secure.test", "untrusted")).await;
    assert_eq!(r.status(), Some(403), "{r}");

    // The valid connection cannot speak for another domain either.
    let r = exchange(&mut good, &message("eve@evil.test", "spoof")).await;
    assert_eq!(r.status(), Some(403), "{r}");

    // Over plain TCP, the certificate partner is refused too.
    let mut plain = sip::TcpPeer::connect(server.listeners["sip"]).await;
    plain
        .send(&message("dave@secure.test", "plain"))
        .await
        .unwrap();
    let r = plain.recv(ANSWER).await.expect("an answer");
    assert_eq!(r.status(), Some(403), "{r}");

    // Only the first message reached bob.
    assert!(bob
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "message"));
}

/// A partner's TLS server: accepts one connection, answers the first request 200 and returns it.
async fn partner_server(
    pki: &Pki,
    domain: &str,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Option<entente_sip::SipMessage>>,
) {
    let (cert, key) = pki.leaf(domain);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain(&cert), PrivateKeyDer::from_pem_file(&key).unwrap())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        use entente_sip::wire::StreamDecoder;
        let (tcp, _) = listener.accept().await.ok()?;
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let mut framer = entente_sip::StreamFramer::new(Default::default());
        let mut buf = vec![0u8; 16_384];
        loop {
            let n = tls.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            let got = framer.push(&buf[..n]).ok()?;
            if let Some(req) = got.into_iter().next() {
                let mut resp = entente_sip::SipMessage::response(200, "OK").unwrap();
                for h in req.headers() {
                    if h.is("Via") || h.is("From") || h.is("Call-ID") || h.is("CSeq") {
                        resp.push_header(h.clone());
                    }
                }
                let to = format!("{};tag=p1", req.header("To").unwrap_or(""));
                resp.push("To", to).unwrap();
                tls.write_all(&resp.to_bytes()).await.ok()?;
                tls.flush().await.ok()?;
                return Some(req);
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn messages_to_a_certificate_partner_go_over_verified_tls() {
    let pki = Pki::new();
    let (addr, partner) = partner_server(&pki, SECURE).await;
    let server = hub(&pki, Some(addr));
    let mut alice = server.login("alice").await;
    let ack = alice
        .message("t1", "dave@secure.test", "hello over TLS")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let req = tokio::time::timeout(common::PATIENCE, partner)
        .await
        .expect("the partner got a request in time")
        .unwrap()
        .expect("a request over TLS");
    assert_eq!(req.body().as_ref(), b"hello over TLS");
    assert!(
        req.header("Via").unwrap().starts_with("SIP/2.0/TLS"),
        "{req}"
    );
    assert!(
        req.header("From").unwrap().contains("sip:alice@hub.test"),
        "{req}"
    );
    assert!(alice
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "error"));
}

#[tokio::test]
async fn a_certificate_partner_without_an_address_is_found_by_its_sips_srv_records() {
    use common::dns::{Record, TestDns};
    let pki = Pki::new();
    let (addr, partner) = partner_server(&pki, SECURE).await;
    let dead = sip::free_port();
    // The first target refuses the connection; the second is the partner's TLS server, whose
    // certificate names the partner's domain (RFC 5922), not the SRV target's host.
    let loopback = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let dns = TestDns::start(vec![
        Record::srv("_sips._tcp.secure.test", 0, 5, dead, "down.secure.test"),
        Record::srv(
            "_sips._tcp.secure.test",
            5,
            5,
            addr.port(),
            "sip.secure.test",
        ),
        Record::a("down.secure.test", loopback),
        Record::a("sip.secure.test", loopback),
    ]);
    let server = hub_with(&pki, None, &dns.toml());
    let mut alice = server.login("alice").await;
    let ack = alice
        .message("t3", "dave@secure.test", "found by SRV over TLS")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let req = tokio::time::timeout(common::PATIENCE, partner)
        .await
        .expect("the partner got a request in time")
        .unwrap()
        .expect("a request over TLS");
    assert_eq!(req.body().as_ref(), b"found by SRV over TLS");
    assert!(
        req.header("Via").unwrap().starts_with("SIP/2.0/TLS"),
        "{req}"
    );
    assert!(alice
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|v| v["type"] != "error"));
    // A certificate partner is reached over TLS only: plain SIP services are not asked for.
    let queries = dns.queries();
    assert!(
        queries
            .iter()
            .all(|q| !q.starts_with("_sip._tcp") && !q.starts_with("_sip._udp")),
        "{queries:?}"
    );
}

#[tokio::test]
async fn a_partner_whose_certificate_does_not_match_gets_nothing() {
    let pki = Pki::new();
    // The server at the pinned address holds a certificate for another domain.
    let (addr, partner) = partner_server(&pki, "impostor.test").await;
    let server = hub(&pki, Some(addr));
    let mut alice = server.login("alice").await;
    let ack = alice.message("t2", "dave@secure.test", "secret").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let err = alice
        .expect("a failure for t2", |v| {
            v["type"] == "error" && v["id"] == "t2"
        })
        .await;
    assert_eq!(err["code"], "remote_server_not_found", "{err}");
    // The admin API names the failure for the partner.
    let (status, body) = server
        .http_with(
            "GET",
            "/api/v1/admin/partners",
            None,
            "Authorization: Bearer tls-links\r\n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = &v["partners"][0];
    assert_eq!(entry["connected"], false, "{v}");
    let text = entry["last_error"].as_str().unwrap_or_default();
    assert!(
        text.contains("not valid for secure.test") && text.contains(&addr.to_string()),
        "{v}"
    );
    let links = entry["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{v}");
    assert_eq!(links[0]["transport"], "sip-tls");
    assert_eq!(links[0]["auth"], "certificate");
    assert!(links[0]["since"].is_null(), "{v}");
    // The impostor never saw the request.
    let got = tokio::time::timeout(Duration::from_secs(2), partner).await;
    assert!(
        !matches!(got, Ok(Ok(Some(_)))),
        "the request went to a peer with the wrong certificate"
    );
}
