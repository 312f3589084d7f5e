//! Who is calling and whether they may: wires `sluice_filters`' auth and
//! quotas to the request's headers, with one policy per tenant from config.

use crate::error::GatewayError;
use pingora::protocols::http::ServerSession;
use sluice_config::{AccessSettings, Limits, Priority};
use sluice_filters::{
    Authenticator, KeyEntry, KeyHash, QuotaAdmission, Quotas, RedisQuotas, Scope,
};
use std::collections::HashMap;
use std::sync::Arc;

/// What a tenant shares across its keys.
#[derive(Debug, Clone, Default)]
pub struct TenantPolicy {
    /// Tenant-wide limits.
    pub limits: Limits,
}

/// The caller of one request, once admitted.
pub struct Caller {
    /// The key used; `None` when auth is off.
    pub key: Option<Arc<KeyEntry>>,
    /// Effective priority: the request's `x-sluice-priority`, capped by the key.
    pub priority: Priority,
    /// Quota slots and token reservations, released when dropped.
    pub admission: Option<QuotaAdmission>,
}

/// Auth and quota state for the whole gateway.
pub struct Access {
    required: bool,
    admin_key: Option<KeyHash>,
    auth: Authenticator,
    /// Local or Redis-shared quota state.
    pub quotas: Quotas,
    tenants: HashMap<String, TenantPolicy>,
    default_max_tokens: u64,
}

impl Access {
    /// Builds auth and quota state from validated settings.
    pub fn new(settings: &AccessSettings) -> Self {
        let keys = settings
            .tenants
            .iter()
            .flat_map(|t| t.keys.iter().map(|k| KeyEntry::from_settings(&t.name, k)))
            .collect();
        Access {
            required: settings.auth_required,
            admin_key: settings.admin_key.as_ref().map(|k| KeyHash::of(k.expose())),
            auth: Authenticator::new(keys, None),
            quotas: match &settings.redis_url {
                None => Quotas::local(),
                Some(url) => match RedisQuotas::new(url.expose()) {
                    Ok(redis) => Quotas::shared(redis, settings.redis_fail_open),
                    Err(e) => {
                        // The URL was validated at load; keep serving on local limits.
                        tracing::error!(error = %e, "invalid quotas.redis_url; using local limits");
                        Quotas::local()
                    }
                },
            },
            tenants: settings
                .tenants
                .iter()
                .map(|t| {
                    let policy = TenantPolicy { limits: t.limits };
                    (t.name.clone(), policy)
                })
                .collect(),
            default_max_tokens: settings.default_max_tokens,
        }
    }

    /// Whether OpenAI endpoints need a key.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The key a request presents, checked; `Ok(None)` when auth is off.
    pub async fn identify(
        &self,
        session: &ServerSession,
    ) -> Result<Option<Arc<KeyEntry>>, GatewayError> {
        if !self.required {
            return Ok(None);
        }
        let presented = Authenticator::presented_key(
            session.get_header("authorization").map(|v| v.as_bytes()),
            session.get_header("api-key").map(|v| v.as_bytes()),
        );
        let now = jiff::Timestamp::now().as_second();
        Ok(Some(self.auth.authenticate(presented, now).await?))
    }

    /// The presented key, checked even when auth is optional (for endpoints
    /// that always need one, such as usage reports).
    pub async fn identify_always(
        &self,
        session: &ServerSession,
    ) -> Result<Arc<KeyEntry>, GatewayError> {
        let presented = Authenticator::presented_key(
            session.get_header("authorization").map(|v| v.as_bytes()),
            session.get_header("api-key").map(|v| v.as_bytes()),
        );
        let now = jiff::Timestamp::now().as_second();
        Ok(self.auth.authenticate(presented, now).await?)
    }

    /// Whether the request carries the admin key (compared in constant time).
    pub fn is_admin(&self, session: &ServerSession) -> bool {
        let Some(admin) = &self.admin_key else {
            return false;
        };
        Authenticator::presented_key(
            session.get_header("authorization").map(|v| v.as_bytes()),
            None,
        )
        .is_some_and(|k| KeyHash::of(k).ct_eq(admin))
    }

    /// Checks the model allow-list and admits the request against the key's
    /// and tenant's quotas, reserving `prompt_estimate + max_tokens` tokens.
    pub async fn admit(
        &self,
        session: &ServerSession,
        key: Option<Arc<KeyEntry>>,
        model: &str,
        prompt_estimate: u64,
        max_tokens: Option<u64>,
    ) -> Result<Caller, GatewayError> {
        let asked = session
            .get_header("x-sluice-priority")
            .and_then(|v| v.to_str().ok())
            .and_then(Priority::parse)
            .unwrap_or_default();
        let Some(key) = key else {
            return Ok(Caller {
                key: None,
                priority: asked,
                admission: None,
            });
        };
        if !key.allows_model(model) {
            return Err(GatewayError::Auth(
                sluice_filters::AuthError::ModelNotAllowed {
                    model: model.to_string(),
                },
            ));
        }
        let tenant = self.tenants.get(&key.tenant);
        let mut scopes = Vec::with_capacity(2);
        if key.limits.any() {
            scopes.push((Scope::Key(key.key_id.clone()), key.limits));
        }
        if let Some(t) = tenant.filter(|t| t.limits.any()) {
            scopes.push((Scope::Tenant(key.tenant.clone()), t.limits));
        }
        let admission = if scopes.is_empty() {
            None
        } else {
            let estimate = prompt_estimate + max_tokens.unwrap_or(self.default_max_tokens);
            Some(self.quotas.admit(&scopes, estimate).await?)
        };
        Ok(Caller {
            priority: asked.min(key.priority),
            key: Some(key),
            admission,
        })
    }
}
