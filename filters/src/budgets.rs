//! The budget front door: this node's budgets, or Redis-shared ones with a
//! policy for when Redis is unreachable (the same as quotas').

use crate::budget::{BudgetRejection, BudgetReservation, BudgetSpec, LocalBudgets};
use crate::quota::Scope;
use crate::redis_budget::{RedisBudgetReservation, RedisBudgets};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A request's hold on its budgets, wherever they live.
pub enum BudgetHold {
    /// Held in this node's memory.
    Local(BudgetReservation),
    /// Held in Redis.
    Redis(RedisBudgetReservation),
}

impl BudgetHold {
    /// Whether a soft limit was crossed by this reservation.
    pub fn soft_limit_crossed(&self) -> bool {
        match self {
            BudgetHold::Local(r) => r.soft_limit_crossed,
            BudgetHold::Redis(r) => r.soft_limit_crossed,
        }
    }

    /// Whether the request's running cost would pass a hard limit.
    pub fn would_exceed(&self, running_cost_micros: i64) -> bool {
        match self {
            BudgetHold::Local(r) => r.would_exceed(running_cost_micros),
            BudgetHold::Redis(r) => r.would_exceed(running_cost_micros),
        }
    }

    /// Replaces the reservation with the real cost.
    pub fn settle(self, cost_micros: i64) {
        match self {
            BudgetHold::Local(r) => r.settle(cost_micros),
            BudgetHold::Redis(r) => r.settle(cost_micros),
        }
    }
}

/// Why a request's budget could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A hard limit refused it.
    #[error(transparent)]
    Rejected(#[from] BudgetRejection),
    /// Redis is unreachable and the policy is to fail closed.
    #[error("The budget store is unavailable; please retry shortly.")]
    StoreUnavailable,
}

/// Budget state for the gateway.
pub struct Budgets {
    local: LocalBudgets,
    redis: Option<RedisBudgets>,
    fail_open: bool,
}

impl Budgets {
    /// Budgets on this node only, periods in `tz`.
    pub fn local(tz: TimeZone) -> Self {
        Budgets {
            local: LocalBudgets::new(tz),
            redis: None,
            fail_open: true,
        }
    }

    /// Budgets shared through Redis; when it is unreachable, `fail_open`
    /// falls back to this node's local budgets, else requests are refused.
    pub fn shared(redis: RedisBudgets, tz: TimeZone, fail_open: bool) -> Self {
        Budgets {
            local: LocalBudgets::new(tz),
            redis: Some(redis),
            fail_open,
        }
    }

    /// The zone whose calendar bounds the periods.
    pub fn time_zone(&self) -> &TimeZone {
        self.local.time_zone()
    }

    /// Reserves `worst_case_micros` on every budget in `scopes`.
    pub async fn reserve(
        &self,
        scopes: &[(Scope, BudgetSpec)],
        worst_case_micros: i64,
        now: Timestamp,
    ) -> Result<BudgetHold, BudgetError> {
        if let Some(redis) = &self.redis {
            match redis.reserve(scopes, worst_case_micros, now).await {
                Ok(decision) => return Ok(BudgetHold::Redis(decision?)),
                Err(e) => {
                    tracing::debug!(error = %e, fail_open = self.fail_open, "budget store call failed");
                    if !self.fail_open {
                        return Err(BudgetError::StoreUnavailable);
                    }
                }
            }
        }
        Ok(BudgetHold::Local(self.local.reserve(
            scopes,
            worst_case_micros,
            now,
        )?))
    }

    /// Loads a scope's spend this period from the ledger.
    pub async fn seed(&self, scope: &Scope, spec: &BudgetSpec, spent_micros: i64, now: Timestamp) {
        self.local.seed(scope, spec, spent_micros, now);
        if let Some(redis) = &self.redis {
            if let Err(e) = redis.seed(scope, spec, spent_micros, now).await {
                tracing::warn!(error = %e, "could not seed a budget in Redis");
            }
        }
    }

    /// `(spent, reserved)` for `scope` this period.
    pub async fn usage(
        &self,
        scope: &Scope,
        spec: &BudgetSpec,
        now: Timestamp,
    ) -> Option<(i64, i64)> {
        match &self.redis {
            Some(redis) => redis.usage(scope, spec, now).await.ok(),
            None => self.local.usage(scope),
        }
    }
}
