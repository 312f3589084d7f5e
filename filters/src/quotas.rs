//! The quota front door: local limits, or Redis-shared ones with a policy for
//! when Redis is unreachable.

use crate::quota::{Admission, LocalQuotas, QuotaLimits, QuotaRejection, RateLimitStatus, Scope};
use crate::redis_quota::{RedisAdmission, RedisQuotas};
use std::sync::atomic::{AtomicU64, Ordering};

/// An admitted request's hold on its quotas, wherever they live.
pub enum QuotaAdmission {
    /// Held in this node's memory.
    Local(Admission),
    /// Held in Redis.
    Redis(RedisAdmission),
}

impl QuotaAdmission {
    /// `x-ratelimit-*` values after admission.
    pub fn status(&self) -> &RateLimitStatus {
        match self {
            QuotaAdmission::Local(a) => &a.status,
            QuotaAdmission::Redis(a) => &a.status,
        }
    }

    /// Replaces the token reservation with the real usage.
    pub fn settle(&mut self, used_tokens: u64) {
        match self {
            QuotaAdmission::Local(a) => a.settle(used_tokens),
            QuotaAdmission::Redis(a) => a.settle(used_tokens),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// A limit refused it.
    #[error(transparent)]
    Rejected(#[from] QuotaRejection),
    /// Redis is unreachable and the policy is to fail closed.
    #[error("The rate-limit store is unavailable; please retry shortly.")]
    StoreUnavailable,
}

/// Quota state for the gateway.
pub struct Quotas {
    local: LocalQuotas,
    redis: Option<RedisQuotas>,
    fail_open: bool,
    store_errors: AtomicU64,
}

impl Quotas {
    /// Local limits only.
    pub fn local() -> Self {
        Quotas {
            local: LocalQuotas::default(),
            redis: None,
            fail_open: true,
            store_errors: AtomicU64::new(0),
        }
    }

    /// Limits shared through Redis; when it is unreachable, `fail_open`
    /// falls back to this node's local limits, else requests get 503.
    pub fn shared(redis: RedisQuotas, fail_open: bool) -> Self {
        Quotas {
            redis: Some(redis),
            fail_open,
            ..Quotas::local()
        }
    }

    /// Admits a request against `scopes`, reserving `estimated_tokens`.
    pub async fn admit(
        &self,
        scopes: &[(Scope, QuotaLimits)],
        estimated_tokens: u64,
    ) -> Result<QuotaAdmission, QuotaError> {
        if let Some(redis) = &self.redis {
            match redis.admit(scopes, estimated_tokens).await {
                Ok(decision) => return Ok(QuotaAdmission::Redis(decision?)),
                Err(e) => {
                    self.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, fail_open = self.fail_open, "quota store call failed");
                    if !self.fail_open {
                        return Err(QuotaError::StoreUnavailable);
                    }
                }
            }
        }
        Ok(QuotaAdmission::Local(
            self.local.admit(scopes, estimated_tokens)?,
        ))
    }

    /// `Some(up)` when Redis is configured.
    pub fn store_up(&self) -> Option<bool> {
        self.redis.as_ref().map(RedisQuotas::is_up)
    }

    /// Calls to the shared store that failed so far.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }
}
