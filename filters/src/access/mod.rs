//! Access policy: who is calling and whether they may.
//!
//! [`AccessPolicy`] puts the filters of this crate together the way one
//! request meets them: it reads the caller's key from the request's headers
//! ([`AccessPolicy::identify`], virtual keys or JWTs), checks the model
//! allow-list, caps the asked priority by the key, and admits the request
//! against the key's and its tenant's quotas ([`AccessPolicy::admit`]), then
//! reserves its worst-case cost on their budgets
//! ([`AccessPolicy::reserve_budget`]). It takes an [`http::HeaderMap`] and
//! plain numbers and returns plain types ([`Caller`], [`SpendHold`],
//! [`AccessError`]), so it is tested without a server; the gateway maps
//! [`AccessError`] to its HTTP answer.
//!
//! Files: this one holds auth, priority, quotas and tenant policies;
//! `spend.rs` the budgets (downgrades, soft-limit alerts once per scope and
//! period, seeding from the ledger's numbers); `preempt.rs`
//! [`preemption_scope`], which says which running streams a concurrency
//! refusal may preempt; `error.rs` [`AccessError`].

mod error;
#[cfg(test)]
mod fixtures;
mod preempt;
mod spend;

pub use error::AccessError;
pub use preempt::preemption_scope;
pub use spend::{BudgetScope, SeedRequest, SoftLimitAlert, SpendHold};

use crate::auth::{AuthError, Authenticator, KeyEntry, KeyHash, KeySource, Priority};
use crate::budgets::Budgets;
use crate::jwt::JwtVerifier;
use crate::quota::Scope;
use crate::quotas::{QuotaAdmission, Quotas};
use crate::redis_budget::RedisBudgets;
use crate::redis_quota::RedisQuotas;
use http::header::{HeaderMap, AUTHORIZATION};
use sluice_config::{AccessSettings, Budget, Limits};
use spend::SpendPolicy;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The header a request names its priority class in.
const PRIORITY_HEADER: &str = "x-sluice-priority";
/// Azure OpenAI's key header, read when there is no bearer.
const API_KEY_HEADER: &str = "api-key";
/// The header Anthropic's SDKs send the key in.
const ANTHROPIC_KEY_HEADER: &str = "x-api-key";

/// What a tenant shares across its keys.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// Quota slots and token reservations, released when dropped; `None`
    /// when neither the key nor its tenant has limits.
    pub admission: Option<QuotaAdmission>,
}

/// Auth, quota and budget policy for the whole gateway.
pub struct AccessPolicy {
    /// Whether OpenAI endpoints need a key (`auth.required`).
    required: bool,
    /// Hash of the admin key; `None` turns the admin API off.
    admin_key: Option<KeyHash>,
    /// Virtual keys: config's, then the key store's through a cache.
    auth: Authenticator,
    /// JWT bearer auth, when configured and its JWKS is valid.
    jwt: Option<JwtVerifier>,
    /// Keys declared in config, kept to seed their budgets at start.
    config_keys: Vec<KeyEntry>,
    /// Local or Redis-shared quota state (kept across a config reload).
    quotas: Arc<Quotas>,
    /// Tenant policies: from config, then from the admin API.
    tenants: RwLock<HashMap<String, Arc<TenantPolicy>>>,
    /// `max_tokens` assumed when a request gives none.
    default_max_tokens: u64,
    /// Budgets, and which soft limits were announced this period (kept
    /// across a config reload).
    spend: Arc<SpendPolicy>,
    /// Where soft-limit alerts are POSTed.
    alert_webhook: Option<String>,
}

impl AccessPolicy {
    /// Builds auth, quota and budget state from validated settings, with
    /// `key_source` (the database behind the admin API) for keys beyond
    /// config. A bad Redis URL or JWKS is logged and left out.
    pub fn new(settings: &AccessSettings, key_source: Option<Arc<dyn KeySource>>) -> Self {
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
        let tz =
            jiff::tz::TimeZone::get(&settings.budget_time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let budgets = match &redis {
            Some(store) => Budgets::shared(
                RedisBudgets::new(store.clone(), tz.clone()),
                tz,
                settings.redis_fail_open,
            ),
            None => Budgets::local(tz),
        };
        let tenants = settings
            .tenants
            .iter()
            .map(|t| {
                let policy = TenantPolicy {
                    limits: t.limits,
                    budget: t.budget.clone(),
                };
                (t.name.clone(), Arc::new(policy))
            })
            .collect();
        AccessPolicy {
            required: settings.auth_required,
            admin_key: settings.admin_key.as_ref().map(|k| KeyHash::of(k.expose())),
            auth: Authenticator::new(keys.clone(), key_source),
            jwt: settings.jwt.as_ref().and_then(|j| {
                JwtVerifier::new(j)
                    .map_err(|e| tracing::error!(error = %e, "auth.jwt disabled: bad JWKS"))
                    .ok()
            }),
            config_keys: keys,
            quotas: Arc::new(match redis {
                Some(store) => Quotas::shared(store, settings.redis_fail_open),
                None => Quotas::local(),
            }),
            tenants: RwLock::new(tenants),
            default_max_tokens: settings.default_max_tokens,
            spend: Arc::new(SpendPolicy::new(budgets)),
            alert_webhook: settings.alert_webhook.clone(),
        }
    }

    /// The policy of reloaded `settings`, keeping this one's quota counters
    /// and budget spend (keyed by key and tenant, so a limit that changed
    /// applies to what was already used). Where the counters live (Redis
    /// or not) and the budget time zone cannot change this way.
    pub fn reconfigured(
        &self,
        settings: &AccessSettings,
        key_source: Option<Arc<dyn KeySource>>,
    ) -> Self {
        let mut next = AccessPolicy::new_local_state(settings, key_source);
        next.quotas = self.quotas.clone();
        next.spend = self.spend.clone();
        next
    }

    /// [`AccessPolicy::new`] without connecting to Redis: its state is
    /// replaced by [`AccessPolicy::reconfigured`] at once.
    fn new_local_state(settings: &AccessSettings, key_source: Option<Arc<dyn KeySource>>) -> Self {
        let local = AccessSettings {
            redis_url: None,
            ..settings.clone()
        };
        AccessPolicy::new(&local, key_source)
    }

    /// Whether OpenAI endpoints need a key.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The key a request presents, checked; `Ok(None)` when auth is off.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<KeyEntry>>, AccessError> {
        if !self.required {
            return Ok(None);
        }
        self.identify_always(headers).await.map(Some)
    }

    /// The presented key, checked even when auth is optional (for endpoints
    /// that always need one, such as usage reports).
    pub async fn identify_always(&self, headers: &HeaderMap) -> Result<Arc<KeyEntry>, AccessError> {
        let presented = Authenticator::presented_key(
            headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
            headers
                .get(API_KEY_HEADER)
                .or_else(|| headers.get(ANTHROPIC_KEY_HEADER))
                .map(|v| v.as_bytes()),
        );
        let now = jiff::Timestamp::now().as_second();
        Ok(self.check(presented, now).await?)
    }

    /// A presented bearer: a JWT when it looks like one and JWTs are on,
    /// else a virtual key.
    async fn check(&self, presented: Option<&str>, now: i64) -> Result<Arc<KeyEntry>, AuthError> {
        if let (Some(jwt), Some(token)) = (&self.jwt, presented) {
            if JwtVerifier::looks_like_jwt(token) {
                return jwt.verify(token, now);
            }
        }
        self.auth.authenticate(presented, now).await
    }

    /// Whether the request's bearer is the admin key (compared in constant
    /// time); always false when no admin key is configured.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        let Some(admin) = &self.admin_key else {
            return false;
        };
        Authenticator::presented_key(headers.get(AUTHORIZATION).map(|v| v.as_bytes()), None)
            .is_some_and(|k| KeyHash::of(k).ct_eq(admin))
    }

    /// The request's `x-sluice-priority` (default `standard`), capped by the
    /// key's highest allowed class.
    pub fn priority(&self, headers: &HeaderMap, key: Option<&KeyEntry>) -> Priority {
        let asked = headers
            .get(PRIORITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Priority::parse)
            .unwrap_or_default();
        key.map_or(asked, |k| asked.min(k.priority))
    }

    /// Checks the model allow-list and admits the request against the key's
    /// and tenant's quotas (key first), reserving `prompt_estimate` plus
    /// `max_tokens` (or [`Self::default_max_tokens`]) tokens. Without a key
    /// (auth off) every request is admitted at the priority it asks for.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        key: Option<Arc<KeyEntry>>,
        model: &str,
        prompt_estimate: u64,
        max_tokens: Option<u64>,
    ) -> Result<Caller, AccessError> {
        let asked = self.priority(headers, None);
        let Some(key) = key else {
            return Ok(Caller {
                key: None,
                priority: asked,
                admission: None,
            });
        };
        if !key.allows_model(model) {
            return Err(AuthError::ModelNotAllowed {
                model: model.to_string(),
            }
            .into());
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

    /// The quota state: whether its shared store is up, how often it failed
    /// (for health and metrics).
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Keys declared in config (whose budgets are seeded at start).
    pub fn config_keys(&self) -> &[KeyEntry] {
        &self.config_keys
    }

    /// Where soft-limit alerts are POSTed, if anywhere.
    pub fn alert_webhook(&self) -> Option<&str> {
        self.alert_webhook.as_deref()
    }

    /// A tenant's policy, if it has one.
    pub fn tenant(&self, name: &str) -> Option<Arc<TenantPolicy>> {
        self.tenants.read().ok()?.get(name).cloned()
    }

    /// Sets (or with `None` removes) a tenant's policy at run time (admin API,
    /// stored tenants at start). Requests admitted afterwards see it.
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

    /// Tenants with a policy, in name order.
    fn tenants_by_name(&self) -> Vec<(String, Arc<TenantPolicy>)> {
        let mut tenants: Vec<_> = self
            .tenants
            .read()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        tenants
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
    pub fn budget_scopes(&self, key: &KeyEntry) -> Vec<BudgetScope> {
        spend::budget_scopes(key, self.tenant(&key.tenant).as_deref())
    }

    /// Reserves `worst_case_micros` on the key's and its tenant's budgets.
    /// `Ok(None)` when neither has one; [`AccessError::Budget`] past a hard
    /// limit. The hold says which cheaper model a crossed soft limit asks
    /// for and which soft limits were crossed for the first time this
    /// period (to be announced once).
    pub async fn reserve_budget(
        &self,
        key: &KeyEntry,
        worst_case_micros: i64,
    ) -> Result<Option<SpendHold>, AccessError> {
        self.reserve_budget_at(key, worst_case_micros, jiff::Timestamp::now())
            .await
    }

    /// [`Self::reserve_budget`] at `now` (which picks the budget period).
    async fn reserve_budget_at(
        &self,
        key: &KeyEntry,
        worst_case_micros: i64,
        now: jiff::Timestamp,
    ) -> Result<Option<SpendHold>, AccessError> {
        let scopes = self.budget_scopes(key);
        if scopes.is_empty() {
            return Ok(None);
        }
        let hold = self.spend.reserve(&scopes, worst_case_micros, now).await?;
        Ok(Some(hold))
    }

    /// The budgets to load from the ledger at start: every tenant with a
    /// budget (in name order), then every one of `keys` with one. Each says
    /// since when to sum the scope's spend; pass the sum to [`Self::seed`].
    pub fn budgets_to_seed(&self, keys: &[KeyEntry]) -> Vec<SeedRequest> {
        self.budgets_to_seed_at(keys, jiff::Timestamp::now())
    }

    /// [`Self::budgets_to_seed`] at `now` (which picks each budget's period).
    fn budgets_to_seed_at(&self, keys: &[KeyEntry], now: jiff::Timestamp) -> Vec<SeedRequest> {
        let tenants = self.tenants_by_name();
        let tenant_budgets = tenants
            .iter()
            .filter_map(|(name, p)| Some((Scope::Tenant(name.clone()), p.budget.as_ref()?)));
        let key_budgets = keys
            .iter()
            .filter_map(|k| Some((Scope::Key(k.key_id.clone()), k.budget.as_ref()?)));
        tenant_budgets
            .chain(key_budgets)
            .map(|(scope, budget)| self.spend.seed_request(scope, budget, now))
            .collect()
    }

    /// Sets what `request`'s scope already spent this period (from the
    /// ledger, the durable source of truth); in Redis it only ever raises it.
    pub async fn seed(&self, request: &SeedRequest, spent_micros: i64) {
        self.spend.seed(request, spent_micros).await;
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{acme, bearer, key, settings};
    use super::*;
    use crate::quota::{LimitKind, QuotaRejection, ScopeKind};
    use crate::streams::Within;
    use async_trait::async_trait;
    use http::HeaderValue;
    use sluice_config::{KeySettings, TenantSettings};
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn concurrency(n: u32) -> Limits {
        Limits {
            concurrent_requests: NonZeroU32::new(n),
            ..Limits::default()
        }
    }

    async fn identified(policy: &AccessPolicy, key: &str) -> Arc<KeyEntry> {
        policy.identify(&bearer(key)).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn auth_off_admits_without_a_key_at_the_asked_priority() {
        let policy = AccessPolicy::new(
            &AccessSettings {
                auth_required: false,
                ..settings(vec![acme(vec![key("a")])])
            },
            None,
        );
        assert!(!policy.required());
        assert_eq!(policy.identify(&HeaderMap::new()).await, Ok(None));
        let mut headers = HeaderMap::new();
        headers.insert(PRIORITY_HEADER, HeaderValue::from_static("interactive"));
        let caller = policy
            .admit(&headers, None, "any-model", 10, None)
            .await
            .unwrap();
        assert!(caller.key.is_none());
        assert!(caller.admission.is_none());
        assert_eq!(caller.priority, Priority::Interactive);
        // Endpoints that always need a key still check one.
        let key = policy.identify_always(&bearer("sk-a")).await.unwrap();
        assert_eq!(key.key_id, "a");
    }

    #[tokio::test]
    async fn keys_are_read_from_the_bearer_or_either_api_key_header() {
        let policy = AccessPolicy::new(&settings(vec![acme(vec![key("a")])]), None);
        assert!(policy.required());
        assert_eq!(identified(&policy, "sk-a").await.key_id, "a");
        let mut azure = HeaderMap::new();
        azure.insert(API_KEY_HEADER, HeaderValue::from_static("sk-a"));
        assert_eq!(
            policy.identify(&azure).await.unwrap().unwrap().tenant,
            "acme"
        );
        let mut anthropic = HeaderMap::new();
        anthropic.insert(ANTHROPIC_KEY_HEADER, HeaderValue::from_static("sk-a"));
        assert_eq!(
            policy.identify(&anthropic).await.unwrap().unwrap().key_id,
            "a"
        );
        let missing = policy.identify(&HeaderMap::new()).await.unwrap_err();
        assert_eq!(missing, AccessError::Auth(AuthError::Missing));
        assert_eq!(missing.kind(), "missing_key");
        let wrong = policy.identify(&bearer("sk-b")).await.unwrap_err();
        assert_eq!(wrong, AccessError::Auth(AuthError::Invalid));
    }

    #[test]
    fn the_admin_key_is_a_bearer_only() {
        let policy = AccessPolicy::new(&settings(vec![acme(vec![key("a")])]), None);
        assert!(policy.is_admin(&bearer("sk-admin")));
        assert!(!policy.is_admin(&bearer("sk-a")));
        let mut azure = HeaderMap::new();
        azure.insert(API_KEY_HEADER, HeaderValue::from_static("sk-admin"));
        assert!(!policy.is_admin(&azure));
        let no_admin = AccessPolicy::new(
            &AccessSettings {
                admin_key: None,
                ..settings(vec![])
            },
            None,
        );
        assert!(!no_admin.is_admin(&bearer("sk-admin")));
    }

    #[tokio::test]
    async fn a_model_off_the_allow_list_is_refused() {
        let limited = KeySettings {
            models: Some(vec!["fast".into()]),
            ..key("a")
        };
        let policy = AccessPolicy::new(&settings(vec![acme(vec![limited])]), None);
        let k = identified(&policy, "sk-a").await;
        let headers = HeaderMap::new();
        assert!(policy
            .admit(&headers, Some(k.clone()), "fast", 1, None)
            .await
            .is_ok());
        let refused = policy
            .admit(&headers, Some(k), "gpt-4o", 1, None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            refused,
            AccessError::Auth(AuthError::ModelNotAllowed {
                model: "gpt-4o".into()
            })
        );
        assert_eq!(refused.kind(), "model_not_allowed");
        assert_eq!(
            refused.to_string(),
            "This key does not have access to model `gpt-4o`."
        );
    }

    #[tokio::test]
    async fn the_priority_header_is_capped_by_the_key() {
        let standard = KeySettings {
            priority: Priority::Standard,
            ..key("a")
        };
        let policy = AccessPolicy::new(&settings(vec![acme(vec![standard])]), None);
        let k = identified(&policy, "sk-a").await;
        let asking = |class: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(PRIORITY_HEADER, HeaderValue::from_static(class));
            headers
        };
        let interactive = asking("interactive");
        assert_eq!(policy.priority(&interactive, None), Priority::Interactive);
        assert_eq!(policy.priority(&interactive, Some(&k)), Priority::Standard);
        assert_eq!(policy.priority(&asking("batch"), Some(&k)), Priority::Batch);
        assert_eq!(
            policy.priority(&asking("urgent!"), None),
            Priority::Standard,
            "an unknown class reads as the default"
        );
        assert_eq!(policy.priority(&HeaderMap::new(), None), Priority::Standard);
        let caller = policy
            .admit(&interactive, Some(k), "m", 1, None)
            .await
            .unwrap();
        assert_eq!(caller.priority, Priority::Standard);
    }

    #[tokio::test]
    async fn key_and_tenant_quotas_both_apply() {
        let one_at_a_time = KeySettings {
            limits: concurrency(1),
            ..key("a")
        };
        let tenant = TenantSettings {
            limits: concurrency(2),
            ..acme(vec![one_at_a_time, key("b")])
        };
        let policy = AccessPolicy::new(&settings(vec![tenant]), None);
        let (a, b) = (
            identified(&policy, "sk-a").await,
            identified(&policy, "sk-b").await,
        );
        let headers = HeaderMap::new();
        let admit = |k: &Arc<KeyEntry>| policy.admit(&headers, Some(k.clone()), "m", 1, None);
        let first = admit(&a).await.unwrap();
        assert!(first.admission.is_some());
        let key_full = admit(&a).await.err().unwrap();
        assert!(
            matches!(&key_full, AccessError::Quota(q) if q.scope_kind == ScopeKind::Key),
            "{key_full:?}"
        );
        let _second = admit(&b).await.unwrap();
        let tenant_full = admit(&b).await.err().unwrap();
        assert!(
            matches!(&tenant_full, AccessError::Quota(q) if q.scope_kind == ScopeKind::Tenant),
            "{tenant_full:?}"
        );
        assert_eq!(tenant_full.kind(), "rate_limit_concurrency");
        drop(first);
        assert!(
            admit(&a).await.is_ok(),
            "a dropped admission frees both slots"
        );
    }

    #[tokio::test]
    async fn token_reservations_assume_the_default_max_tokens() {
        let tokens = KeySettings {
            limits: Limits {
                tokens_per_minute: std::num::NonZeroU64::new(250),
                ..Limits::default()
            },
            ..key("a")
        };
        let policy = AccessPolicy::new(&settings(vec![acme(vec![tokens])]), None);
        let k = identified(&policy, "sk-a").await;
        let headers = HeaderMap::new();
        // 200 + the default 100 is more than a minute's 250 tokens.
        let never = policy
            .admit(&headers, Some(k.clone()), "m", 200, None)
            .await
            .err()
            .unwrap();
        assert!(matches!(&never, AccessError::Quota(q) if q.never && q.limit == LimitKind::Tokens));
        assert_eq!(never.kind(), "rate_limit_tokens");
        assert!(policy
            .admit(&headers, Some(k), "m", 200, Some(50))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn tenant_policies_are_set_and_removed_at_run_time() {
        let policy = AccessPolicy::new(&settings(vec![acme(vec![key("a")])]), None);
        let k = identified(&policy, "sk-a").await;
        let headers = HeaderMap::new();
        assert_eq!(
            policy.tenant("acme").as_deref(),
            Some(&TenantPolicy::default())
        );
        assert!(policy.tenant("globex").is_none());
        let strict = TenantPolicy {
            limits: concurrency(1),
            budget: None,
        };
        policy.set_tenant("acme", Some(strict.clone()));
        assert_eq!(policy.tenant("acme").as_deref(), Some(&strict));
        let _held = policy
            .admit(&headers, Some(k.clone()), "m", 1, None)
            .await
            .unwrap();
        assert!(policy
            .admit(&headers, Some(k.clone()), "m", 1, None)
            .await
            .is_err());
        policy.set_tenant("acme", None);
        assert!(policy.tenant("acme").is_none());
        let free = policy.admit(&headers, Some(k), "m", 1, None).await.unwrap();
        assert!(free.admission.is_none(), "no limits left to hold");
    }

    struct CountingSource(KeyEntry, AtomicUsize);

    #[async_trait]
    impl KeySource for CountingSource {
        async fn find(
            &self,
            hash: &KeyHash,
        ) -> Result<Option<KeyEntry>, crate::auth::KeySourceError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok((*hash == self.0.hash).then(|| self.0.clone()))
        }
    }

    #[tokio::test]
    async fn a_forgotten_key_is_looked_up_again() {
        let stored = KeyEntry::from_settings("acme", &key("db"));
        let source = Arc::new(CountingSource(stored, AtomicUsize::new(0)));
        let policy = AccessPolicy::new(&settings(vec![]), Some(source.clone()));
        identified(&policy, "sk-db").await;
        identified(&policy, "sk-db").await;
        assert_eq!(source.1.load(Ordering::SeqCst), 1, "cached");
        policy.forget_key(&KeyHash::of("sk-db")).await;
        identified(&policy, "sk-db").await;
        assert_eq!(source.1.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_concurrency_refusal_preempts_within_the_refusing_scope() {
        let one = KeySettings {
            limits: concurrency(1),
            ..key("a")
        };
        let tenant = TenantSettings {
            limits: concurrency(2),
            ..acme(vec![one, key("b")])
        };
        let policy = AccessPolicy::new(&settings(vec![tenant]), None);
        let (a, b) = (
            identified(&policy, "sk-a").await,
            identified(&policy, "sk-b").await,
        );
        let headers = HeaderMap::new();
        let refusal = |e: AccessError| match e {
            AccessError::Quota(q) => q,
            other => panic!("not a quota refusal: {other:?}"),
        };
        let _a = policy.admit(&headers, Some(a.clone()), "m", 1, None).await;
        let by_key = refusal(
            policy
                .admit(&headers, Some(a.clone()), "m", 1, None)
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(preemption_scope(&by_key, &a, true), Some(Within::Key("a")));
        assert_eq!(preemption_scope(&by_key, &a, false), None);
        let _b = policy.admit(&headers, Some(b.clone()), "m", 1, None).await;
        let by_tenant = refusal(
            policy
                .admit(&headers, Some(b.clone()), "m", 1, None)
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(
            preemption_scope(&by_tenant, &b, true),
            Some(Within::Tenant("acme"))
        );
        assert_eq!(preemption_scope(&by_tenant, &b, false), None);
        let per_minute = QuotaRejection {
            limit: LimitKind::Requests,
            ..by_key
        };
        assert_eq!(
            preemption_scope(&per_minute, &a, true),
            None,
            "ending a stream frees no requests per minute"
        );
    }
}
