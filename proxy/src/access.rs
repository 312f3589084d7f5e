//! Who is calling and whether they may: wires `sluice_filters`' auth and
//! quotas to the request's headers, with one policy per tenant from config.

use crate::error::GatewayError;
use pingora::protocols::http::ServerSession;
use sluice_config::{AccessSettings, Budget, Limits, Priority};
use sluice_filters::{
    Authenticator, BudgetSpec, Budgets, KeyEntry, KeyHash, QuotaAdmission, Quotas, RedisQuotas,
    Scope,
};
use std::collections::HashMap;
use std::sync::Arc;

/// What a tenant shares across its keys.
#[derive(Debug, Clone, Default)]
pub struct TenantPolicy {
    /// Tenant-wide limits.
    pub limits: Limits,
    /// Tenant-wide budget.
    pub budget: Option<Budget>,
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
    /// Tenant policies: from config, then from the database (admin API).
    tenants: std::sync::RwLock<HashMap<String, Arc<TenantPolicy>>>,
    default_max_tokens: u64,
    /// JWT bearer auth, when configured.
    jwt: Option<sluice_filters::JwtVerifier>,
    /// Keys declared in config (for seeding their budgets).
    pub config_keys: Vec<KeyEntry>,
    /// Spend reservations per key and tenant.
    pub budgets: Budgets,
    /// Scopes whose soft limit was already announced this period.
    alerted: std::sync::Mutex<std::collections::HashSet<(Scope, i64)>>,
    /// Where soft-limit alerts are POSTed.
    pub alert_webhook: Option<String>,
}

/// The spend one request holds on its budgets, and what crossing a soft
/// limit asks for.
pub struct SpendHold {
    /// The reservation; settle it with the real cost.
    pub reservation: sluice_filters::BudgetHold,
    /// Model to route to instead, when a soft limit with `downgrade_to` was crossed.
    pub downgrade_to: Option<String>,
    /// Scopes whose soft limit this request crossed for the first time this period.
    pub newly_alerted: Vec<(Scope, i64)>,
}

impl Access {
    /// Builds auth and quota state from validated settings.
    pub fn new(
        settings: &AccessSettings,
        key_source: Option<Arc<dyn sluice_filters::KeySource>>,
    ) -> Self {
        let redis = settings.redis_url.as_ref().and_then(|url| {
            RedisQuotas::new(url.expose())
                .map_err(
                    |e| tracing::error!(error = %e, "invalid quotas.redis_url; limits stay local"),
                )
                .ok()
        });
        let keys: Vec<KeyEntry> = settings
            .tenants
            .iter()
            .flat_map(|t| t.keys.iter().map(|k| KeyEntry::from_settings(&t.name, k)))
            .collect();
        Access {
            required: settings.auth_required,
            admin_key: settings.admin_key.as_ref().map(|k| KeyHash::of(k.expose())),
            auth: Authenticator::new(keys.clone(), key_source),
            jwt: settings.jwt.as_ref().and_then(|j| {
                sluice_filters::JwtVerifier::new(j)
                    .map_err(|e| tracing::error!(error = %e, "auth.jwt disabled: bad JWKS"))
                    .ok()
            }),
            config_keys: keys,
            quotas: match &redis {
                Some(store) => Quotas::shared(store.clone(), settings.redis_fail_open),
                None => Quotas::local(),
            },
            tenants: std::sync::RwLock::new(
                settings
                    .tenants
                    .iter()
                    .map(|t| {
                        let policy = TenantPolicy {
                            limits: t.limits,
                            budget: t.budget.clone(),
                        };
                        (t.name.clone(), Arc::new(policy))
                    })
                    .collect(),
            ),
            default_max_tokens: settings.default_max_tokens,
            budgets: {
                let tz = jiff::tz::TimeZone::get(&settings.budget_time_zone)
                    .unwrap_or(jiff::tz::TimeZone::UTC);
                match &redis {
                    Some(store) => Budgets::shared(
                        sluice_filters::RedisBudgets::new(store.clone(), tz.clone()),
                        tz,
                        settings.redis_fail_open,
                    ),
                    None => Budgets::local(tz),
                }
            },
            alerted: std::sync::Mutex::new(std::collections::HashSet::new()),
            alert_webhook: settings.alert_webhook.clone(),
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
        self.identify_always(session).await.map(Some)
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
        Ok(self.check(presented, now).await?)
    }

    /// A presented bearer: a JWT when it looks like one and JWTs are on,
    /// else a virtual key.
    async fn check(
        &self,
        presented: Option<&str>,
        now: i64,
    ) -> Result<Arc<KeyEntry>, sluice_filters::AuthError> {
        if let (Some(jwt), Some(token)) = (&self.jwt, presented) {
            if sluice_filters::JwtVerifier::looks_like_jwt(token) {
                return jwt.verify(token, now);
            }
        }
        self.auth.authenticate(presented, now).await
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

    /// Loads what every budgeted key and tenant already spent this period,
    /// the ledger being the durable source of truth.
    pub fn seed_budgets(
        &self,
        accounting: &crate::ops::Accounting,
        control: &tokio::runtime::Handle,
        keys: &[KeyEntry],
    ) {
        use sluice_ledger::GroupKey;
        let now = jiff::Timestamp::now();
        let tz = self.budgets_tz();
        let tenants: Vec<(String, Arc<TenantPolicy>)> = self
            .tenants
            .read()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let budgeted = tenants
            .iter()
            .filter_map(|(name, p)| {
                Some((
                    Scope::Tenant(name.clone()),
                    p.budget.as_ref()?,
                    GroupKey::Tenant,
                    name,
                ))
            })
            .chain(keys.iter().filter_map(|k| {
                Some((
                    Scope::Key(k.key_id.clone()),
                    k.budget.as_ref()?,
                    GroupKey::Key,
                    &k.key_id,
                ))
            }));
        let mut seeded = 0;
        for (scope, budget, by, name) in budgeted {
            let spec = BudgetSpec {
                limit_micros: budget.limit_micros,
                soft_limit_micros: budget.soft_limit_micros,
                period: budget.period,
            };
            let from =
                sluice_filters::period_start(budget.period, now, &tz).saturating_mul(1_000_000);
            let spent: i64 = accounting
                .spent_since(from, by)
                .into_iter()
                .filter(|(n, _)| n == name)
                .map(|(_, c)| c)
                .sum();
            control.block_on(self.budgets.seed(&scope, &spec, spent, now));
            seeded += 1;
        }
        if seeded > 0 {
            tracing::info!(budgets = seeded, "budgets seeded from the ledger");
        }
    }

    /// A tenant's policy, if it has one.
    pub fn tenant(&self, name: &str) -> Option<Arc<TenantPolicy>> {
        self.tenants.read().ok()?.get(name).cloned()
    }

    /// Sets (or with `None` removes) a tenant's policy at run time.
    pub fn set_tenant(&self, name: &str, policy: Option<TenantPolicy>) {
        if let Ok(mut tenants) = self.tenants.write() {
            match policy {
                Some(p) => {
                    tenants.insert(name.to_string(), Arc::new(p));
                }
                None => {
                    tenants.remove(name);
                }
            }
        }
    }

    /// Forgets a cached key at once (after rotate, disable or delete).
    pub async fn forget_key(&self, hash: &KeyHash) {
        self.auth.invalidate(hash).await;
    }

    /// `max_tokens` to assume when a request gives none.
    pub fn default_max_tokens(&self) -> u64 {
        self.default_max_tokens
    }

    /// Whether any budget applies to `key` (its own or its tenant's).
    pub fn has_budget(&self, key: &KeyEntry) -> bool {
        key.budget.is_some() || self.tenant(&key.tenant).is_some_and(|t| t.budget.is_some())
    }

    /// The budgets that apply to `key`: its own, then its tenant's.
    pub fn budget_scopes(&self, key: &KeyEntry) -> Vec<(Scope, BudgetSpec, Option<String>)> {
        let spec = |b: &Budget| BudgetSpec {
            limit_micros: b.limit_micros,
            soft_limit_micros: b.soft_limit_micros,
            period: b.period,
        };
        let mut scopes = Vec::with_capacity(2);
        if let Some(b) = &key.budget {
            scopes.push((
                Scope::Key(key.key_id.clone()),
                spec(b),
                b.downgrade_to.clone(),
            ));
        }
        let tenant = self.tenant(&key.tenant);
        if let Some(b) = tenant.as_ref().and_then(|t| t.budget.as_ref()) {
            scopes.push((
                Scope::Tenant(key.tenant.clone()),
                spec(b),
                b.downgrade_to.clone(),
            ));
        }
        scopes
    }

    /// Reserves `worst_case_micros` on the key's and tenant's budgets; refuses
    /// with 429 `insufficient_quota` past a hard limit.
    pub async fn reserve_budget(
        &self,
        key: &KeyEntry,
        worst_case_micros: i64,
    ) -> Result<Option<SpendHold>, GatewayError> {
        let scopes = self.budget_scopes(key);
        if scopes.is_empty() {
            return Ok(None);
        }
        let now = jiff::Timestamp::now();
        let specs: Vec<(Scope, BudgetSpec)> = scopes
            .iter()
            .map(|(s, b, _)| (s.clone(), b.clone()))
            .collect();
        let reservation = self
            .budgets
            .reserve(&specs, worst_case_micros, now)
            .await
            .map_err(|e| match e {
                sluice_filters::BudgetError::Rejected(r) => GatewayError::Budget(r),
                sluice_filters::BudgetError::StoreUnavailable => {
                    GatewayError::QuotaStoreUnavailable
                }
            })?;
        let mut downgrade_to = None;
        let mut newly_alerted = Vec::new();
        if reservation.soft_limit_crossed() {
            for ((scope, spec, downgrade), (_, budget_spec)) in scopes.iter().zip(&specs) {
                let Some((spent, reserved)) = self.budgets.usage(scope, budget_spec, now).await
                else {
                    continue;
                };
                if spec
                    .soft_limit_micros
                    .is_some_and(|soft| spent + reserved > soft)
                {
                    downgrade_to = downgrade_to.or_else(|| downgrade.clone());
                    let period = sluice_filters::period_start(spec.period, now, &self.budgets_tz());
                    if self
                        .alerted
                        .lock()
                        .is_ok_and(|mut a| a.insert((scope.clone(), period)))
                    {
                        newly_alerted.push((scope.clone(), spent + reserved));
                    }
                }
            }
        }
        Ok(Some(SpendHold {
            reservation,
            downgrade_to,
            newly_alerted,
        }))
    }

    fn budgets_tz(&self) -> jiff::tz::TimeZone {
        self.budgets.time_zone().clone()
    }

    /// The request's `x-sluice-priority` (default `standard`), capped by the
    /// key's highest allowed class.
    pub fn priority(&self, session: &ServerSession, key: Option<&KeyEntry>) -> Priority {
        let asked = session
            .get_header("x-sluice-priority")
            .and_then(|v| v.to_str().ok())
            .and_then(Priority::parse)
            .unwrap_or_default();
        key.map_or(asked, |k| asked.min(k.priority))
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
        let asked = self.priority(session, None);
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
        let tenant = self.tenant(&key.tenant);
        let mut scopes = Vec::with_capacity(2);
        if key.limits.any() {
            scopes.push((Scope::Key(key.key_id.clone()), key.limits));
        }
        if let Some(t) = tenant.as_ref().filter(|t| t.limits.any()) {
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
