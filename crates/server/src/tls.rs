//! The hub's certificate: the configured one, or a self-signed pair generated in the data
//! directory on first start.

use crate::anyhow_lite::{msg, Result};
use crate::config::Config;
use std::path::PathBuf;

/// Paths of the certificate chain and key in force.
pub fn paths(config: &Config) -> (PathBuf, PathBuf) {
    match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.storage.data_dir.join("tls");
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
    }
}

/// Generates the self-signed pair when no certificate is configured and none exists yet.
pub fn ensure_certificate(config: &Config) -> Result<()> {
    let (cert_path, key_path) = paths(config);
    if config.tls.cert.is_some() {
        for p in [&cert_path, &key_path] {
            if !p.exists() {
                return Err(msg(format!("[tls] {} does not exist", p.display())));
            }
        }
        return Ok(());
    }
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    let domain = config.hub.domain.to_lowercase();
    let names = vec![domain.clone()];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| msg(format!("certificate: {e}")))?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| msg(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&cert_path, certified.cert.pem())
        .map_err(|e| msg(format!("{}: {e}", cert_path.display())))?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    tracing::info!(domain, path = %cert_path.display(), "generated a self-signed certificate");
    Ok(())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| msg(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| msg(format!("{}: {e}", path.display())))
}

// ----- TLS for federation links ---------------------------------------------------------------

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;

/// Installs the one crypto provider of the process (rustls refuses to guess when two are built in).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for partner links. Handshakes accept any certificate the peer presents (a dialback
/// partner may have a self-signed one); what the certificate proves is decided afterwards by
/// [`TlsContext::verified_domains`] against the trust roots, so authentication is never
/// implied by the handshake alone.
pub struct TlsContext {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// As `client`, announcing ALPN "xmpp-server" for XEP-0368 direct TLS.
    pub direct_client: Arc<rustls::ClientConfig>,
    verifier: Arc<rustls::client::WebPkiServerVerifier>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsContext")
    }
}

fn load_chain(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| msg(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| msg(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(msg(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

impl TlsContext {
    pub fn load(config: &Config) -> Result<TlsContext> {
        install_provider();
        let (cert_path, key_path) = paths(config);
        let chain = load_chain(&cert_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| msg(format!("{}: {e}", key_path.display())))?;

        let mut roots = rustls::RootCertStore::empty();
        for path in &config.tls.trust {
            for cert in load_chain(path)? {
                roots
                    .add(cert)
                    .map_err(|e| msg(format!("{}: {e}", path.display())))?;
            }
        }
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(system_roots = added, "trust roots loaded");
        if roots.is_empty() {
            // A verifier needs at least one root; an unusable one trusts nothing.
            roots.add(chain[0].clone()).ok();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| msg(format!("trust roots: {e}")))?;

        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| msg(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyCertificate))
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| msg(format!("{}: {e}", cert_path.display())))?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| msg(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_client_auth_cert(chain, key)
            .map_err(|e| msg(format!("{}: {e}", cert_path.display())))?;
        let mut direct_client = client.clone();
        direct_client.alpn_protocols = vec![b"xmpp-server".to_vec()];
        Ok(TlsContext {
            server: Arc::new(server),
            client: Arc::new(client),
            direct_client: Arc::new(direct_client),
            verifier,
        })
    }

    /// The domains among `candidates` that the peer's chain is valid for (RFC 6125 DNS-ID
    /// matching and path validation to the trust roots, as rustls-webpki does for servers).
    pub fn verified_domains(
        &self,
        chain: &[CertificateDer<'_>],
        candidates: &[&str],
    ) -> Vec<String> {
        let Some((end, intermediates)) = chain.split_first() else {
            return Vec::new();
        };
        candidates
            .iter()
            .filter(|domain| {
                let Ok(name) = ServerName::try_from(domain.to_string()) else {
                    return false;
                };
                self.verifier
                    .verify_server_cert(end, intermediates, &name, &[], UnixTime::now())
                    .is_ok()
            })
            .map(|d| d.to_string())
            .collect()
    }
}

/// Accepts whatever certificate is presented, but still checks that the peer holds its key.
#[derive(Debug)]
struct AnyCertificate;

/// Checks that the peer holds the key of the certificate it presented (TLS 1.2 handshake).
fn tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

/// The same for TLS 1.3.
fn tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

fn schemes() -> Vec<SignatureScheme> {
    provider()
        .signature_verification_algorithms
        .supported_schemes()
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        tls12(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        tls12(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf(
        dir: &std::path::Path,
        domain: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![domain.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_path = dir.join("ca.pem");
        let cert_path = dir.join("leaf.pem");
        let key_path = dir.join("leaf.key");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&cert_path, leaf.pem()).unwrap();
        std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
        (ca_path, cert_path, key_path)
    }

    #[test]
    fn chains_are_verified_per_domain_against_the_configured_roots() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = ca_and_leaf(dir.path(), "corp.example");
        let mut config = Config::default();
        config.storage.data_dir = dir.path().join("data");
        config.hub.domain = "hub.example".into();
        ensure_certificate(&config).unwrap();
        let untrusting = TlsContext::load(&config).unwrap();
        config.tls.trust = vec![ca];
        let trusting = TlsContext::load(&config).unwrap();

        let chain = load_chain(&cert).unwrap();
        assert_eq!(
            trusting.verified_domains(&chain, &["corp.example", "other.example"]),
            vec!["corp.example"]
        );
        assert!(untrusting
            .verified_domains(&chain, &["corp.example"])
            .is_empty());
        // Our own self-signed certificate proves nothing.
        let own = load_chain(&paths(&config).0).unwrap();
        assert!(trusting.verified_domains(&own, &["hub.example"]).is_empty());
        let _ = key;
    }
}

#[cfg(test)]
mod handshake_tests {
    use super::*;

    #[tokio::test]
    async fn our_client_and_server_configs_complete_a_handshake_and_see_each_others_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().join("data");
        config.hub.domain = "hub.example".into();
        ensure_certificate(&config).unwrap();
        let ctx = TlsContext::load(&config).unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(ctx.server.clone());
        let connector = tokio_rustls::TlsConnector::from(ctx.client.clone());
        let name = ServerName::try_from("hub.example".to_string()).unwrap();
        let (server, client) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        let (server, client) = (server.unwrap(), client.unwrap());
        assert_eq!(
            server.get_ref().1.peer_certificates().map(|c| c.len()),
            Some(1)
        );
        assert_eq!(
            client.get_ref().1.peer_certificates().map(|c| c.len()),
            Some(1)
        );
    }
}
