//! A minimal blocking driver for trying the s2s machines against a real XMPP server over loopback:
//! for interop checks, never for production (it accepts any certificate, so dialback
//! authenticates every pair). The real driver (tokio, rustls, DNS) lives in the server.
//! Plaintext by default; `--tls` requires STARTTLS both ways (rustls, a self-signed certificate
//! for `--domain`, any peer certificate accepted, so dialback decides); `--pki DIR` uses
//! `DIR/ca.crt` and `DIR/<domain>.crt|.key` instead and verifies the peer's certificate against
//! that CA, so SASL EXTERNAL can authenticate the streams.
//!
//! It listens as `--domain` (default hub.test) on `--listen`, accepts streams from the peer,
//! checks their dialback keys by asking the peer at `--peer-addr` with `db:verify`, prints every
//! event it receives, and answers each message with an echo on its own outbound stream (which the
//! peer in turn verifies by connecting back). It exits 0 once `--messages` echoes were accepted.
//!
//! cargo run -p entente-xmpp --example s2s_peer -- --listen 127.0.0.1:5269 --peer corp-a.test \
//!     --peer-addr 127.0.0.1:5270 --messages 1

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_model::{Address, DomainKind, Event, Message};
use entente_xmpp::{Config, DialbackRequest, Inbound, Outbound, Output};

struct Args {
    listen: String,
    domain: String,
    peer: String,
    peer_addr: String,
    messages: usize,
    timeout: Duration,
    tls: bool,
    pki: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        listen: "127.0.0.1:5269".into(),
        domain: "hub.test".into(),
        peer: "corp-a.test".into(),
        peer_addr: "127.0.0.1:5270".into(),
        messages: 1,
        timeout: Duration::from_secs(60),
        tls: false,
        pki: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--tls" {
            a.tls = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--listen" => a.listen = value,
            "--domain" => a.domain = value,
            "--peer" => a.peer = value,
            "--peer-addr" => a.peer_addr = value,
            "--messages" => a.messages = value.parse().unwrap_or(1),
            "--pki" => {
                a.tls = true;
                a.pki = Some(value)
            }
            "--timeout" => a.timeout = Duration::from_secs(value.parse().unwrap_or(60)),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn log(tag: &str, what: &str) {
    println!("[{tag}] {what}");
}

/// The calls a driver makes, common to both machines.
trait Machine {
    fn input(&mut self, bytes: &[u8], now: Instant);
    fn eof(&mut self, now: Instant);
    fn transmit(&mut self) -> Option<Vec<u8>>;
    fn event(&mut self) -> Option<Output>;
    fn timeout(&self) -> Option<Instant>;
    fn on_timeout(&mut self, now: Instant);
    fn tls_done(&mut self, ok: bool, identities: Vec<String>, now: Instant);
    /// The TLS role: client for the side that opened the connection.
    const INITIATOR: bool;
}

macro_rules! machine {
    ($t:ty, $initiator:expr) => {
        impl Machine for $t {
            const INITIATOR: bool = $initiator;
            fn tls_done(&mut self, ok: bool, identities: Vec<String>, now: Instant) {
                if ok {
                    self.tls_established(identities, now)
                } else {
                    self.tls_failed(now)
                }
            }
            fn input(&mut self, bytes: &[u8], now: Instant) {
                self.handle_input(bytes, now)
            }
            fn eof(&mut self, now: Instant) {
                self.handle_eof(now)
            }
            fn transmit(&mut self) -> Option<Vec<u8>> {
                self.poll_transmit()
            }
            fn event(&mut self) -> Option<Output> {
                self.poll_event()
            }
            fn timeout(&self) -> Option<Instant> {
                self.poll_timeout()
            }
            fn on_timeout(&mut self, now: Instant) {
                self.handle_timeout(now)
            }
        }
    };
}
machine!(Inbound, false);
machine!(Outbound, true);

/// The connection, before and after STARTTLS.
enum Transport {
    Plain(TcpStream),
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Gone,
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Client(s) => s.read(buf),
            Transport::Server(s) => s.read(buf),
            Transport::Gone => Ok(0),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Client(s) => s.write(buf),
            Transport::Server(s) => s.write(buf),
            Transport::Gone => Err(ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Client(s) => s.flush(),
            Transport::Server(s) => s.flush(),
            Transport::Gone => Ok(()),
        }
    }
}

/// TLS material of this example: either a self-signed certificate for our domain and a client
/// that accepts any server certificate, or certificates from a test CA that both sides check.
struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    verified: bool,
}

fn pem_certs(path: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .expect("certificates")
}

fn tls(domain: &str, pki: Option<&str>) -> Tls {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(dir) = pki else {
        let cert =
            rcgen::generate_simple_self_signed(vec![domain.to_string()]).expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config");
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        return Tls {
            server: Arc::new(server),
            client: Arc::new(client),
            verified: false,
        };
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&format!("{dir}/ca.crt")) {
        roots.add(ca).expect("CA certificate");
    }
    let roots = Arc::new(roots);
    let chain = pem_certs(&format!("{dir}/{domain}.crt"));
    let key_bytes = std::fs::read(format!("{dir}/{domain}.key")).expect("key file");
    let key = || rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_bytes).expect("key");
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .expect("client verifier");
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key())
        .expect("server config");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key())
        .expect("client config");
    Tls {
        server: Arc::new(server),
        client: Arc::new(client),
        verified: true,
    }
}

/// RFC 6125 in miniature: is the (already chain-verified) end-entity certificate valid for `name`?
fn certifies(der: &rustls::pki_types::CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs the handshake on the plain socket; returns the secured transport and the domains the
/// peer's certificate was verified for.
fn upgrade(
    plain: Transport,
    initiator: bool,
    remote: &str,
    tls: &Tls,
) -> io::Result<(Transport, Vec<String>)> {
    let Transport::Plain(mut sock) = plain else {
        return Err(ErrorKind::InvalidInput.into());
    };
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (t, identities) = if initiator {
        let name = rustls::pki_types::ServerName::try_from(remote.to_string())
            .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        let mut conn =
            rustls::ClientConnection::new(tls.client.clone(), name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        // With the CA, rustls checked the chain and the name `remote`.
        let ids = if tls.verified {
            vec![remote.to_string()]
        } else {
            vec![]
        };
        let t = Transport::Client(Box::new(rustls::StreamOwned::new(conn, sock.try_clone()?)));
        (t, ids)
    } else {
        let mut conn =
            rustls::ServerConnection::new(tls.server.clone()).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        // A client certificate, when presented, was chain-checked by the verifier.
        let ids = match conn.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) if tls.verified && certifies(leaf, remote) => vec![remote.to_string()],
            _ => vec![],
        };
        let t = Transport::Server(Box::new(rustls::StreamOwned::new(conn, sock.try_clone()?)));
        (t, ids)
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok((t, identities))
}

/// Runs `m` on `sock`, calling `on_output` for each output; stops when it returns false or the
/// stream closes. STARTTLS is handled here: the transport is upgraded in place.
fn drive<M: Machine>(
    m: &mut M,
    sock: TcpStream,
    remote: &str,
    tls: Option<&Tls>,
    tag: &str,
    mut on_output: impl FnMut(&mut M, Output) -> bool,
) {
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut t = Transport::Plain(sock);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(bytes) = m.transmit() {
            log(tag, &format!(">>> {}", String::from_utf8_lossy(&bytes)));
            if t.write_all(&bytes).and_then(|_| t.flush()).is_err() {
                return;
            }
        }
        while let Some(o) = m.event() {
            let closed = matches!(o, Output::Closed(_));
            log(tag, &format!("output {o:?}"));
            if o == Output::StartTls {
                // Everything before this output is on the wire, in plaintext.
                let result = match tls {
                    Some(tls) => {
                        let plain = std::mem::replace(&mut t, Transport::Gone);
                        upgrade(plain, M::INITIATOR, remote, tls)
                    }
                    None => Err(ErrorKind::Unsupported.into()),
                };
                match result {
                    Ok((secured, identities)) => {
                        t = secured;
                        log(
                            tag,
                            &format!("TLS up, peer certificate verified for {identities:?}"),
                        );
                        m.tls_done(true, identities, Instant::now());
                    }
                    Err(e) => {
                        log(tag, &format!("TLS failed: {e}"));
                        m.tls_done(false, Vec::new(), Instant::now());
                    }
                }
                continue;
            }
            if !on_output(m, o) || closed {
                while let Some(bytes) = m.transmit() {
                    let _ = t.write_all(&bytes).and_then(|_| t.flush());
                }
                return;
            }
        }
        match t.read(&mut buf) {
            Ok(0) => m.eof(Instant::now()),
            Ok(n) => {
                let bytes = buf.get(..n).unwrap_or(&[]);
                log(tag, &format!("<<< {}", String::from_utf8_lossy(bytes)));
                m.input(bytes, Instant::now());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => m.eof(Instant::now()),
        }
        let now = Instant::now();
        if m.timeout().is_some_and(|t| now >= t) {
            m.on_timeout(now);
        }
    }
}

/// Asks the authoritative server at `addr` whether `request` carries a genuine key.
fn verify(cfg: &Arc<Config>, addr: &str, tls: Option<&Tls>, request: DialbackRequest) -> bool {
    let Ok(sock) = TcpStream::connect(addr) else {
        return false;
    };
    let mut out = Outbound::new(
        cfg.clone(),
        &request.receiving,
        &request.originating,
        Instant::now(),
    );
    let remote = request.originating.clone();
    out.verify_dialback(request, Instant::now());
    let mut verdict = false;
    drive(&mut out, sock, &remote, tls, "verify", |m, o| match o {
        Output::DialbackVerified { valid, .. } => {
            verdict = valid;
            m.close(Instant::now());
            true
        }
        _ => true,
    });
    verdict
}

fn main() {
    let a = args();
    let mut served = BTreeMap::new();
    served.insert(a.domain.clone(), DomainKind::Hub);
    let mut cfg = Config::new(served, b"example secret, not for production".to_vec());
    cfg.require_tls = a.tls;
    cfg.offer_tls = a.tls;
    let cfg = Arc::new(cfg);
    let tls = a.tls.then(|| Arc::new(tls(&a.domain, a.pki.as_deref())));
    let listener = TcpListener::bind(&a.listen).expect("bind");
    log("main", &format!("{} listening on {}", a.domain, a.listen));
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    {
        let cfg = cfg.clone();
        let peer_addr = a.peer_addr.clone();
        let peer = a.peer.clone();
        let tls = tls.clone();
        std::thread::spawn(move || {
            for (n, sock) in listener.incoming().enumerate() {
                let Ok(sock) = sock else { continue };
                let cfg = cfg.clone();
                let peer_addr = peer_addr.clone();
                let events_tx = events_tx.clone();
                let tls = tls.clone();
                let peer = peer.clone();
                std::thread::spawn(move || {
                    let tag = format!("in{n}");
                    let mut inb = Inbound::new(cfg.clone(), Instant::now());
                    drive(&mut inb, sock, &peer, tls.as_deref(), &tag, |m, o| {
                        match o {
                            Output::VerifyDialback(request) => {
                                let valid =
                                    verify(&cfg, &peer_addr, tls.as_deref(), request.clone());
                                m.dialback_verified(&request, valid, Instant::now());
                            }
                            Output::Event(e) => {
                                let _ = events_tx.send(e);
                            }
                            _ => {}
                        }
                        true
                    });
                });
            }
        });
    }
    let deadline = Instant::now() + a.timeout;
    let mut echoed = 0;
    while echoed < a.messages {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = events_rx.recv_timeout(left) else {
            log("main", "timed out");
            std::process::exit(1);
        };
        log("main", &format!("EVENT {event:?}"));
        let Event::Message(m) = event else { continue };
        let echo = Event::Message(Message {
            id: format!("echo-{}", m.id),
            from: Address::new(m.to.local(), m.to.domain(), DomainKind::Hub).expect("address"),
            to: m.from.clone(),
            body: format!("echo: {}", m.body),
            thread: m.thread.clone(),
            ts: m.ts,
        });
        let sock = TcpStream::connect(&a.peer_addr).expect("connect to peer");
        let mut out = Outbound::new(cfg.clone(), &a.domain, &a.peer, Instant::now());
        out.send(echo, Instant::now()).expect("send");
        let mut accepted = false;
        drive(
            &mut out,
            sock,
            &a.peer,
            tls.as_deref(),
            "out",
            |m, o| match o {
                Output::Authorised(_) => {
                    accepted = true;
                    // Give the peer the stanza, then close politely.
                    m.close(Instant::now());
                    true
                }
                Output::Refused { .. } => false,
                _ => true,
            },
        );
        if !accepted {
            log("main", "echo refused");
            std::process::exit(1);
        }
        echoed += 1;
        log("main", &format!("ECHO ACCEPTED {echoed}"));
    }
}
