//! Settings and headers that the access policy's tests build on.

use crate::auth::{KeyHash, Priority};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use sluice_config::{AccessSettings, KeySettings, Limits, TenantSettings};

/// A key of tenant `acme` presented as `sk-<id>`.
pub(super) fn key(id: &str) -> KeySettings {
    KeySettings {
        id: id.into(),
        sha256: KeyHash::of(&format!("sk-{id}")).0,
        models: None,
        priority: Priority::Interactive,
        expires_at: None,
        enabled: true,
        limits: Limits::default(),
        budget: None,
    }
}

/// Tenant `acme` with `keys`, no limits, no budget.
pub(super) fn acme(keys: Vec<KeySettings>) -> TenantSettings {
    TenantSettings {
        name: "acme".into(),
        limits: Limits::default(),
        budget: None,
        keys,
        pricing: Vec::new(),
    }
}

/// Auth on, local limits, UTC budgets, 100 default `max_tokens`.
pub(super) fn settings(tenants: Vec<TenantSettings>) -> AccessSettings {
    AccessSettings {
        admin_key: Some(sluice_config::Secret::new("sk-admin")),
        auth_required: true,
        jwt: None,
        tenants,
        redis_url: None,
        redis_fail_open: true,
        budget_time_zone: "UTC".into(),
        alert_webhook: None,
        default_max_tokens: 100,
    }
}

/// Headers presenting `key` as a bearer.
pub(super) fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    headers.insert(AUTHORIZATION, value);
    headers
}
