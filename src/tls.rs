//! HTTPS: the rustls server configuration from `tls.cert` and `tls.key` (PEM files), with ring
//! as the crypto provider. Every failure names the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used, in words an operator can act on.
fn pem_error(setting: &str, path: &Path, what: &str, e: pem::Error) -> anyhow::Error {
    let why = match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("it holds no PEM {what}"),
        other => format!("it is not valid PEM: {other}"),
    };
    anyhow::anyhow!("{setting} {}: {why}", path.display())
}

/// The server configuration for `cert` (chain, leaf first) and `key`.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error("tls.cert", cert, "certificate", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("tls.cert", cert, "certificate", e))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls.cert {}: it holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_error("tls.key", key, "private key (PKCS#8, PKCS#1 or SEC1)", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            anyhow::anyhow!(
                "tls.cert {} and tls.key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            )
        })
}
