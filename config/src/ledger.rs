//! The `ledger:` and `pricing:` sections: raw and validated.

use crate::{ConfigError, Secret};
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// `ledger:` — where usage records go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Keep usage records. Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `sqlite:PATH` (created on first use) or `postgres://user:pass@host/db`.
    /// Default `sqlite:sluice-data/ledger.db`.
    #[serde(default)]
    pub database_url: Option<Secret>,
    /// Where records wait while the database is away. Default `sluice-data/spool`.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// This node's name in the hash chain; unique per node sharing a
    /// database, stable across restarts. Default `local`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Serve models with no known price (records are flagged unpriced). Default `true`.
    #[serde(default)]
    pub allow_unpriced: Option<bool>,
    /// Records buffered in memory before the writer. Default 10000.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Records per database transaction. Default 256.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Longest a record waits for its batch, in ms. Default 200.
    #[serde(default)]
    pub flush_interval_ms: Option<u64>,
    /// `queued` (default): a record waits in memory for its batch, so a
    /// crash (SIGKILL, OOM, power loss) loses up to `flush_interval_ms` of
    /// records. `strict`: a response's last bytes are sent only once its
    /// record is committed or fsync'd in the spool (a group commit).
    #[serde(default)]
    pub durability: Option<Durability>,
}

/// `ledger.durability`: when a record is safe relative to its response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Queued in memory, written within `flush_interval`.
    #[default]
    Queued,
    /// Durable before the response completes.
    Strict,
}

/// A price as a decimal written as a YAML number or string (`2.5`, `"0.0375"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalText(pub String);

impl DecimalText {
    /// `"0"`: free.
    pub fn zero() -> Self {
        DecimalText("0".to_string())
    }
}

impl<'de> Deserialize<'de> for DecimalText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(f64),
            Text(String),
        }
        Ok(DecimalText(match Either::deserialize(d)? {
            Either::Number(n) => n.to_string(),
            Either::Text(t) => t,
        }))
    }
}

/// `pricing[i]:` — a model's price in USD per million tokens, overriding or
/// extending the table shipped with sluice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// Model name (as sent upstream). Required.
    pub model: String,
    /// USD per million prompt tokens. Required.
    pub input: DecimalText,
    /// USD per million completion tokens. Required.
    pub output: DecimalText,
    /// USD per million cached prompt tokens. Default: `input`.
    #[serde(default)]
    pub cached_input: Option<DecimalText>,
    /// USD per million prompt tokens written to the provider's prompt cache
    /// (Anthropic: 1.25x `input`). Default: `input`.
    #[serde(default)]
    pub cache_write: Option<DecimalText>,
}

/// Validated ledger settings.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Whether records are kept.
    pub enabled: bool,
    /// Database URL.
    pub database_url: Secret,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// This node's chain name.
    pub node_id: String,
    /// Serve models with no price.
    pub allow_unpriced: bool,
    /// In-memory queue size.
    pub queue_capacity: usize,
    /// Records per transaction.
    pub batch_size: usize,
    /// Longest wait for a batch.
    pub flush_interval: Duration,
    /// When a record is durable relative to its response.
    pub durability: Durability,
    /// Global price overrides.
    pub pricing: Vec<RawPrice>,
}

/// Checks a price written as text: a non-negative decimal with at most six
/// significant decimals. Returns it trimmed; the error names `path`.
pub(crate) fn checked_decimal(d: &DecimalText, path: String) -> Result<DecimalText, ConfigError> {
    let t = d.0.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let ok = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && frac.trim_end_matches('0').len() <= 6;
    if ok {
        Ok(DecimalText(t.to_string()))
    } else {
        Err(ConfigError::validation(
            path,
            format!(
                "expected a non-negative price with at most 6 decimals, got {:?}",
                d.0
            ),
        ))
    }
}

fn check_price(p: &RawPrice, at: &str) -> Result<(), ConfigError> {
    let decimal =
        |d: &DecimalText, key: &str| checked_decimal(d, format!("{at}.{key}")).map(|_| ());
    if p.model.is_empty() {
        return Err(ConfigError::validation(
            format!("{at}.model"),
            "must not be empty",
        ));
    }
    decimal(&p.input, "input")?;
    decimal(&p.output, "output")?;
    if let Some(c) = &p.cached_input {
        decimal(c, "cached_input")?;
    }
    if let Some(w) = &p.cache_write {
        decimal(w, "cache_write")?;
    }
    Ok(())
}

/// Validates price entries under `at` (`pricing` or `tenants.x.pricing`).
pub(crate) fn check_prices(prices: &[RawPrice], at: &str) -> Result<(), ConfigError> {
    for (i, p) in prices.iter().enumerate() {
        check_price(p, &format!("{at}[{i}]"))?;
    }
    Ok(())
}

pub(crate) fn ledger_config(
    raw: RawLedger,
    pricing: Vec<RawPrice>,
) -> Result<LedgerConfig, ConfigError> {
    check_prices(&pricing, "pricing")?;
    let node_id = raw.node_id.unwrap_or_else(|| "local".to_string());
    if node_id.is_empty() || node_id.len() > 64 {
        return Err(ConfigError::validation(
            "ledger.node_id",
            "must be 1-64 characters",
        ));
    }
    let database_url = raw
        .database_url
        .unwrap_or_else(|| Secret::new("sqlite:sluice-data/ledger.db"));
    let url = database_url.expose();
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        return Err(ConfigError::validation(
            "ledger.database_url",
            "expected sqlite:PATH or postgres://user:pass@host/db",
        ));
    }
    let positive = |v: Option<usize>, default: usize, key: &str| match v {
        Some(0) => Err(ConfigError::validation(
            format!("ledger.{key}"),
            "must be at least 1",
        )),
        other => Ok(other.unwrap_or(default)),
    };
    Ok(LedgerConfig {
        enabled: raw.enabled.unwrap_or(true),
        database_url,
        spool_dir: raw
            .spool_dir
            .unwrap_or_else(|| PathBuf::from("sluice-data/spool")),
        node_id,
        allow_unpriced: raw.allow_unpriced.unwrap_or(true),
        queue_capacity: positive(raw.queue_capacity, 10_000, "queue_capacity")?,
        batch_size: positive(raw.batch_size, 256, "batch_size")?,
        flush_interval: Duration::from_millis(raw.flush_interval_ms.unwrap_or(200).max(1)),
        durability: raw.durability.unwrap_or_default(),
        pricing,
    })
}
