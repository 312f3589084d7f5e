//! The spend half of the access policy: which budgets apply to a key, what
//! reserving a request's worst case on them asks for once a soft limit is
//! crossed (a cheaper model, and an alert once per scope and period), and
//! seeding each budget with what the ledger says was spent already.

use super::TenantPolicy;
use crate::auth::KeyEntry;
use crate::budget::{period_start, BudgetSpec};
use crate::budgets::{BudgetError, BudgetHold, Budgets};
use crate::quota::Scope;
use jiff::Timestamp;
use sluice_config::Budget;
use std::collections::HashMap;
use std::sync::Mutex;

/// One budget that applies to a request, and where its soft limit sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetScope {
    /// Whose budget: the key's or its tenant's.
    pub scope: Scope,
    /// Its limits and period.
    pub spec: BudgetSpec,
    /// Model to route to once its soft limit is crossed, if any.
    pub downgrade_to: Option<String>,
}

/// One request's hold on its budgets, and what crossing a soft limit asks for.
pub struct SpendHold {
    /// The reservation; settle it with the real cost, or check a running
    /// stream's cost against the hard limits with it.
    pub reservation: BudgetHold,
    /// Model to route to instead: the first `downgrade_to` (key's, then
    /// tenant's) among the budgets whose soft limit this request crossed.
    pub downgrade_to: Option<String>,
    /// Soft limits this request crossed for the first time this period:
    /// announce each once.
    pub newly_alerted: Vec<SoftLimitAlert>,
}

/// A budget whose soft limit was crossed for the first time this period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftLimitAlert {
    /// The key or tenant.
    pub scope: Scope,
    /// Its spend plus open reservations, this request's worst case included.
    pub spent_and_reserved_micros: i64,
}

impl SoftLimitAlert {
    /// The JSON body POSTed to `alert_webhook`:
    /// `{"event", "scope": "key"|"tenant", "name", "spent_usd"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": "budget.soft_limit_crossed",
            "scope": self.scope.kind().as_str(),
            "name": self.scope.name(),
            "spent_usd": self.spent_and_reserved_micros as f64 / 1e6,
        })
    }
}

/// A budget to load from the ledger at start: sum the scope's spend since
/// `since_unix_us` and hand it to [`super::AccessPolicy::seed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRequest {
    /// The key or tenant (`Scope::Key(id)` groups the ledger by key id,
    /// `Scope::Tenant(name)` by tenant).
    pub scope: Scope,
    /// Its limits and period.
    pub spec: BudgetSpec,
    /// Start of its current period, in unix microseconds (`i64::MIN` for a
    /// budget that never resets).
    pub since_unix_us: i64,
    /// When the period was read, so the seed lands in that same period.
    at: Timestamp,
}

/// The budgets that apply to `key`: its own, then its `tenant`'s.
pub(super) fn budget_scopes(key: &KeyEntry, tenant: Option<&TenantPolicy>) -> Vec<BudgetScope> {
    let own = key
        .budget
        .as_ref()
        .map(|b| (Scope::Key(key.key_id.clone()), b));
    let shared = tenant
        .and_then(|t| t.budget.as_ref())
        .map(|b| (Scope::Tenant(key.tenant.clone()), b));
    own.into_iter()
        .chain(shared)
        .map(|(scope, budget)| BudgetScope {
            scope,
            spec: BudgetSpec::from(budget),
            downgrade_to: budget.downgrade_to.clone(),
        })
        .collect()
}

/// Budget state, and which soft limits were already announced.
pub(super) struct SpendPolicy {
    /// Reservations per key and tenant, on this node or in Redis.
    budgets: Budgets,
    /// Per scope, the start (unix seconds) of the last period whose
    /// soft-limit crossing was announced: one entry a scope, replaced when a
    /// later period crosses again, so it never outgrows the scopes.
    alerted: Mutex<HashMap<Scope, i64>>,
}

impl SpendPolicy {
    /// Policy over `budgets`, nothing announced yet.
    pub(super) fn new(budgets: Budgets) -> Self {
        SpendPolicy {
            budgets,
            alerted: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves `worst_case_micros` on every one of `scopes` (key first),
    /// then, when a soft limit was crossed, reads which ones and what they ask.
    pub(super) async fn reserve(
        &self,
        scopes: &[BudgetScope],
        worst_case_micros: i64,
        now: Timestamp,
    ) -> Result<SpendHold, BudgetError> {
        let specs: Vec<(Scope, BudgetSpec)> = scopes
            .iter()
            .map(|b| (b.scope.clone(), b.spec.clone()))
            .collect();
        let reservation = self.budgets.reserve(&specs, worst_case_micros, now).await?;
        let mut downgrade_to = None;
        let mut newly_alerted = Vec::new();
        if reservation.soft_limit_crossed() {
            for budget in scopes {
                let Some((spent, reserved)) =
                    self.budgets.usage(&budget.scope, &budget.spec, now).await
                else {
                    continue;
                };
                let used = spent + reserved;
                let crossed = budget
                    .spec
                    .soft_limit_micros
                    .is_some_and(|soft| used > soft);
                if !crossed {
                    continue;
                }
                downgrade_to = downgrade_to.or_else(|| budget.downgrade_to.clone());
                let period = period_start(budget.spec.period, now, self.budgets.time_zone());
                if self.first_alert(&budget.scope, period) {
                    newly_alerted.push(SoftLimitAlert {
                        scope: budget.scope.clone(),
                        spent_and_reserved_micros: used,
                    });
                }
            }
        }
        Ok(SpendHold {
            reservation,
            downgrade_to,
            newly_alerted,
        })
    }

    /// Whether `scope`'s soft limit is announced for the first time in the
    /// period starting at `period` (and notes that it now is).
    fn first_alert(&self, scope: &Scope, period: i64) -> bool {
        self.alerted
            .lock()
            .is_ok_and(|mut last| last.insert(scope.clone(), period) != Some(period))
    }

    /// What loading `scope`'s `budget` from the ledger at `now` needs.
    pub(super) fn seed_request(
        &self,
        scope: Scope,
        budget: &Budget,
        now: Timestamp,
    ) -> SeedRequest {
        let spec = BudgetSpec::from(budget);
        let since = period_start(spec.period, now, self.budgets.time_zone());
        SeedRequest {
            scope,
            spec,
            since_unix_us: since.saturating_mul(1_000_000),
            at: now,
        }
    }

    /// Sets what `request`'s scope spent in its period.
    pub(super) async fn seed(&self, request: &SeedRequest, spent_micros: i64) {
        self.budgets
            .seed(&request.scope, &request.spec, spent_micros, request.at)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{acme, key, settings};
    use super::super::{AccessError, AccessPolicy, TenantPolicy};
    use super::*;
    use crate::auth::KeyHash;
    use crate::budget::{BudgetRejection, Period};
    use crate::quota::ScopeKind;
    use sluice_config::{KeySettings, Limits, TenantSettings};

    fn budget(limit: i64, soft: i64, downgrade_to: Option<&str>) -> Budget {
        Budget {
            limit_micros: limit,
            soft_limit_micros: Some(soft),
            period: Period::Monthly,
            downgrade_to: downgrade_to.map(str::to_string),
        }
    }

    fn nov() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn dec() -> Timestamp {
        "2026-12-01T00:00:01Z".parse().unwrap()
    }

    fn with_budget(id: &str, b: Budget) -> KeySettings {
        KeySettings {
            budget: Some(b),
            ..key(id)
        }
    }

    fn tenant(name: &str, b: Option<Budget>, keys: Vec<KeySettings>) -> TenantSettings {
        TenantSettings {
            name: name.into(),
            budget: b,
            ..acme(keys)
        }
    }

    /// The policy's key `id`, as config declared it.
    fn entry(policy: &AccessPolicy, id: &str) -> KeyEntry {
        let found = policy.config_keys().iter().find(|k| k.key_id == id);
        found.unwrap().clone()
    }

    #[tokio::test]
    async fn without_a_budget_nothing_is_held() {
        let policy = AccessPolicy::new(&settings(vec![acme(vec![key("a")])]), None);
        let a = entry(&policy, "a");
        assert!(!policy.has_budget(&a));
        assert!(policy.budget_scopes(&a).is_empty());
        let hold = policy.reserve_budget(&a, 1_000_000).await.unwrap();
        assert!(hold.is_none());
    }

    #[test]
    fn budgets_apply_key_first_then_tenant() {
        let keys = vec![
            with_budget("a", budget(1_000, 500, Some("small"))),
            key("b"),
        ];
        let policy = AccessPolicy::new(
            &settings(vec![tenant("acme", Some(budget(9_000, 8_000, None)), keys)]),
            None,
        );
        let (a, b) = (entry(&policy, "a"), entry(&policy, "b"));
        assert!(policy.has_budget(&a) && policy.has_budget(&b));
        let scopes = policy.budget_scopes(&a);
        let named: Vec<(&Scope, i64, Option<&str>)> = scopes
            .iter()
            .map(|s| (&s.scope, s.spec.limit_micros, s.downgrade_to.as_deref()))
            .collect();
        assert_eq!(
            named,
            [
                (&Scope::Key("a".into()), 1_000, Some("small")),
                (&Scope::Tenant("acme".into()), 9_000, None),
            ]
        );
        assert_eq!(policy.budget_scopes(&b).len(), 1);
        policy.set_tenant("acme", Some(TenantPolicy::default()));
        assert!(!policy.has_budget(&b), "the tenant's budget was removed");
    }

    #[tokio::test]
    async fn a_reservation_past_the_hard_limit_is_refused() {
        let keys = vec![with_budget("a", budget(1_000, 900, None)), key("b")];
        let policy = AccessPolicy::new(
            &settings(vec![tenant("acme", Some(budget(5_000, 4_000, None)), keys)]),
            None,
        );
        let (a, b) = (entry(&policy, "a"), entry(&policy, "b"));
        let held = policy.reserve_budget_at(&a, 600, nov()).await.unwrap();
        assert!(held.is_some());
        let refused = policy
            .reserve_budget_at(&a, 600, nov())
            .await
            .err()
            .unwrap();
        let by_key = BudgetRejection {
            scope_kind: ScopeKind::Key,
            limit_micros: 1_000,
            spent_micros: 0,
        };
        assert_eq!(refused, AccessError::Budget(by_key));
        assert_eq!(refused.kind(), "budget_exceeded");
        assert_eq!(
            refused.to_string(),
            "You exceeded your current quota: the key budget of $0.00 for this period is spent."
        );
        // Key b has no budget of its own: the tenant's 5_000 bounds it.
        let refused = policy
            .reserve_budget_at(&b, 4_500, nov())
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&refused, AccessError::Budget(r) if r.scope_kind == ScopeKind::Tenant),
            "{refused:?}"
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_crossed_soft_limit_downgrades_by_the_keys_budget_first() {
        let keys = vec![
            with_budget("a", budget(10_000, 100, Some("key-cheap"))),
            key("b"),
            with_budget("c", budget(10_000, 100, None)),
        ];
        let shared = budget(100_000, 100, Some("tenant-cheap"));
        let policy = AccessPolicy::new(&settings(vec![tenant("acme", Some(shared), keys)]), None);
        let a = entry(&policy, "a");
        let hold = policy
            .reserve_budget_at(&a, 150, nov())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hold.downgrade_to.as_deref(), Some("key-cheap"));
        assert_eq!(
            hold.newly_alerted,
            [
                SoftLimitAlert {
                    scope: Scope::Key("a".into()),
                    spent_and_reserved_micros: 150,
                },
                SoftLimitAlert {
                    scope: Scope::Tenant("acme".into()),
                    spent_and_reserved_micros: 150,
                },
            ]
        );
        // b has only the tenant's budget; c crosses its own, which names no
        // cheaper model, so the tenant's is taken.
        for id in ["b", "c"] {
            let k = entry(&policy, id);
            let hold = policy
                .reserve_budget_at(&k, 150, nov())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(hold.downgrade_to.as_deref(), Some("tenant-cheap"), "{id}");
        }
        // Below every soft limit nothing is asked.
        let roomy = AccessPolicy::new(
            &settings(vec![acme(vec![with_budget(
                "a",
                budget(10_000, 5_000, Some("key-cheap")),
            )])]),
            None,
        );
        let hold = roomy
            .reserve_budget_at(&entry(&roomy, "a"), 150, nov())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hold.downgrade_to, None);
        assert!(hold.newly_alerted.is_empty());
    }

    #[tokio::test]
    async fn a_soft_limit_is_announced_once_per_period() {
        let keys = vec![with_budget("a", budget(10_000, 100, Some("cheap")))];
        let policy = AccessPolicy::new(&settings(vec![acme(keys)]), None);
        let a = entry(&policy, "a");
        let reserve = |now| policy.reserve_budget_at(&a, 150, now);
        let first = reserve(nov()).await.unwrap().unwrap();
        assert_eq!(first.newly_alerted.len(), 1);
        first.reservation.settle(150);
        let again = reserve(nov()).await.unwrap().unwrap();
        assert_eq!(
            again.downgrade_to.as_deref(),
            Some("cheap"),
            "still past it"
        );
        assert!(again.newly_alerted.is_empty(), "announced already");
        again.reservation.settle(150);
        let next_month = reserve(dec()).await.unwrap().unwrap();
        assert_eq!(
            next_month.newly_alerted,
            [SoftLimitAlert {
                scope: Scope::Key("a".into()),
                spent_and_reserved_micros: 150,
            }],
            "a new period starts from zero and announces again"
        );
    }

    #[tokio::test]
    async fn seeding_loads_the_ledgers_spend_into_each_budget() {
        let daily = Budget {
            period: Period::Daily,
            ..budget(2_000, 1_500, None)
        };
        let forever = Budget {
            period: Period::Total,
            ..budget(500, 400, None)
        };
        let tenants = vec![
            tenant("acme", Some(budget(1_000, 900, None)), vec![]),
            tenant(
                "globex",
                Some(forever),
                vec![with_budget("g", daily), key("h")],
            ),
            tenant("initech", None, vec![key("i")]),
        ];
        let policy = AccessPolicy::new(&settings(tenants), None);
        let requests = policy.budgets_to_seed_at(policy.config_keys(), nov());
        let listed: Vec<(&Scope, i64)> = requests
            .iter()
            .map(|r| (&r.scope, r.since_unix_us))
            .collect();
        let micros = |t: &str| t.parse::<Timestamp>().unwrap().as_second() * 1_000_000;
        assert_eq!(
            listed,
            [
                (
                    &Scope::Tenant("acme".into()),
                    micros("2026-11-01T00:00:00Z")
                ),
                (&Scope::Tenant("globex".into()), i64::MIN),
                (&Scope::Key("g".into()), micros("2026-11-21T00:00:00Z")),
            ]
        );
        assert_eq!(
            requests[0].spec,
            BudgetSpec::from(&budget(1_000, 900, None))
        );
        policy.seed(&requests[0], 900).await;
        let acme_key = KeyEntry {
            key_id: "new".into(),
            tenant: "acme".into(),
            hash: KeyHash::of("sk-new"),
            models: None,
            priority: sluice_config::Priority::Standard,
            expires_at: None,
            enabled: true,
            limits: Limits::default(),
            budget: None,
        };
        let refused = policy
            .reserve_budget_at(&acme_key, 200, nov())
            .await
            .err()
            .unwrap();
        assert_eq!(
            refused,
            AccessError::Budget(BudgetRejection {
                scope_kind: ScopeKind::Tenant,
                limit_micros: 1_000,
                spent_micros: 900,
            })
        );
        assert!(policy
            .reserve_budget_at(&acme_key, 100, nov())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn two_nodes_share_seeded_budgets_through_redis() {
        let Some(redis) = sluice_load_tests::servers::RedisServer::start() else {
            return;
        };
        let keys = vec![with_budget("a", budget(1_000, 100, Some("cheap")))];
        let shared = sluice_config::AccessSettings {
            redis_url: Some(sluice_config::Secret::new(redis.url())),
            redis_fail_open: false,
            ..settings(vec![acme(keys)])
        };
        let (node_a, node_b) = (
            AccessPolicy::new(&shared, None),
            AccessPolicy::new(&shared, None),
        );
        let requests = node_a.budgets_to_seed_at(node_a.config_keys(), nov());
        assert_eq!(requests.len(), 1);
        node_a.seed(&requests[0], 50).await;
        let a = entry(&node_b, "a");
        let hold = node_b
            .reserve_budget_at(&a, 100, nov())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hold.downgrade_to.as_deref(), Some("cheap"));
        assert_eq!(
            hold.newly_alerted,
            [SoftLimitAlert {
                scope: Scope::Key("a".into()),
                spent_and_reserved_micros: 150,
            }],
            "node A's seed and node B's reservation, read back from Redis"
        );
        let refused = node_a
            .reserve_budget_at(&a, 900, nov())
            .await
            .err()
            .unwrap();
        assert_eq!(
            refused,
            AccessError::Budget(BudgetRejection {
                scope_kind: ScopeKind::Key,
                limit_micros: 1_000,
                spent_micros: 50,
            })
        );
        drop(hold);
    }

    #[test]
    fn the_alert_body_names_the_scope() {
        let alert = SoftLimitAlert {
            scope: Scope::Tenant("acme".into()),
            spent_and_reserved_micros: 12_500_000,
        };
        assert_eq!(
            alert.to_json(),
            serde_json::json!({
                "event": "budget.soft_limit_crossed",
                "scope": "tenant",
                "name": "acme",
                "spent_usd": 12.5,
            })
        );
    }
}
