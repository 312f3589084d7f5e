//! Why the access policy refused a request: one error over auth, quotas
//! and budgets, with a label for metrics.

use crate::auth::AuthError;
use crate::budget::BudgetRejection;
use crate::budgets::BudgetError;
use crate::quota::{LimitKind, QuotaRejection};
use crate::quotas::QuotaError;

/// Why the access policy refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The key is missing, wrong, expired, disabled, or may not use the model.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A rate limit (requests, tokens, concurrency) refused the request.
    #[error(transparent)]
    Quota(#[from] QuotaRejection),
    /// Redis, which holds the shared quotas and budgets, is unreachable and
    /// they fail closed.
    #[error("The rate-limit store is unavailable; please retry shortly.")]
    QuotaStoreUnavailable,
    /// A hard budget refused the request.
    #[error(transparent)]
    Budget(#[from] BudgetRejection),
}

impl AccessError {
    /// A short label for metrics (the same words the gateway's errors use).
    pub fn kind(&self) -> &'static str {
        match self {
            AccessError::Auth(e) => e.kind(),
            AccessError::Quota(q) => match q.limit {
                LimitKind::Requests => "rate_limit_requests",
                LimitKind::Tokens => "rate_limit_tokens",
                LimitKind::Concurrency => "rate_limit_concurrency",
            },
            AccessError::QuotaStoreUnavailable => "quota_store_unavailable",
            AccessError::Budget(_) => "budget_exceeded",
        }
    }
}

impl From<QuotaError> for AccessError {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Rejected(r) => AccessError::Quota(r),
            QuotaError::StoreUnavailable => AccessError::QuotaStoreUnavailable,
        }
    }
}

impl From<BudgetError> for AccessError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Rejected(r) => AccessError::Budget(r),
            BudgetError::StoreUnavailable => AccessError::QuotaStoreUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{RateLimitStatus, ScopeKind};
    use std::time::Duration;

    #[test]
    fn store_outages_read_as_one_error() {
        let quota: AccessError = QuotaError::StoreUnavailable.into();
        let budget: AccessError = BudgetError::StoreUnavailable.into();
        assert_eq!(quota, AccessError::QuotaStoreUnavailable);
        assert_eq!(budget, AccessError::QuotaStoreUnavailable);
        assert_eq!(quota.kind(), "quota_store_unavailable");
        assert_eq!(
            quota.to_string(),
            "The rate-limit store is unavailable; please retry shortly."
        );
    }

    #[test]
    fn refusals_keep_their_messages_and_labels() {
        let refusal = |limit| QuotaRejection {
            limit,
            scope_kind: ScopeKind::Key,
            retry_after: Duration::from_secs(3),
            status: RateLimitStatus::default(),
            never: false,
        };
        let labels: Vec<&str> = [
            LimitKind::Requests,
            LimitKind::Tokens,
            LimitKind::Concurrency,
        ]
        .into_iter()
        .map(|l| AccessError::from(QuotaError::Rejected(refusal(l))).kind())
        .collect();
        assert_eq!(
            labels,
            [
                "rate_limit_requests",
                "rate_limit_tokens",
                "rate_limit_concurrency"
            ]
        );
        let quota = AccessError::from(refusal(LimitKind::Requests));
        assert_eq!(
            quota.to_string(),
            "Rate limit reached for key on requests per minute: retry after 3s."
        );
        let budget = AccessError::from(BudgetError::Rejected(BudgetRejection {
            scope_kind: ScopeKind::Tenant,
            limit_micros: 25_000_000,
            spent_micros: 25_000_001,
        }));
        assert_eq!(budget.kind(), "budget_exceeded");
        assert_eq!(
            budget.to_string(),
            "You exceeded your current quota: the tenant budget of $25.00 for this period is spent."
        );
    }
}
