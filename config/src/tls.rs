//! TLS settings: `server.tls:` (HTTPS on the public listener, with
//! certificates picked by SNI and re-read when their files change) and the
//! check of an upstream's `ca_file`.
//!
//! Only paths are checked here (each file must be readable); the proxy
//! parses the PEM and refuses a certificate that does not match its key.

use crate::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `server.tls:` — serve HTTPS (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`)
/// instead of plain HTTP on `server.listen`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain (leaf first) served when the client's SNI names
    /// no `sni` entry, or sends none. Required.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`. Required.
    pub key_file: PathBuf,
    /// More certificates, each served to clients asking for its hostname.
    /// Default: none.
    #[serde(default)]
    pub sni: Vec<RawSniCert>,
    /// Seconds between checks of the certificate and key files; a file whose
    /// modification time or size changed is re-read and swapped in without a
    /// restart (a bad one is refused and the old certificate kept). 0 turns
    /// the checks off. Default 10.
    #[serde(default = "default_reload_interval_s")]
    pub reload_interval_s: u64,
    /// PEM CA certificates: when set, every client must present a
    /// certificate signed by one of them (mutual TLS), or its handshake is
    /// refused. Meant for `server.admin_tls`. Default: none (no client
    /// certificate asked for).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `server.tls.sni[]:` — one more certificate, picked by the hostname the
/// client asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniCert {
    /// The name clients send as SNI: `api.example.com`, or `*.example.com`
    /// for any one label in front of `example.com`. Case does not matter; an
    /// exact name wins over a wildcard. Required.
    pub hostname: String,
    /// PEM certificate chain for this hostname. Required.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`. Required.
    pub key_file: PathBuf,
}

fn default_reload_interval_s() -> u64 {
    10
}

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// One `server.tls.sni` entry after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// Lower-cased; a leading `*.` matches one label.
    pub hostname: String,
    /// Its certificate and key.
    pub files: CertFiles,
}

/// `server.tls` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Served when no SNI entry matches.
    pub default: CertFiles,
    /// By hostname, in file order.
    pub sni: Vec<SniCert>,
    /// How often the files are checked for changes; `None`: never.
    pub reload_interval: Option<Duration>,
    /// Clients must present a certificate signed by these CAs (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTls {
    /// Checks `server.tls` (or `server.admin_tls`: `at`): every file
    /// readable, every hostname well formed and given once.
    pub(crate) fn from_raw(raw: &RawTls, at: &str) -> Result<ServerTls, ConfigError> {
        let default = cert_files(&raw.cert_file, &raw.key_file, at)?;
        if let Some(ca) = &raw.client_ca_file {
            readable(ca, &format!("{at}.client_ca_file"))?;
        }
        let mut sni: Vec<SniCert> = Vec::with_capacity(raw.sni.len());
        for (i, entry) in raw.sni.iter().enumerate() {
            let at = format!("{at}.sni[{i}]");
            let hostname = hostname(&entry.hostname)
                .map_err(|m| ConfigError::validation(format!("{at}.hostname"), m))?;
            if sni.iter().any(|s| s.hostname == hostname) {
                return Err(ConfigError::validation(
                    format!("{at}.hostname"),
                    format!("{hostname} is listed twice"),
                ));
            }
            let files = cert_files(&entry.cert_file, &entry.key_file, &at)?;
            sni.push(SniCert { hostname, files });
        }
        Ok(ServerTls {
            default,
            sni,
            reload_interval: (raw.reload_interval_s > 0)
                .then(|| Duration::from_secs(raw.reload_interval_s)),
            client_ca_file: raw.client_ca_file.clone(),
        })
    }
}

fn cert_files(cert: &Path, key: &Path, at: &str) -> Result<CertFiles, ConfigError> {
    readable(cert, &format!("{at}.cert_file"))?;
    readable(key, &format!("{at}.key_file"))?;
    Ok(CertFiles {
        cert_file: cert.to_path_buf(),
        key_file: key.to_path_buf(),
    })
}

/// Refuses a path that is not a readable file, naming `key`.
pub(crate) fn readable(path: &Path, key: &str) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a file"))
            }
        })
        .map_err(|e| ConfigError::validation(key, format!("cannot read {}: {e}", path.display())))
}

/// A lower-cased DNS name, optionally with a leading `*.`.
fn hostname(text: &str) -> Result<String, String> {
    let name = text.trim().to_ascii_lowercase();
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if bare.is_empty() || name.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(format!(
            "{text:?} is not a host name (`api.example.com` or `*.example.com`)"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        (dir, cert, key)
    }

    #[test]
    fn defaults_and_hostnames() {
        let (_dir, cert, key) = files();
        let raw = RawTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
            sni: vec![RawSniCert {
                hostname: "*.Example.com".into(),
                cert_file: cert,
                key_file: key,
            }],
            reload_interval_s: default_reload_interval_s(),
            client_ca_file: None,
        };
        let tls = ServerTls::from_raw(&raw, "server.tls").unwrap();
        assert_eq!(tls.sni[0].hostname, "*.example.com");
        assert_eq!(tls.reload_interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn missing_file_names_its_key() {
        let (_dir, cert, key) = files();
        let raw = RawTls {
            cert_file: cert.clone(),
            key_file: key,
            sni: vec![RawSniCert {
                hostname: "a.example.com".into(),
                cert_file: cert,
                key_file: "/nonexistent/k.pem".into(),
            }],
            reload_interval_s: 0,
            client_ca_file: None,
        };
        let err = ServerTls::from_raw(&raw, "server.tls")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls.sni[0].key_file"), "{err}");
    }

    #[test]
    fn bad_or_repeated_hostnames_are_refused() {
        assert!(hostname("a..b").is_err());
        assert!(hostname("*.").is_err());
        assert!(hostname("a.*.b").is_err());
        let (_dir, cert, key) = files();
        let entry = || RawSniCert {
            hostname: "A.example.com".into(),
            cert_file: cert.clone(),
            key_file: key.clone(),
        };
        let raw = RawTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
            sni: vec![entry(), entry()],
            reload_interval_s: 1,
            client_ca_file: None,
        };
        let err = ServerTls::from_raw(&raw, "server.tls")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls.sni[1].hostname"), "{err}");
    }

    #[test]
    fn upstream_ca_file_is_checked() {
        let load = |extra: &str| {
            let yaml = format!(
                "upstreams:\n  a:\n    base_url: https://127.0.0.1:9/v1\n{extra}models:\n  - name: m\n    upstream: a\n"
            );
            crate::load_str(&yaml, &|_| None)
        };
        let err = load("    ca_file: /nonexistent/ca.pem\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstreams.a.ca_file"), "{err}");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let (_dir, cert, _) = files();
        let ok = load(&format!("    ca_file: {}\n", cert.display())).unwrap();
        assert_eq!(ok.upstreams[0].ca_file.as_deref(), Some(cert.as_path()));
    }
}
