//! TLS for the Postgres front door, from the same PEM certificate chain and key as Flight's.

use std::sync::Arc;

use flywheel_engine::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// An acceptor for `cert` (a PEM chain) and `key` (a PEM private key).
pub fn acceptor(cert: &[u8], key: &[u8]) -> Result<TlsAcceptor> {
    // Several TLS backends are linked in (object stores bring their own); pick one for the
    // process. Failing means one was already installed, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("bad TLS certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| Error::Config(format!("bad TLS key: {e}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("bad TLS certificate or key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
