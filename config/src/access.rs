//! Validated access settings: tenants, keys, limits, budgets, admin key.

use crate::raw_access::{RawAuth, RawBudget, RawBudgets, RawKey, RawLimits, RawQuotas, RawTenants};
use crate::{ConfigError, Secret};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroU64};

/// Request priority class, lowest first so that `Ord` ranks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Bulk work that may wait or be preempted.
    Batch,
    /// The default.
    #[default]
    Standard,
    /// A person is waiting.
    Interactive,
}

impl Priority {
    /// Parses `batch` / `standard` / `interactive` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "batch" => Some(Priority::Batch),
            "standard" => Some(Priority::Standard),
            "interactive" => Some(Priority::Interactive),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Batch => "batch",
            Priority::Standard => "standard",
            Priority::Interactive => "interactive",
        }
    }
}

/// Limits on one key or tenant; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Requests per minute (burst: the whole minute).
    pub requests_per_minute: Option<NonZeroU32>,
    /// Prompt + completion tokens per minute.
    pub tokens_per_minute: Option<NonZeroU64>,
    /// Requests in flight at once.
    pub concurrent_requests: Option<NonZeroU32>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.concurrent_requests.is_some()
    }
}

/// How often a budget resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetPeriod {
    /// Calendar day.
    Daily,
    /// Calendar week, from Monday.
    Weekly,
    /// Calendar month.
    Monthly,
    /// Never.
    Total,
}

impl BudgetPeriod {
    /// Parses `daily` / `weekly` / `monthly` / `total`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "daily" => Some(BudgetPeriod::Daily),
            "weekly" => Some(BudgetPeriod::Weekly),
            "monthly" => Some(BudgetPeriod::Monthly),
            "total" => Some(BudgetPeriod::Total),
            _ => None,
        }
    }
}

/// A spend budget, in integer micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Hard limit.
    pub limit_micros: i64,
    /// Soft limit (alert, downgrade).
    pub soft_limit_micros: Option<i64>,
    /// Reset period.
    pub period: BudgetPeriod,
    /// Model name to use once the soft limit is crossed.
    pub downgrade_to: Option<String>,
}

/// A virtual key declared in config.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Non-secret id.
    pub id: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// Allowed model names; `None` is all.
    pub models: Option<Vec<String>>,
    /// Highest priority it may use.
    pub priority: Priority,
    /// Unix seconds after which it is refused.
    pub expires_at: Option<i64>,
    /// Disabled keys are refused.
    pub enabled: bool,
    /// Its own limits.
    pub limits: Limits,
    /// Its own budget.
    pub budget: Option<Budget>,
}

/// A tenant declared in config.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// Tenant name.
    pub name: String,
    /// Limits shared by its keys.
    pub limits: Limits,
    /// Budget shared by its keys.
    pub budget: Option<Budget>,
    /// Its config-declared keys.
    pub keys: Vec<KeySettings>,
    /// Its own prices.
    pub pricing: Vec<crate::ledger::RawPrice>,
}

/// Validated `auth.jwt`.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Required issuer.
    pub issuer: String,
    /// Required audience.
    pub audience: String,
    /// The JWKS document's text.
    pub jwks: String,
    /// Claim naming the tenant.
    pub tenant_claim: String,
}

/// Everything about who may call and how much.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// Admin API key; `None` turns the admin API off.
    pub admin_key: Option<Secret>,
    /// Whether OpenAI endpoints need a virtual key.
    pub auth_required: bool,
    /// JWT bearer auth, when configured.
    pub jwt: Option<JwtSettings>,
    /// Declared tenants, in name order.
    pub tenants: Vec<TenantSettings>,
    /// Shared limit store, if any.
    pub redis_url: Option<Secret>,
    /// Fall back to local limits when Redis is down (else refuse with 503).
    pub redis_fail_open: bool,
    /// IANA zone bounding budget periods.
    pub budget_time_zone: String,
    /// Soft-limit alert target.
    pub alert_webhook: Option<String>,
    /// `max_tokens` assumed for worst-case reservations when a request has none.
    pub default_max_tokens: u64,
}

fn limits(raw: &RawLimits, at: &str) -> Result<Limits, ConfigError> {
    let nonzero = |key: &str, v: Option<u64>| match v {
        Some(0) => Err(ConfigError::validation(
            format!("{at}.{key}"),
            "must be at least 1 (leave it out for no limit)",
        )),
        other => Ok(other),
    };
    Ok(Limits {
        requests_per_minute: nonzero(
            "requests_per_minute",
            raw.requests_per_minute.map(u64::from),
        )?
        .and_then(|v| NonZeroU32::new(v as u32)),
        tokens_per_minute: nonzero("tokens_per_minute", raw.tokens_per_minute)?
            .and_then(NonZeroU64::new),
        concurrent_requests: nonzero(
            "concurrent_requests",
            raw.concurrent_requests.map(u64::from),
        )?
        .and_then(|v| NonZeroU32::new(v as u32)),
    })
}

fn usd_to_micros(usd: f64, at: &str) -> Result<i64, ConfigError> {
    if !usd.is_finite() || !(0.0..=1e12).contains(&usd) {
        return Err(ConfigError::validation(
            at,
            "must be a non-negative amount of US dollars",
        ));
    }
    Ok((usd * 1e6).round() as i64)
}

fn budget(raw: &RawBudget, at: &str, models: &[String]) -> Result<Budget, ConfigError> {
    let limit_micros = usd_to_micros(raw.limit_usd, &format!("{at}.limit_usd"))?;
    let soft_limit_micros = raw
        .soft_limit_usd
        .map(|s| usd_to_micros(s, &format!("{at}.soft_limit_usd")))
        .transpose()?;
    if soft_limit_micros.is_some_and(|s| s > limit_micros) {
        return Err(ConfigError::validation(
            format!("{at}.soft_limit_usd"),
            "must not exceed limit_usd",
        ));
    }
    let period = match raw.period.as_deref() {
        None => BudgetPeriod::Monthly,
        Some(p) => BudgetPeriod::parse(p).ok_or_else(|| {
            ConfigError::validation(
                format!("{at}.period"),
                format!("expected daily, weekly, monthly or total, got {p:?}"),
            )
        })?,
    };
    if let Some(target) = &raw.downgrade_to {
        if !models.iter().any(|m| m == target) {
            return Err(ConfigError::validation(
                format!("{at}.downgrade_to"),
                format!("{target:?} is not a model name under models:"),
            ));
        }
    }
    Ok(Budget {
        limit_micros,
        soft_limit_micros,
        period,
        downgrade_to: raw.downgrade_to.clone(),
    })
}

/// Validates one key's settings (everything but the secret, whose SHA-256 is
/// given): for config entries and for keys created through the admin API.
/// `at` names the key in errors; `models` are the configured model names.
pub fn key_from_spec(
    key: &RawKey,
    sha256: [u8; 32],
    at: &str,
    models: &[String],
) -> Result<KeySettings, ConfigError> {
    if key.id.is_empty() || key.id.len() > 128 {
        return Err(ConfigError::validation(
            format!("{at}.id"),
            "must be 1-128 characters",
        ));
    }
    let priority = match &key.priority {
        None => Priority::Standard,
        Some(p) => Priority::parse(p).ok_or_else(|| {
            ConfigError::validation(
                format!("{at}.priority"),
                format!("expected batch, standard or interactive, got {p:?}"),
            )
        })?,
    };
    let expires_at = key
        .expires_at
        .as_deref()
        .map(|t| {
            t.parse::<jiff::Timestamp>()
                .map(|ts| ts.as_second())
                .map_err(|e| {
                    ConfigError::validation(
                        format!("{at}.expires_at"),
                        format!("not an RFC 3339 time ({e}): {t:?}"),
                    )
                })
        })
        .transpose()?;
    Ok(KeySettings {
        id: key.id.clone(),
        sha256,
        models: key.models.clone(),
        priority,
        expires_at,
        enabled: key.enabled,
        limits: limits(&key.limits, &format!("{at}.limits"))?,
        budget: key
            .budget
            .as_ref()
            .map(|b| budget(b, &format!("{at}.budget"), models))
            .transpose()?,
    })
}

/// Validates a tenant's shared limits and budget (config entries and admin
/// API updates alike).
pub fn tenant_policy(
    raw_limits: &RawLimits,
    raw_budget: Option<&RawBudget>,
    at: &str,
    models: &[String],
) -> Result<(Limits, Option<Budget>), ConfigError> {
    Ok((
        limits(raw_limits, &format!("{at}.limits"))?,
        raw_budget
            .map(|b| budget(b, &format!("{at}.budget"), models))
            .transpose()?,
    ))
}

/// Validates the access sections; `models` are the configured model names.
pub(crate) fn access_settings(
    auth: RawAuth,
    tenants: RawTenants,
    quotas: RawQuotas,
    budgets: RawBudgets,
    models: &[String],
) -> Result<AccessSettings, ConfigError> {
    let mut seen_ids: HashMap<String, String> = HashMap::new();
    let mut seen_hashes: HashMap<[u8; 32], String> = HashMap::new();
    let mut out = Vec::with_capacity(tenants.len());
    for (name, tenant) in tenants {
        let at = format!("tenants.{name}");
        let mut keys = Vec::with_capacity(tenant.keys.len());
        for (i, key) in tenant.keys.iter().enumerate() {
            let kat = format!("{at}.keys[{i}]");
            if key.id.is_empty() {
                return Err(ConfigError::validation(
                    format!("{kat}.id"),
                    "must not be empty",
                ));
            }
            if let Some(first) = seen_ids.insert(key.id.clone(), kat.clone()) {
                return Err(ConfigError::validation(
                    format!("{kat}.id"),
                    format!("duplicate key id {:?} (first at {first})", key.id),
                ));
            }
            let sha256 = match (&key.key, &key.key_sha256) {
                (Some(plain), None) if !plain.expose().is_empty() => {
                    Sha256::digest(plain.expose().as_bytes()).into()
                }
                (None, Some(hex_digest)) => decode_sha256(hex_digest).ok_or_else(|| {
                    ConfigError::validation(format!("{kat}.key_sha256"), "must be 64 hex digits")
                })?,
                _ => {
                    return Err(ConfigError::validation(
                        kat.clone(),
                        "give exactly one of `key` (non-empty) or `key_sha256`",
                    ))
                }
            };
            if let Some(first) = seen_hashes.insert(sha256, kat.clone()) {
                return Err(ConfigError::validation(
                    kat.clone(),
                    format!("the same key is already declared at {first}"),
                ));
            }
            keys.push(key_from_spec(key, sha256, &kat, models)?);
        }
        let (tenant_limits, tenant_budget) =
            tenant_policy(&tenant.limits, tenant.budget.as_ref(), &at, models)?;
        out.push(TenantSettings {
            pricing: tenant.pricing.clone(),
            limits: tenant_limits,
            budget: tenant_budget,
            name,
            keys,
        });
    }
    let redis_fail_open = match quotas.on_redis_error.as_deref() {
        None | Some("fail_open") => true,
        Some("fail_closed") => false,
        Some(other) => {
            return Err(ConfigError::validation(
                "quotas.on_redis_error",
                format!("expected fail_open or fail_closed, got {other:?}"),
            ))
        }
    };
    if let Some(url) = &quotas.redis_url {
        let text = url.expose();
        if !text.starts_with("redis://") || text.len() <= "redis://".len() {
            return Err(ConfigError::validation(
                "quotas.redis_url",
                "expected redis://host:port[/db] (TLS rediss:// is not supported)",
            ));
        }
    }
    let budget_time_zone = budgets.time_zone.unwrap_or_else(|| "UTC".to_string());
    if jiff::tz::TimeZone::get(&budget_time_zone).is_err() {
        return Err(ConfigError::validation(
            "budgets.time_zone",
            format!("unknown IANA time zone {budget_time_zone:?}"),
        ));
    }
    if let Some(url) = &budgets.alert_webhook {
        crate::UpstreamBaseUrl::parse(url)
            .map_err(|m| ConfigError::validation("budgets.alert_webhook", m))?;
    }
    let default_max_tokens = match budgets.default_max_tokens {
        Some(0) => {
            return Err(ConfigError::validation(
                "budgets.default_max_tokens",
                "must be at least 1",
            ))
        }
        other => other.unwrap_or(4096),
    };
    let jwt = match &auth.jwt {
        None => None,
        Some(j) => {
            let jwks = std::fs::read_to_string(&j.jwks_file).map_err(|e| {
                ConfigError::validation(
                    "auth.jwt.jwks_file",
                    format!("cannot read {}: {e}", j.jwks_file.display()),
                )
            })?;
            Some(JwtSettings {
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                jwks,
                tenant_claim: j
                    .tenant_claim
                    .clone()
                    .unwrap_or_else(|| "tenant".to_string()),
            })
        }
    };
    let auth_required = auth
        .required
        .unwrap_or(!out.is_empty() || auth.admin_key.is_some() || jwt.is_some());
    Ok(AccessSettings {
        admin_key: auth.admin_key,
        auth_required,
        jwt,
        tenants: out,
        redis_url: quotas.redis_url,
        redis_fail_open,
        budget_time_zone,
        alert_webhook: budgets.alert_webhook,
        default_max_tokens,
    })
}

fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
