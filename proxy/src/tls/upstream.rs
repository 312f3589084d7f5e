//! An upstream's `ca_file`: the CA certificates trusted for its TLS, in
//! place of the system's roots (which pingora's connector uses otherwise;
//! verification of the certificate and host name is on either way).
//!
//! pingora takes them per peer (`PeerOptions::ca`) and builds a root store
//! from them on each new connection, so a `ca_file` is best kept to the few
//! certificates that sign the upstream (new connections are rare: the pool
//! keeps them alive).

use super::{certificates, read, TlsError};
use pingora::protocols::tls::CaType;
use pingora::utils::tls::WrappedX509;
use std::path::Path;
use std::sync::Arc;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Reads the CA certificates of `path` for a peer: every one must parse and
/// be usable by rustls as a trust anchor.
pub fn upstream_roots(path: &Path) -> Result<Arc<CaType>, TlsError> {
    let chain = certificates(path, &read(path)?)?;
    let bad = |message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let mut store = rustls::RootCertStore::empty();
    let mut roots = Vec::with_capacity(chain.len());
    for der in chain {
        store
            .add(der.clone())
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        let wrapped = WrappedX509::try_new(der.to_vec(), |raw| {
            X509Certificate::from_der(raw).map(|(_, cert)| cert)
        })
        .map_err(|e| bad(format!("unreadable certificate: {e}")))?;
        roots.push(wrapped);
    }
    Ok(Arc::from(roots))
}
