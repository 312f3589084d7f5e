//! Picking the certificate for a handshake by the SNI hostname.

use super::{load, Loaded, TlsError};
use crate::ops::Metrics;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sluice_config::{CertFiles, ServerTls};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The metrics name of the certificate served without an SNI match.
pub(super) const DEFAULT_NAME: &str = "default";

/// The certificates served now, swapped whole when a file is re-read; a
/// handshake takes the set under a read lock held for one `Arc` clone.
#[derive(Debug)]
pub struct SniResolver {
    current: RwLock<Arc<CertSet>>,
}

/// One generation of certificates.
#[derive(Debug)]
pub(super) struct CertSet {
    /// Served when no name matches, or the client sent no SNI.
    default: Arc<CertifiedKey>,
    /// By lower-cased hostname; `*.example.com` entries as written.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// One configured certificate, as the reloader tracks it.
pub(super) struct Entry {
    /// `default` or the SNI hostname.
    pub(super) name: String,
    pub(super) files: CertFiles,
    pub(super) key: Arc<CertifiedKey>,
}

impl CertSet {
    /// Builds a set from entries whose first is the default.
    pub(super) fn from_entries(entries: &[Entry]) -> Option<CertSet> {
        CertSet::from_entry_refs(&entries.iter().collect::<Vec<_>>())
    }

    /// [`CertSet::from_entries`] over borrowed entries.
    pub(super) fn from_entry_refs(entries: &[&Entry]) -> Option<CertSet> {
        let (first, rest) = entries.split_first()?;
        Some(CertSet {
            default: first.key.clone(),
            by_name: rest
                .iter()
                .map(|e| (e.name.clone(), e.key.clone()))
                .collect(),
        })
    }

    /// The certificate for `server_name`: an exact name, else a wildcard
    /// for its parent domain, else the default.
    fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.by_name.get(&name) {
            return key;
        }
        match name.split_once('.') {
            Some((_, parent)) if !parent.is_empty() => self
                .by_name
                .get(&format!("*.{parent}"))
                .unwrap_or(&self.default),
            _ => &self.default,
        }
    }
}

impl SniResolver {
    /// Loads every certificate of `settings`; one bad file refuses them all
    /// (at startup there is no old certificate to keep).
    pub(super) fn load(
        settings: &ServerTls,
        default_name: &str,
        metrics: &Metrics,
    ) -> Result<(SniResolver, Vec<Entry>), TlsError> {
        let named = std::iter::once((default_name, &settings.default))
            .chain(settings.sni.iter().map(|s| (s.hostname.as_str(), &s.files)));
        let mut entries = Vec::with_capacity(settings.sni.len() + 1);
        for (name, files) in named {
            let Loaded { key, not_after } = load(files)?;
            observe_expiry(metrics, name, not_after);
            entries.push(Entry {
                name: name.to_string(),
                files: files.clone(),
                key,
            });
        }
        let set = CertSet::from_entries(&entries).ok_or(TlsError::Pem {
            path: settings.default.cert_file.display().to_string(),
            message: "no certificate".to_string(),
        })?;
        let resolver = SniResolver {
            current: RwLock::new(Arc::new(set)),
        };
        Ok((resolver, entries))
    }

    /// Serves `set` from the next handshake on.
    pub(super) fn swap(&self, set: CertSet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    fn current(&self) -> Arc<CertSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().pick(client_hello.server_name()).clone())
    }
}

/// Sets `sluice_tls_certificate_expiry_seconds{name}`, warning when the
/// certificate has already expired (it is served all the same: refusing
/// it would not help the clients).
pub(super) fn observe_expiry(metrics: &Metrics, name: &str, not_after: i64) {
    metrics
        .edge
        .tls_expiry
        .with_label_values(&[name])
        .set(not_after);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after <= now {
        tracing::warn!(certificate = name, not_after, "TLS certificate has expired");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;

    fn key(tag: u8) -> Arc<CertifiedKey> {
        let signing = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            rcgen::KeyPair::generate().unwrap().serialize_der().into(),
        ))
        .unwrap();
        Arc::new(CertifiedKey::new(vec![vec![tag].into()], signing))
    }

    fn tag(key: &CertifiedKey) -> u8 {
        key.cert[0].as_ref()[0]
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let set = CertSet {
            default: key(0),
            by_name: [
                ("api.example.com".to_string(), key(1)),
                ("*.example.com".to_string(), key(2)),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(tag(set.pick(Some("API.example.com"))), 1);
        assert_eq!(tag(set.pick(Some("other.example.com"))), 2);
        assert_eq!(tag(set.pick(Some("a.b.example.com"))), 0);
        assert_eq!(tag(set.pick(Some("example.com"))), 0);
        assert_eq!(tag(set.pick(Some("elsewhere.org"))), 0);
        assert_eq!(tag(set.pick(None)), 0);
    }
}
