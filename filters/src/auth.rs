//! Virtual API keys: who is calling.
//!
//! A key is `sk-sluice-` followed by 43 base62 characters (256 random bits).
//! Only its SHA-256 is ever stored; a presented key is hashed and looked up by
//! hash (a plain digest suffices: keys are random, not passwords, so there is
//! nothing to stretch), then compared in constant time. Static keys come from
//! config; keys created through the admin API come from a [`KeySource`] (the
//! database), cached in moka — hits and misses alike, misses briefly, so an
//! attacker spraying keys cannot hammer the database.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

pub use sluice_config::Priority;

/// Prefix of every key sluice mints.
pub const KEY_PREFIX: &str = "sk-sluice-";

/// SHA-256 of a plaintext key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a presented or configured key.
    pub fn of(plaintext: &str) -> Self {
        KeyHash(Sha256::digest(plaintext.as_bytes()).into())
    }

    /// Parses 64 hex digits (config's `key_sha256`).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(KeyHash(bytes.try_into().ok()?))
    }

    /// Lower-case hex, as stored in the database.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time equality, for the final check after a lookup.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell keys apart in logs and reveals nothing usable.
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// Mints a new key; returns the plaintext (shown once) and its hash.
pub fn generate_key() -> (String, KeyHash) {
    use rand::Rng;
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..43)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect();
    let key = format!("{KEY_PREFIX}{body}");
    let hash = KeyHash::of(&key);
    (key, hash)
}

/// A key as sluice knows it (never the plaintext).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    /// Stable, non-secret id (`acme-ci`), used in logs, metrics and the ledger.
    pub key_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Model names it may use; `None` means all.
    pub models: Option<Vec<String>>,
    /// Highest priority it may ask for.
    pub priority: Priority,
    /// Unix seconds after which it stops working.
    pub expires_at: Option<i64>,
    /// Disabled keys are refused like unknown ones, with their own message.
    pub enabled: bool,
    /// Limits on this key alone.
    pub limits: sluice_config::Limits,
    /// Budget on this key alone.
    pub budget: Option<sluice_config::Budget>,
}

impl KeyEntry {
    /// A key declared under `tenants.<tenant>.keys` in config.
    pub fn from_settings(tenant: &str, key: &sluice_config::KeySettings) -> Self {
        KeyEntry {
            key_id: key.id.clone(),
            tenant: tenant.to_string(),
            hash: KeyHash(key.sha256),
            models: key.models.clone(),
            priority: key.priority,
            expires_at: key.expires_at,
            enabled: key.enabled,
            limits: key.limits,
            budget: key.budget.clone(),
        }
    }
}

impl KeyEntry {
    /// Whether this key may call `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|allowed| allowed == model))
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` or `api-key` header.
    #[error("You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'.")]
    Missing,
    /// The key is not known.
    #[error("Incorrect API key provided.")]
    Invalid,
    /// The key is past its expiry.
    #[error("The API key provided has expired.")]
    Expired,
    /// The key was disabled by an administrator.
    #[error("The API key provided has been disabled.")]
    Disabled,
    /// The key may not use this model.
    #[error("This key does not have access to model `{model}`.")]
    ModelNotAllowed {
        /// The model asked for.
        model: String,
    },
    /// The key store could not be read.
    #[error("The key store is unavailable.")]
    StoreUnavailable,
}

impl AuthError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_key",
            AuthError::Invalid => "invalid_key",
            AuthError::Expired => "expired_key",
            AuthError::Disabled => "disabled_key",
            AuthError::ModelNotAllowed { .. } => "model_not_allowed",
            AuthError::StoreUnavailable => "key_store_unavailable",
        }
    }
}

/// Why a [`KeySource`] could not answer.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    /// The store could not be reached or failed the lookup.
    #[error("key store unreachable: {0}")]
    Unreachable(String),
    /// The stored key's row does not read back as a valid key (never
    /// treated as "no such key": the row is corrupt).
    #[error("stored key {key_id} is invalid: {reason}")]
    Corrupt {
        /// The stored key's id.
        key_id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Keys beyond the static config: the database behind the admin API.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The key with this hash, if any. `Err` means the store failed.
    async fn find(&self, hash: &KeyHash) -> Result<Option<KeyEntry>, KeySourceError>;
}

/// Resolves presented keys to [`KeyEntry`]s.
pub struct Authenticator {
    static_keys: HashMap<KeyHash, Arc<KeyEntry>>,
    source: Option<Arc<dyn KeySource>>,
    found: moka::future::Cache<KeyHash, Arc<KeyEntry>>,
    not_found: moka::future::Cache<KeyHash, ()>,
}

/// How long a database hit stays cached; admin changes also invalidate at once.
const FOUND_TTL: Duration = Duration::from_secs(60);
/// How long an unknown key stays known-unknown.
const NOT_FOUND_TTL: Duration = Duration::from_secs(5);

impl Authenticator {
    /// Static keys from config, plus an optional database source.
    pub fn new(static_keys: Vec<KeyEntry>, source: Option<Arc<dyn KeySource>>) -> Self {
        Authenticator {
            static_keys: static_keys
                .into_iter()
                .map(|k| (k.hash, Arc::new(k)))
                .collect(),
            source,
            found: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FOUND_TTL)
                .build(),
            not_found: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(NOT_FOUND_TTL)
                .build(),
        }
    }

    /// The key a request presents: `Authorization: Bearer <key>`, else the
    /// Azure-style `api-key: <key>` header.
    pub fn presented_key<'a>(
        authorization: Option<&'a [u8]>,
        api_key: Option<&'a [u8]>,
    ) -> Option<&'a str> {
        let from_bearer = authorization.and_then(|v| {
            let v = std::str::from_utf8(v).ok()?.trim();
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        from_bearer
            .or_else(|| {
                api_key
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::trim)
            })
            .filter(|k| !k.is_empty())
    }

    /// Checks a presented key at time `now_unix` (seconds).
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
        now_unix: i64,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        let presented = presented.ok_or(AuthError::Missing)?;
        let hash = KeyHash::of(presented);
        let entry = match self.static_keys.get(&hash) {
            Some(entry) => entry.clone(),
            None => self.lookup(&hash).await?,
        };
        if !entry.hash.ct_eq(&hash) {
            return Err(AuthError::Invalid);
        }
        if !entry.enabled {
            return Err(AuthError::Disabled);
        }
        if entry.expires_at.is_some_and(|t| now_unix >= t) {
            return Err(AuthError::Expired);
        }
        Ok(entry)
    }

    async fn lookup(&self, hash: &KeyHash) -> Result<Arc<KeyEntry>, AuthError> {
        if let Some(entry) = self.found.get(hash).await {
            return Ok(entry);
        }
        if self.not_found.contains_key(hash) {
            return Err(AuthError::Invalid);
        }
        let Some(source) = &self.source else {
            return Err(AuthError::Invalid);
        };
        match source.find(hash).await {
            Ok(Some(entry)) => {
                let entry = Arc::new(entry);
                self.found.insert(*hash, entry.clone()).await;
                Ok(entry)
            }
            Ok(None) => {
                self.not_found.insert(*hash, ()).await;
                Err(AuthError::Invalid)
            }
            Err(detail) => {
                tracing::warn!(error = %detail, "key store lookup failed");
                Err(AuthError::StoreUnavailable)
            }
        }
    }

    /// Forgets a cached key at once (after rotate, disable or delete).
    pub async fn invalidate(&self, hash: &KeyHash) {
        self.found.invalidate(hash).await;
        self.not_found.invalidate(hash).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn entry(key: &str) -> KeyEntry {
        KeyEntry {
            key_id: "k1".into(),
            tenant: "acme".into(),
            hash: KeyHash::of(key),
            models: Some(vec!["fast".into()]),
            priority: Priority::Standard,
            expires_at: None,
            enabled: true,
            limits: Default::default(),
            budget: None,
        }
    }

    struct CountingSource(KeyEntry, AtomicUsize);

    #[async_trait]
    impl KeySource for CountingSource {
        async fn find(&self, hash: &KeyHash) -> Result<Option<KeyEntry>, KeySourceError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok((*hash == self.0.hash).then(|| self.0.clone()))
        }
    }

    #[test]
    fn generated_keys_are_long_random_and_hash_stably() {
        let (a, ha) = generate_key();
        let (b, _) = generate_key();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(KeyHash::of(&a), ha);
        assert_eq!(KeyHash::from_hex(&ha.to_hex()), Some(ha));
        assert!(!format!("{ha:?}").contains(&ha.to_hex()));
    }

    #[test]
    fn presented_key_reads_bearer_then_api_key() {
        assert_eq!(
            Authenticator::presented_key(Some(b"Bearer sk-1"), None),
            Some("sk-1")
        );
        assert_eq!(
            Authenticator::presented_key(Some(b"bearer  sk-1 "), None),
            Some("sk-1")
        );
        assert_eq!(
            Authenticator::presented_key(None, Some(b"sk-2")),
            Some("sk-2")
        );
        assert_eq!(Authenticator::presented_key(Some(b"Basic xyz"), None), None);
        assert_eq!(Authenticator::presented_key(Some(b"Bearer "), None), None);
    }

    #[tokio::test]
    async fn static_keys_check_state_and_expiry() {
        let mut disabled = entry("sk-off");
        disabled.enabled = false;
        disabled.key_id = "k2".into();
        let mut expired = entry("sk-old");
        expired.expires_at = Some(100);
        let auth = Authenticator::new(vec![entry("sk-good"), disabled, expired], None);
        assert_eq!(
            auth.authenticate(Some("sk-good"), 0).await.unwrap().key_id,
            "k1"
        );
        assert_eq!(auth.authenticate(None, 0).await, Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("sk-bad"), 0).await,
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.authenticate(Some("sk-off"), 0).await,
            Err(AuthError::Disabled)
        );
        assert!(auth.authenticate(Some("sk-old"), 99).await.is_ok());
        assert_eq!(
            auth.authenticate(Some("sk-old"), 100).await,
            Err(AuthError::Expired)
        );
    }

    #[tokio::test]
    async fn source_hits_and_misses_are_cached() {
        let source = Arc::new(CountingSource(entry("sk-db"), AtomicUsize::new(0)));
        let auth = Authenticator::new(vec![], Some(source.clone()));
        for _ in 0..3 {
            assert!(auth.authenticate(Some("sk-db"), 0).await.is_ok());
            assert_eq!(
                auth.authenticate(Some("sk-nope"), 0).await,
                Err(AuthError::Invalid)
            );
        }
        assert_eq!(
            source.1.load(Ordering::SeqCst),
            2,
            "one lookup per distinct key"
        );
        auth.invalidate(&KeyHash::of("sk-db")).await;
        assert!(auth.authenticate(Some("sk-db"), 0).await.is_ok());
        assert_eq!(source.1.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn model_allow_list() {
        let e = entry("x");
        assert!(e.allows_model("fast"));
        assert!(!e.allows_model("gpt-4o"));
        let all = KeyEntry { models: None, ..e };
        assert!(all.allows_model("anything"));
    }
}
