//! Which running streams a concurrency refusal may preempt.

use crate::auth::KeyEntry;
use crate::quota::{LimitKind, QuotaRejection, ScopeKind};
use crate::streams::Within;

/// Which running streams a request refused by `refusal` may preempt, to
/// take the place of the lowest-priority one: those of the scope whose
/// concurrency limit refused (the key's or the tenant's). `None` when
/// preemption is off or another limit refused, since ending a stream frees
/// no requests or tokens per minute.
pub fn preemption_scope<'k>(
    refusal: &QuotaRejection,
    key: &'k KeyEntry,
    preempt_enabled: bool,
) -> Option<Within<'k>> {
    if !preempt_enabled || refusal.limit != LimitKind::Concurrency {
        return None;
    }
    match refusal.scope_kind {
        ScopeKind::Key => Some(Within::Key(&key.key_id)),
        ScopeKind::Tenant => Some(Within::Tenant(&key.tenant)),
        // Quotas are never counted on a request; nothing to preempt within.
        ScopeKind::Request => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeyHash, Priority};
    use crate::quota::RateLimitStatus;
    use std::time::Duration;

    fn refused(limit: LimitKind, scope_kind: ScopeKind) -> QuotaRejection {
        QuotaRejection {
            limit,
            scope_kind,
            retry_after: Duration::from_secs(1),
            status: RateLimitStatus::default(),
            never: false,
        }
    }

    #[test]
    fn only_a_concurrency_refusal_preempts_and_only_when_enabled() {
        let key = KeyEntry {
            key_id: "ci".into(),
            tenant: "acme".into(),
            hash: KeyHash::of("sk-ci"),
            models: None,
            priority: Priority::Interactive,
            expires_at: None,
            enabled: true,
            limits: Default::default(),
            budget: None,
        };
        let by_key = refused(LimitKind::Concurrency, ScopeKind::Key);
        let by_tenant = refused(LimitKind::Concurrency, ScopeKind::Tenant);
        assert_eq!(
            preemption_scope(&by_key, &key, true),
            Some(Within::Key("ci"))
        );
        assert_eq!(
            preemption_scope(&by_tenant, &key, true),
            Some(Within::Tenant("acme"))
        );
        for off in [&by_key, &by_tenant] {
            assert_eq!(preemption_scope(off, &key, false), None);
        }
        for limit in [LimitKind::Requests, LimitKind::Tokens] {
            assert_eq!(
                preemption_scope(&refused(limit, ScopeKind::Key), &key, true),
                None
            );
        }
        let by_request = refused(LimitKind::Concurrency, ScopeKind::Request);
        assert_eq!(preemption_scope(&by_request, &key, true), None);
    }
}
