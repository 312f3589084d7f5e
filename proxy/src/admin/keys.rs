//! Keys and tenants through the admin API (admin key only), persisted in
//! the ledger's database, and the [`DbKeys`] source that auth reads them from.
//!
//! - `POST /admin/keys` `{"tenant": "acme", "id": "acme-ci", "models": [...],
//!   "priority": "batch", "expires_at": "...", "limits": {...}, "budget": {...}}`
//!   → 201 with the plaintext `key`, shown this once.
//! - `GET /admin/keys[?tenant=acme]` → the keys, never their secrets.
//! - `POST /admin/keys/{id}/rotate` → a new plaintext key; the old one stops at once.
//! - `POST /admin/keys/{id}/disable`, `/enable`; `DELETE /admin/keys/{id}`.
//! - `PUT /admin/tenants/{name}` `{"limits": {...}, "budget": {...}}`;
//!   `GET /admin/tenants`; `DELETE /admin/tenants/{name}` (its keys too).
//!
//! Other nodes see key changes when their auth cache entry expires (60 s).

use super::AdminContext;
use crate::downstream::body::read_body;
use crate::downstream::respond::respond;
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use sluice_config::raw::{RawBudget, RawKey, RawLimits};
use sluice_filters::auth::generate_key;
use sluice_filters::{AccessPolicy, TenantPolicy};
use sluice_filters::{KeyEntry, KeyHash, KeySource, KeySourceError};
use sluice_ledger::{Store, StoredKey, StoredTenant};
use std::sync::Arc;

/// Reads keys created through the admin API from the ledger database, on
/// the control runtime (so an auth cache miss never waits behind ledger writes).
pub struct DbKeys {
    /// The database.
    pub store: Store,
    /// The control runtime's handle.
    pub runtime: tokio::runtime::Handle,
    /// Configured model names, to validate a key's budget downgrade target.
    pub models: Arc<Vec<String>>,
}

/// A stored key's settings, validated as a config entry would be.
pub fn key_entry(stored: &StoredKey, models: &[String]) -> Result<KeyEntry, KeySourceError> {
    let corrupt = |reason: String| KeySourceError::Corrupt {
        key_id: stored.key_id.clone(),
        reason,
    };
    let raw: RawKey = serde_json::from_str(&stored.spec).map_err(|e| corrupt(e.to_string()))?;
    let hash = KeyHash::from_hex(&stored.key_sha256)
        .ok_or_else(|| corrupt("its hash is not hex".to_string()))?;
    let settings = sluice_config::key_from_spec(&raw, hash.0, &stored.key_id, models)
        .map_err(|e| corrupt(e.to_string()))?;
    let mut entry = KeyEntry::from_settings(&stored.tenant, &settings);
    entry.enabled = stored.enabled;
    Ok(entry)
}

#[async_trait]
impl KeySource for DbKeys {
    async fn find(&self, hash: &KeyHash) -> Result<Option<KeyEntry>, KeySourceError> {
        let store = self.store.clone();
        let hex = hash.to_hex();
        let found = self
            .runtime
            .spawn(async move { store.key_by_hash(&hex).await })
            .await
            .map_err(|e| KeySourceError::Unreachable(e.to_string()))?
            .map_err(|e| KeySourceError::Unreachable(e.to_string()))?;
        found.map(|k| key_entry(&k, &self.models)).transpose()
    }
}

/// The body of `PUT /admin/tenants/{name}`.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Shared limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Shared budget.
    #[serde(default)]
    pub budget: Option<RawBudget>,
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::BadQuery {
        message: message.into(),
    }
}

fn no_such(method: &http::Method, path: &str) -> GatewayError {
    GatewayError::UnknownRoute {
        method: method.to_string(),
        path: path.to_string(),
    }
}

/// A stored settings document, read back; a row that does not parse is an
/// error (logged with its id), never a silent `null`.
fn stored_spec(
    text: &str,
    what: &'static str,
    id: &str,
) -> Result<serde_json::Value, GatewayError> {
    serde_json::from_str(text).map_err(|e| {
        tracing::error!(what, id, error = %e, "stored settings do not parse");
        GatewayError::StoredRecordInvalid { what }
    })
}

/// Settings written to the database.
fn spec_text(spec: &impl serde::Serialize) -> Result<String, GatewayError> {
    serde_json::to_string(spec).map_err(|_| GatewayError::StoredRecordInvalid { what: "settings" })
}

fn public_key(k: &StoredKey) -> Result<serde_json::Value, GatewayError> {
    let spec = stored_spec(&k.spec, "key", &k.key_id)?;
    Ok(
        serde_json::json!({"id": k.key_id, "tenant": k.tenant, "enabled": k.enabled, "settings": spec}),
    )
}

/// Serves `/admin/keys...` and `/admin/tenants...` (admin key only).
pub async fn serve(
    admin: &AdminContext<'_>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    if !admin.access.is_admin(&session.req_header().headers) {
        return Err(GatewayError::Auth(sluice_filters::AuthError::Invalid));
    }
    let Some(store) = admin.accounting.store().cloned() else {
        return Err(GatewayError::LedgerUnavailable);
    };
    let method = session.req_header().method.clone();
    let path = session.req_header().uri.path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = read_body(session, 64 * 1024, ctx.body_timeout).await?;
    let runtime = admin.control;
    let (status, reply) = match (method.as_str(), parts.as_slice()) {
        ("POST", ["admin", "keys"]) => {
            let mut value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
            let tenant = value
                .as_object_mut()
                .and_then(|o| o.remove("tenant"))
                .and_then(|t| t.as_str().map(str::to_string))
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("`tenant` is required"))?;
            let raw: RawKey = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            if raw.key.is_some() || raw.key_sha256.is_some() {
                return Err(bad(
                    "keys are generated by sluice; leave out `key` and `key_sha256`",
                ));
            }
            let (plaintext, hash) = generate_key();
            sluice_config::key_from_spec(&raw, hash.0, "key", admin.model_names)
                .map_err(|e| bad(e.to_string()))?;
            let stored = StoredKey {
                key_id: raw.id.clone(),
                tenant: tenant.clone(),
                key_sha256: hash.to_hex(),
                spec: spec_text(&raw)?,
                enabled: raw.enabled,
            };
            let exists = {
                let store = store.clone();
                let id = raw.id.clone();
                on_ledger(runtime, Box::pin(async move { store.key_by_id(&id).await })).await?
            };
            if exists.is_some() {
                return Err(bad(format!("a key with id {:?} exists", raw.id)));
            }
            let insert = stored.clone();
            let store2 = store.clone();
            on_ledger(
                runtime,
                Box::pin(async move { store2.insert_key(&insert).await }),
            )
            .await?;
            tracing::info!(key = %stored.key_id, tenant = %tenant, "key created");
            let mut out = public_key(&stored)?;
            out["key"] = serde_json::Value::String(plaintext);
            (201, out)
        }
        ("GET", ["admin", "keys"]) => {
            let tenant = session
                .req_header()
                .uri
                .query()
                .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "tenant"))
                .map(|(_, v)| v.into_owned());
            let keys = on_ledger(
                runtime,
                Box::pin(async move { store.list_keys(tenant.as_deref()).await }),
            )
            .await?;
            let data = keys.iter().map(public_key).collect::<Result<Vec<_>, _>>()?;
            (200, serde_json::json!({"object": "list", "data": data}))
        }
        ("POST", ["admin", "keys", id, action]) => {
            let id = id.to_string();
            let (new_key, enabled) = match *action {
                "rotate" => (Some(generate_key()), None),
                "disable" => (None, Some(false)),
                "enable" => (None, Some(true)),
                _ => return Err(no_such(&method, &path)),
            };
            let new_hex = new_key.as_ref().map(|(_, h)| h.to_hex());
            let store2 = store.clone();
            let id2 = id.clone();
            let old = on_ledger(
                runtime,
                Box::pin(async move { store2.update_key(&id2, new_hex.as_deref(), enabled).await }),
            )
            .await?
            .ok_or_else(|| no_such(&method, &path))?;
            if let Some(h) = KeyHash::from_hex(&old.key_sha256) {
                admin.access.forget_key(&h).await;
            }
            let now = on_ledger(runtime, Box::pin(async move { store.key_by_id(&id).await }))
                .await?
                .ok_or_else(|| no_such(&method, &path))?;
            let mut out = public_key(&now)?;
            if let Some((plaintext, _)) = new_key {
                out["key"] = serde_json::Value::String(plaintext);
            }
            tracing::info!(key = %now.key_id, action = *action, "key changed");
            (200, out)
        }
        ("DELETE", ["admin", "keys", id]) => {
            let id = id.to_string();
            let old = on_ledger(
                runtime,
                Box::pin(async move { store.delete_key(&id).await }),
            )
            .await?
            .ok_or_else(|| no_such(&method, &path))?;
            if let Some(h) = KeyHash::from_hex(&old.key_sha256) {
                admin.access.forget_key(&h).await;
            }
            (200, serde_json::json!({"id": old.key_id, "deleted": true}))
        }
        ("PUT", ["admin", "tenants", name]) => {
            let spec: TenantSpec = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
            let (limits, budget) = sluice_config::tenant_policy(
                &spec.limits,
                spec.budget.as_ref(),
                &format!("tenants.{name}"),
                admin.model_names,
            )
            .map_err(|e| bad(e.to_string()))?;
            let stored = StoredTenant {
                name: name.to_string(),
                spec: spec_text(&spec)?,
            };
            on_ledger(
                runtime,
                Box::pin(async move { store.upsert_tenant(&stored).await }),
            )
            .await?;
            admin
                .access
                .set_tenant(name, Some(TenantPolicy { limits, budget }));
            (200, serde_json::json!({"name": name, "settings": spec}))
        }
        ("GET", ["admin", "tenants"]) => {
            let tenants =
                on_ledger(runtime, Box::pin(async move { store.list_tenants().await })).await?;
            let data = tenants
                .iter()
                .map(|t| {
                    let spec = stored_spec(&t.spec, "tenant", &t.name)?;
                    Ok(serde_json::json!({"name": t.name, "settings": spec}))
                })
                .collect::<Result<Vec<_>, GatewayError>>()?;
            (200, serde_json::json!({"object": "list", "data": data}))
        }
        ("DELETE", ["admin", "tenants", name]) => {
            let owned = name.to_string();
            let existed = on_ledger(
                runtime,
                Box::pin(async move { store.delete_tenant(&owned).await }),
            )
            .await?;
            if !existed {
                return Err(no_such(&method, &path));
            }
            admin.access.set_tenant(name, None);
            (200, serde_json::json!({"name": name, "deleted": true}))
        }
        _ => return Err(no_such(&method, &path)),
    };
    respond(
        session,
        ctx,
        status,
        "application/json",
        Bytes::from(reply.to_string()),
    )
    .await;
    Ok(())
}

type LedgerFuture<T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, sluice_ledger::LedgerError>> + Send>,
>;

/// Runs a store call on the ledger runtime, mapping failures to 503.
async fn on_ledger<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    fut: LedgerFuture<T>,
) -> Result<T, GatewayError> {
    runtime
        .spawn(fut)
        .await
        .map_err(|_| GatewayError::LedgerUnavailable)?
        .map_err(|e| {
            tracing::warn!(error = %e, "admin store call failed");
            GatewayError::LedgerUnavailable
        })
}

/// Loads tenants stored through the admin API into `access` (at start).
pub fn load_stored_tenants(access: &AccessPolicy, admin: &AdminContext<'_>) {
    let Some(store) = admin.accounting.store().cloned() else {
        return;
    };
    let runtime = admin.control;
    let stored = runtime.block_on(async move { store.list_tenants().await });
    let Ok(stored) = stored else {
        tracing::warn!("could not load stored tenants");
        return;
    };
    for t in stored {
        let parsed: Result<TenantSpec, _> = serde_json::from_str(&t.spec);
        let policy = parsed.ok().and_then(|spec| {
            sluice_config::tenant_policy(
                &spec.limits,
                spec.budget.as_ref(),
                &t.name,
                admin.model_names,
            )
            .ok()
        });
        match policy {
            Some((limits, budget)) => {
                access.set_tenant(&t.name, Some(TenantPolicy { limits, budget }))
            }
            None => tracing::warn!(tenant = %t.name, "stored tenant settings invalid; ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(spec: &str) -> StoredKey {
        StoredKey {
            key_id: "k1".into(),
            tenant: "acme".into(),
            key_sha256: "00".repeat(32),
            spec: spec.into(),
            enabled: true,
        }
    }

    #[test]
    fn a_corrupt_stored_row_is_an_error_not_a_silent_null() {
        let error = public_key(&stored("{not json")).unwrap_err();
        assert_eq!(error.status(), 500);
        assert_eq!(error.kind(), "stored_record_invalid");
        let shown = public_key(&stored(r#"{"id": "k1"}"#)).unwrap();
        assert_eq!(shown["settings"]["id"], "k1");
        assert!(shown.get("key_sha256").is_none(), "the hash never leaves");
    }

    #[test]
    fn tenant_specs_refuse_unknown_fields() {
        assert!(serde_json::from_str::<TenantSpec>(r#"{"limits": {}, "budgett": {}}"#).is_err());
        assert!(
            serde_json::from_str::<TenantSpec>(r#"{"limits": {"requests_per_minute": 5}}"#).is_ok()
        );
    }
}
