//! Budgets shared by every node through Redis, in integer micro-dollars.
//!
//! Each scope and period is one hash `{spent, reserved}`; one Lua script
//! checks and reserves a request's worst case on all its scopes atomically,
//! and settling moves the reservation into `spent`. The ledger stays the
//! durable source of truth: on start each node raises `spent` to what the
//! ledger holds for the period (never lowers it: Redis may know of records
//! the ledger has not written yet). Semantics match [`crate::LocalBudgets`],
//! but for cutting a running stream, which compares its growing cost with
//! the others' spend as it stood when the stream was admitted (a live check
//! would cost a Redis round trip per chunk).

use crate::budget::{period_start, BudgetRejection, BudgetSpec, Period};
use crate::quota::Scope;
use crate::redis_quota::RedisQuotas;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A reservation held in Redis.
pub struct RedisBudgetReservation {
    store: RedisQuotas,
    held: Vec<(String, i64)>,
    /// Others' spend + reservations per scope at admission, and the limit.
    others: Vec<(i64, i64)>,
    /// Whether a soft limit was crossed.
    pub soft_limit_crossed: bool,
    settled: bool,
}

impl RedisBudgetReservation {
    /// Whether `running_cost_micros` would pass a hard limit (see the module doc).
    pub fn would_exceed(&self, running_cost_micros: i64) -> bool {
        self.others
            .iter()
            .any(|(others, limit)| others + running_cost_micros > *limit)
    }

    /// Moves the reservation into `spent` as `cost_micros` (in a background task).
    pub fn settle(mut self, cost_micros: i64) {
        self.settled = true;
        self.release(Some(cost_micros));
    }

    fn release(&self, cost_micros: Option<i64>) {
        let store = self.store.clone();
        let held = self.held.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            for (key, reserved) in held {
                // Unsettled (dropped) reservations count as spent: the safe side.
                let spent = cost_micros.unwrap_or(reserved);
                let result = store
                    .run(|pipe| {
                        pipe.cmd("HINCRBY")
                            .arg(&key)
                            .arg("reserved")
                            .arg(-reserved)
                            .ignore();
                        pipe.cmd("HINCRBY")
                            .arg(&key)
                            .arg("spent")
                            .arg(spent)
                            .ignore();
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "could not settle a budget reservation in Redis");
                }
            }
        });
    }
}

impl Drop for RedisBudgetReservation {
    fn drop(&mut self) {
        if !self.settled {
            self.release(None);
        }
    }
}

/// Budget state shared through Redis.
#[derive(Clone)]
pub struct RedisBudgets {
    store: RedisQuotas,
    tz: TimeZone,
    script: std::sync::Arc<redis::Script>,
}

fn ttl_seconds(period: Period) -> i64 {
    match period {
        Period::Daily => 3 * 86_400,
        Period::Weekly => 15 * 86_400,
        Period::Monthly => 62 * 86_400,
        Period::Total => 0,
    }
}

impl RedisBudgets {
    /// Budgets on the same Redis as `store`, periods in `tz`.
    pub fn new(store: RedisQuotas, tz: TimeZone) -> Self {
        RedisBudgets {
            store,
            tz,
            script: std::sync::Arc::new(redis::Script::new(include_str!("redis_budget.lua"))),
        }
    }

    fn key(&self, scope: &Scope, spec: &BudgetSpec, now: Timestamp) -> String {
        let id = match scope {
            Scope::Key(k) => format!("k:{k}"),
            Scope::Tenant(t) => format!("t:{t}"),
        };
        format!("sluice:b:{id}:{}", period_start(spec.period, now, &self.tz))
    }

    /// Reserves `worst_case_micros` on every budget; the outer `Err` means
    /// Redis could not be asked.
    pub async fn reserve(
        &self,
        scopes: &[(Scope, BudgetSpec)],
        worst_case_micros: i64,
        now: Timestamp,
    ) -> Result<Result<RedisBudgetReservation, BudgetRejection>, redis::RedisError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(worst_case_micros);
        let keys: Vec<String> = scopes
            .iter()
            .map(|(s, spec)| self.key(s, spec, now))
            .collect();
        for ((_, spec), key) in scopes.iter().zip(&keys) {
            invocation.key(key);
            invocation
                .arg(spec.limit_micros)
                .arg(spec.soft_limit_micros.unwrap_or(-1))
                .arg(ttl_seconds(spec.period));
        }
        let reply: Vec<i64> = self.store.invoke(&invocation).await?;
        let get = |i: usize| reply.get(i).copied().unwrap_or(0);
        if get(0) != 1 {
            let index = usize::try_from(get(1)).unwrap_or(0);
            let (scope, spec) = &scopes[index.min(scopes.len().saturating_sub(1))];
            return Ok(Err(BudgetRejection {
                scope_kind: scope.kind(),
                limit_micros: spec.limit_micros,
                spent_micros: get(3),
            }));
        }
        let others = scopes
            .iter()
            .enumerate()
            .map(|(i, (_, spec))| (get(3 + 2 * i) + get(4 + 2 * i), spec.limit_micros))
            .collect();
        Ok(Ok(RedisBudgetReservation {
            store: self.store.clone(),
            held: keys.into_iter().map(|k| (k, worst_case_micros)).collect(),
            others,
            soft_limit_crossed: get(2) == 1,
            settled: false,
        }))
    }

    /// Raises `scope`'s spend this period to `ledger_spent_micros` (never lowers it).
    pub async fn seed(
        &self,
        scope: &Scope,
        spec: &BudgetSpec,
        ledger_spent_micros: i64,
        now: Timestamp,
    ) -> Result<(), redis::RedisError> {
        let key = self.key(scope, spec, now);
        let current: Option<i64> = self
            .store
            .query(redis::cmd("HGET").arg(&key).arg("spent"))
            .await?;
        if current.unwrap_or(0) < ledger_spent_micros {
            self.store
                .run(|pipe| {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("spent")
                        .arg(ledger_spent_micros)
                        .ignore();
                })
                .await?;
        }
        Ok(())
    }

    /// `(spent, reserved)` for `scope` this period.
    pub async fn usage(
        &self,
        scope: &Scope,
        spec: &BudgetSpec,
        now: Timestamp,
    ) -> Result<(i64, i64), redis::RedisError> {
        let key = self.key(scope, spec, now);
        let values: (Option<i64>, Option<i64>) = self
            .store
            .query(redis::cmd("HMGET").arg(&key).arg("spent").arg("reserved"))
            .await?;
        Ok((values.0.unwrap_or(0), values.1.unwrap_or(0)))
    }
}
