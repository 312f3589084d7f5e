//! TLS: the public listener's certificates (picked by SNI, re-read when
//! their files change) and the CA roots of upstreams with a `ca_file`.
//!
//! Where to start: [`for_server`] builds what `server.tls` asks for — the
//! [`Acceptor`] the edge hands each new connection to, and the
//! [`CertReloader`] that re-reads changed files into the [`SniResolver`].
//!
//! Why the edge runs the handshake and the listener stays plain TCP, rather
//! than pingora's `Service::add_tls_with_settings`: pingora 0.9's rustls
//! `TlsSettings` does take a custom `ResolvesServerCert`
//! (`set_cert_resolver`), enough for SNI and rotation, but its listener runs
//! the handshake before the application sees the connection — under a fixed
//! 60 s deadline, outside the edge's connection caps (the handshake is the
//! expensive part to cap), and logging each failed handshake (every port
//! scanner) at `error`. One layer down, `Acceptor::from_server_config` takes
//! a whole rustls `ServerConfig`; the edge (`app/edge.rs`) runs its
//! handshake once a connection is admitted, under `server.header_timeout_ms`.

mod reload;
mod resolver;
mod upstream;

pub use reload::CertReloader;
pub use resolver::SniResolver;
pub use upstream::upstream_roots;

use crate::ops::Metrics;
use pingora::listeners::tls::Acceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sluice_config::{CertFiles, Config, ServerTls};
use std::path::Path;
use std::sync::Arc;

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the kind expected.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The key is unsupported or does not belong to the certificate.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls refused the protocol versions (a bug).
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    /// A label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "read",
            TlsError::Pem { .. } => "pem",
            TlsError::Key { .. } => "key",
            TlsError::Config(_) => "config",
        }
    }
}

/// What `server.tls` and `server.admin_tls` start.
#[derive(Default)]
pub struct ServerTlsParts {
    /// Runs each public connection's handshake; `None`: plain HTTP.
    pub acceptor: Option<Arc<Acceptor>>,
    /// The same for the admin listener (with client certificates checked
    /// when `client_ca_file` is set).
    pub admin_acceptor: Option<Arc<Acceptor>>,
    /// Re-read changed certificate files (one per listener with TLS whose
    /// `reload_interval_s` is not 0).
    pub reloaders: Vec<CertReloader>,
}

/// ALPN protocols offered, in server preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Called once at startup: checks every upstream's `ca_file` (so a bad one
/// stops sluice here rather than failing each connection), and builds the
/// listener's TLS when `server.tls` is set.
pub fn for_server(config: &Config, metrics: &Arc<Metrics>) -> Result<ServerTlsParts, TlsError> {
    for upstream in &config.upstreams {
        if let Some(path) = &upstream.ca_file {
            upstream_roots(path)?;
        }
    }
    let mut parts = ServerTlsParts::default();
    if let Some(settings) = &config.server.tls {
        let (acceptor, reloader) = start(settings, resolver::DEFAULT_NAME, metrics.clone())?;
        parts.acceptor = Some(acceptor);
        parts.reloaders.extend(reloader);
    }
    if let Some(settings) = &config.server.admin_tls {
        let (acceptor, reloader) = start(settings, ADMIN_NAME, metrics.clone())?;
        parts.admin_acceptor = Some(acceptor);
        parts.reloaders.extend(reloader);
    }
    Ok(parts)
}

/// The admin listener's default certificate, as metrics name it.
const ADMIN_NAME: &str = "admin";

/// Loads every certificate of `settings` (refusing a bad one), and builds
/// the acceptor: TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, the
/// certificate picked by SNI (`default_name` labels the default one's
/// metrics), and with `client_ca_file` a client certificate required.
fn start(
    settings: &ServerTls,
    default_name: &'static str,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Acceptor>, Option<CertReloader>), TlsError> {
    let (resolver, entries) = resolver::SniResolver::load(settings, default_name, &metrics)?;
    let resolver = Arc::new(resolver);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?;
    let builder = match &settings.client_ca_file {
        None => versions.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in certificates(path, &read(path)?)? {
                roots.add(der).map_err(|e| TlsError::Pem {
                    path: path.display().to_string(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Pem {
                path: path.display().to_string(),
                message: format!("cannot verify clients with it: {e}"),
            })?;
            versions.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    let acceptor = Arc::new(Acceptor::from_server_config(Arc::new(config)));
    let reloader = settings
        .reload_interval
        .map(|interval| CertReloader::new(resolver, entries, interval, metrics));
    Ok((acceptor, reloader))
}

/// A certificate as served: chain and key, and when it expires.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, Unix seconds.
    not_after: i64,
}

/// Reads `files`: the PEM chain (leaf first) and its key, which must match.
fn load(files: &CertFiles) -> Result<Loaded, TlsError> {
    let cert_path = &files.cert_file;
    let chain = certificates(cert_path, &read(cert_path)?)?;
    let key_path = &files.key_file;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|e| TlsError::Pem {
        path: key_path.display().to_string(),
        message: format!("no usable private key: {e}"),
    })?;
    let not_after = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .map_err(|e| TlsError::Pem {
            path: cert_path.display().to_string(),
            message: format!("unreadable certificate: {e}"),
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|source| TlsError::Key {
        path: key_path.display().to_string(),
        source,
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        not_after,
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("unreadable PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no certificate in the file".to_string()));
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}
