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
