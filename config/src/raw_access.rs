//! The `auth:`, `tenants:`, `quotas:` and `budgets:` sections as written.

use crate::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `auth:` — who may call.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Key for the admin API (`Authorization: Bearer ...`). Default: none,
    /// which turns the admin API off.
    #[serde(default)]
    pub admin_key: Option<Secret>,
    /// Whether OpenAI endpoints need a virtual key. Default: `true` when
    /// tenants are declared or an admin key is set, else `false` (logged as a
    /// warning: anyone who reaches the port uses the upstream keys).
    #[serde(default)]
    pub required: Option<bool>,
    /// Also accept JWTs as bearer tokens. Default: off.
    #[serde(default)]
    pub jwt: Option<RawJwt>,
}

/// `auth.jwt:` — bearer JWTs from an identity provider as another way in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// Required `iss` claim. Required.
    pub issuer: String,
    /// Required `aud` claim. Required.
    pub audience: String,
    /// JWKS file (`{"keys": [...]}`) holding the verification keys, chosen by
    /// `kid`. Read at start. Required.
    pub jwks_file: std::path::PathBuf,
    /// Claim naming the caller's tenant. Default `tenant`.
    #[serde(default)]
    pub tenant_claim: Option<String>,
}

/// `tenants.<name>:` — one tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// Limits shared by all of the tenant's keys. Default: none.
    #[serde(default)]
    pub limits: RawLimits,
    /// Spend budget shared by all of the tenant's keys. Default: none.
    #[serde(default)]
    pub budget: Option<RawBudget>,
    /// Keys declared in config (more can be created with the admin API).
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// Prices for this tenant only (negotiated rates). Default: none.
    #[serde(default)]
    pub pricing: Vec<crate::ledger::RawPrice>,
}

/// `tenants.<name>.keys[i]:` — one virtual key (also the body of
/// `POST /admin/keys`, without the secret).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Stable, non-secret id used in logs, metrics and the ledger. Required, unique.
    pub id: String,
    /// The key itself, usually `${ENV_VAR}`; only its hash is kept. Give this
    /// or `key_sha256`.
    #[serde(default, skip_serializing)]
    pub key: Option<Secret>,
    /// SHA-256 of the key, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    #[serde(default, skip_serializing)]
    pub key_sha256: Option<String>,
    /// Model names it may use. Default: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Highest priority class: `batch`, `standard` or `interactive`. Default `standard`.
    #[serde(default)]
    pub priority: Option<String>,
    /// RFC 3339 time after which the key stops working. Default: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Limits on this key alone. Default: none.
    #[serde(default)]
    pub limits: RawLimits,
    /// Budget on this key alone. Default: none.
    #[serde(default)]
    pub budget: Option<RawBudget>,
}

/// `limits:` — all optional; absent means unlimited.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Prompt + completion tokens per minute (reserved up front from the
    /// prompt size and `max_tokens`, settled on real usage).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default)]
    pub concurrent_requests: Option<u32>,
}

/// `budget:` — spend in US dollars.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Hard limit in USD: requests are refused (429 `insufficient_quota`) and
    /// running streams cut beyond it. Required.
    pub limit_usd: f64,
    /// Soft limit in USD: alert (log, metric, webhook) and downgrade. Default: none.
    #[serde(default)]
    pub soft_limit_usd: Option<f64>,
    /// `daily`, `weekly`, `monthly` or `total`. Default `monthly`.
    #[serde(default)]
    pub period: Option<String>,
    /// Model name to route to once the soft limit is crossed. Default: none.
    #[serde(default)]
    pub downgrade_to: Option<String>,
}

/// `quotas:` — where limit state lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    /// `redis://host:port/db` to share limits and budgets across nodes.
    /// Default: none (limits are local to this node).
    #[serde(default)]
    pub redis_url: Option<Secret>,
    /// When Redis is unreachable: `fail_open` (fall back to local limits) or
    /// `fail_closed` (refuse with 503). Default `fail_open`.
    #[serde(default)]
    pub on_redis_error: Option<String>,
}

/// `budgets:` — how budget periods and alerts work.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    /// IANA time zone whose calendar days, weeks (from Monday) and months
    /// bound budget periods. Default `UTC`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// URL that receives a JSON POST when a soft limit is crossed. Default: none.
    #[serde(default)]
    pub alert_webhook: Option<String>,
    /// Assumed `max_tokens` when a request gives none, for the worst-case
    /// reservation. Default 4096.
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
}

/// The raw maps, as `RawConfig` holds them.
pub type RawTenants = BTreeMap<String, RawTenant>;

fn default_true() -> bool {
    true
}
