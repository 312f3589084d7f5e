//! Quotas on one node: requests per minute, tokens per minute, concurrent
//! requests, per key and per tenant.
//!
//! Requests per minute are GCRA through `governor`. Tokens per minute are a
//! token bucket written here, because a token quota must *reserve* an
//! estimate up front and *settle* on the real usage later — give back what was
//! not used, or run into debt when more was used — and governor cannot return
//! capacity. Concurrency is a counter whose permit is released on drop.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The limits on one key or tenant (`sluice_config::Limits`).
pub use sluice_config::Limits as QuotaLimits;

/// Whom a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One virtual key, by key id.
    Key(String),
    /// One tenant, by name.
    Tenant(String),
}

impl Scope {
    /// Whether this is a key or a tenant, for messages, metrics and the
    /// choice of which streams a preemption may pick from.
    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::Key(_) => ScopeKind::Key,
            Scope::Tenant(_) => ScopeKind::Tenant,
        }
    }

    /// The key id or tenant name.
    pub fn name(&self) -> &str {
        match self {
            Scope::Key(name) | Scope::Tenant(name) => name,
        }
    }
}

/// What a limit or budget was counted on: a [`Scope`]'s kind, plus the one
/// request whose own running cost a stream cut is about.
///
/// `Display` gives the word used in error messages, metrics and alert
/// bodies (`key`, `tenant`, `request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// One virtual key.
    Key,
    /// One tenant.
    Tenant,
    /// One request (a stream cut for crossing a hard budget mid-answer).
    Request,
}

impl ScopeKind {
    /// `key`, `tenant` or `request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Key => "key",
            ScopeKind::Tenant => "tenant",
            ScopeKind::Request => "request",
        }
    }
}

impl std::fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Concurrent requests.
    Concurrency,
}

/// What OpenAI's `x-ratelimit-*` headers report: the tightest scope's view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// `(limit, remaining, time until full)` for requests, if limited.
    pub requests: Option<(u64, u64, Duration)>,
    /// `(limit, remaining, time until full)` for tokens, if limited.
    pub tokens: Option<(u64, u64, Duration)>,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct QuotaRejection {
    /// The limit that refused.
    pub limit: LimitKind,
    /// Whether the key's or the tenant's limit refused.
    pub scope_kind: ScopeKind,
    /// When a retry may succeed (the `retry-after` header).
    pub retry_after: Duration,
    /// Header values at the moment of refusal.
    pub status: RateLimitStatus,
    /// True when the request can never pass (it asks for more tokens than a
    /// whole minute's quota).
    pub never: bool,
}

impl QuotaRejection {
    /// The message: when to retry, or (for a request that can never fit)
    /// that retrying is pointless and what to shrink.
    fn describe(&self) -> String {
        if self.never {
            let limit = self.status.tokens.map_or(0, |(limit, _, _)| limit);
            return format!(
                "Request too large for {} on tokens per minute: it needs more than the whole limit of {limit}. Reduce the prompt or max_tokens; retrying will not help.",
                self.scope_kind
            );
        }
        format!(
            "Rate limit reached for {} on {} per minute: retry after {}s.",
            self.scope_kind,
            limit_name(self.limit),
            self.retry_after.as_secs().max(1)
        )
    }
}

fn limit_name(limit: LimitKind) -> &'static str {
    match limit {
        LimitKind::Requests => "requests",
        LimitKind::Tokens => "tokens",
        LimitKind::Concurrency => "concurrent requests",
    }
}

type RequestLimiter =
    RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A token bucket that can be reserved from and settled into.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    /// May go negative: usage beyond the reservation is debt.
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(per_minute: NonZeroU64, now: Instant) -> Self {
        let capacity = per_minute.get() as f64;
        TokenBucket {
            capacity,
            per_second: capacity / 60.0,
            level: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    fn until_full(&self) -> Duration {
        Duration::from_secs_f64(((self.capacity - self.level) / self.per_second).max(0.0))
    }

    fn status(&self) -> (u64, u64, Duration) {
        (
            self.capacity as u64,
            self.level.max(0.0) as u64,
            self.until_full(),
        )
    }
}

struct ScopeState {
    limits: QuotaLimits,
    requests: Option<RequestLimiter>,
    tokens: Option<Mutex<TokenBucket>>,
    in_flight: AtomicU32,
}

impl ScopeState {
    fn new(limits: QuotaLimits) -> Self {
        ScopeState {
            limits,
            requests: limits
                .requests_per_minute
                .map(|rpm| RateLimiter::direct(Quota::per_minute(rpm)).with_middleware()),
            tokens: limits
                .tokens_per_minute
                .map(|tpm| Mutex::new(TokenBucket::new(tpm, Instant::now()))),
            in_flight: AtomicU32::new(0),
        }
    }
}

/// All quota state of this node.
#[derive(Default)]
pub struct LocalQuotas {
    scopes: RwLock<HashMap<Scope, Arc<ScopeState>>>,
}

/// An admitted request: holds its concurrency slots and token reservations.
/// Settle it with the real usage; dropping it unsettled keeps the reservation
/// spent (the safe side) and frees the concurrency slots.
pub struct Admission {
    held: Vec<Arc<ScopeState>>,
    reserved_tokens: u64,
    /// Header values after admission.
    pub status: RateLimitStatus,
}

impl Admission {
    /// Replaces the token reservation with what the request really used.
    pub fn settle(&mut self, used_tokens: u64) {
        let now = Instant::now();
        for scope in &self.held {
            if let Some(bucket) = &scope.tokens {
                if let Ok(mut b) = bucket.lock() {
                    b.refill(now);
                    b.level += self.reserved_tokens as f64 - used_tokens as f64;
                    b.level = b.level.min(b.capacity);
                }
            }
        }
        self.reserved_tokens = used_tokens;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        for scope in &self.held {
            if scope.limits.concurrent_requests.is_some() {
                scope.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl LocalQuotas {
    fn state(&self, scope: &Scope, limits: QuotaLimits) -> Arc<ScopeState> {
        if let Ok(map) = self.scopes.read() {
            if let Some(state) = map.get(scope).filter(|s| s.limits == limits) {
                return state.clone();
            }
        }
        let state = Arc::new(ScopeState::new(limits));
        if let Ok(mut map) = self.scopes.write() {
            // A changed limit (config reload, admin update) starts a fresh window.
            let entry = map.entry(scope.clone()).or_insert_with(|| state.clone());
            if entry.limits != limits {
                *entry = state.clone();
            }
            return entry.clone();
        }
        state
    }

    /// Admits a request estimated at `estimated_tokens` against every scope
    /// (key first, then tenant), or says which limit refused and for how long.
    pub fn admit(
        &self,
        scopes: &[(Scope, QuotaLimits)],
        estimated_tokens: u64,
    ) -> Result<Admission, QuotaRejection> {
        let now = Instant::now();
        let mut admission = Admission {
            held: Vec::with_capacity(scopes.len()),
            reserved_tokens: 0,
            status: RateLimitStatus::default(),
        };
        let mut reserved: Vec<Arc<ScopeState>> = Vec::new();
        let refuse = |reserved: &[Arc<ScopeState>], rejection: QuotaRejection| {
            // Give back what earlier scopes already reserved for this request.
            for s in reserved {
                if let Some(Ok(mut b)) = s.tokens.as_ref().map(|t| t.lock()) {
                    b.level = (b.level + estimated_tokens as f64).min(b.capacity);
                }
            }
            Err(rejection)
        };
        for (scope, limits) in scopes {
            let state = self.state(scope, *limits);
            // Concurrency first: reversible, and cheapest to refuse.
            if let Some(max) = limits.concurrent_requests {
                let before = state.in_flight.fetch_add(1, Ordering::AcqRel);
                // Hold it in the admission now so any refusal below releases it on drop.
                admission.held.push(state.clone());
                if before >= max.get() {
                    return refuse(
                        &reserved,
                        QuotaRejection {
                            limit: LimitKind::Concurrency,
                            scope_kind: scope.kind(),
                            retry_after: Duration::from_secs(1),
                            status: admission.status,
                            never: false,
                        },
                    );
                }
            } else {
                admission.held.push(state.clone());
            }
            if let Some(bucket) = &state.tokens {
                let Ok(mut b) = bucket.lock() else { continue };
                b.refill(now);
                let status = b.status();
                if estimated_tokens as f64 > b.capacity {
                    return refuse(
                        &reserved,
                        QuotaRejection {
                            limit: LimitKind::Tokens,
                            scope_kind: scope.kind(),
                            retry_after: Duration::from_secs(60),
                            status: RateLimitStatus {
                                tokens: Some(status),
                                ..admission.status
                            },
                            never: true,
                        },
                    );
                }
                if b.level < estimated_tokens as f64 {
                    let missing = estimated_tokens as f64 - b.level;
                    return refuse(
                        &reserved,
                        QuotaRejection {
                            limit: LimitKind::Tokens,
                            scope_kind: scope.kind(),
                            retry_after: Duration::from_secs_f64(missing / b.per_second),
                            status: RateLimitStatus {
                                tokens: Some(status),
                                ..admission.status
                            },
                            never: false,
                        },
                    );
                }
                b.level -= estimated_tokens as f64;
                admission.status.tokens = tighter(admission.status.tokens, b.status());
                drop(b);
                reserved.push(state.clone());
            }
            // Requests last: a governor cell cannot be handed back.
            if let Some(limiter) = &state.requests {
                match limiter.check() {
                    Ok(snapshot) => {
                        let limit = u64::from(snapshot.quota().burst_size().get());
                        let remaining = u64::from(snapshot.remaining_burst_capacity());
                        let per_cell = snapshot.quota().replenish_interval();
                        let reset = per_cell * (limit - remaining) as u32;
                        admission.status.requests =
                            tighter(admission.status.requests, (limit, remaining, reset));
                    }
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        let limit = limits.requests_per_minute.map_or(0, |r| u64::from(r.get()));
                        return refuse(
                            &reserved,
                            QuotaRejection {
                                limit: LimitKind::Requests,
                                scope_kind: scope.kind(),
                                retry_after: wait,
                                status: RateLimitStatus {
                                    requests: Some((limit, 0, wait)),
                                    ..admission.status
                                },
                                never: false,
                            },
                        );
                    }
                }
            }
        }
        admission.reserved_tokens = if reserved.is_empty() {
            0
        } else {
            estimated_tokens
        };
        Ok(admission)
    }

    /// Requests in flight for `scope` now (for tests and metrics).
    pub fn in_flight(&self, scope: &Scope) -> u32 {
        self.scopes
            .read()
            .ok()
            .and_then(|m| m.get(scope).map(|s| s.in_flight.load(Ordering::Acquire)))
            .unwrap_or(0)
    }
}

/// The status with fewer remaining units wins.
fn tighter(
    current: Option<(u64, u64, Duration)>,
    candidate: (u64, u64, Duration),
) -> Option<(u64, u64, Duration)> {
    match current {
        Some(c) if c.1 <= candidate.1 => Some(c),
        _ => Some(candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn limits(rpm: u32, tpm: u64, conc: u32) -> QuotaLimits {
        QuotaLimits {
            requests_per_minute: NonZeroU32::new(rpm),
            tokens_per_minute: NonZeroU64::new(tpm),
            concurrent_requests: NonZeroU32::new(conc),
        }
    }

    fn key(l: QuotaLimits) -> Vec<(Scope, QuotaLimits)> {
        vec![(Scope::Key("k".into()), l)]
    }

    #[test]
    fn requests_per_minute_allows_the_burst_then_refuses() {
        let q = LocalQuotas::default();
        let scopes = key(limits(3, 0, 0));
        for i in 0..3 {
            let a = q.admit(&scopes, 1).unwrap();
            assert_eq!(a.status.requests.unwrap().1, 2 - i);
        }
        let r = q.admit(&scopes, 1).err().unwrap();
        assert_eq!(r.limit, LimitKind::Requests);
        assert!(
            r.retry_after > Duration::from_secs(15) && r.retry_after <= Duration::from_secs(20)
        );
        assert_eq!(r.status.requests.unwrap().1, 0);
    }

    #[test]
    fn tokens_reserve_then_settle_gives_back_the_unused_part() {
        let q = LocalQuotas::default();
        let scopes = key(limits(0, 1000, 0));
        let mut a = q.admit(&scopes, 800).unwrap();
        // 200 left: a second 800-token estimate must wait.
        let r = q.admit(&scopes, 800).err().unwrap();
        assert_eq!(r.limit, LimitKind::Tokens);
        a.settle(100);
        // 900 left after settling the real usage.
        assert!(q.admit(&scopes, 800).is_ok());
    }

    #[test]
    fn usage_beyond_the_reservation_becomes_debt() {
        let q = LocalQuotas::default();
        let scopes = key(limits(0, 1000, 0));
        let mut a = q.admit(&scopes, 100).unwrap();
        a.settle(1500);
        let r = q.admit(&scopes, 1).err().unwrap();
        assert!(
            r.retry_after >= Duration::from_secs(29),
            "{:?}",
            r.retry_after
        );
    }

    #[test]
    fn a_request_larger_than_the_minute_can_never_pass() {
        let q = LocalQuotas::default();
        let r = q.admit(&key(limits(0, 1000, 0)), 5000).err().unwrap();
        assert!(r.never);
    }

    #[test]
    fn scope_kinds_read_as_todays_words() {
        assert_eq!(Scope::Key("k".into()).kind(), ScopeKind::Key);
        assert_eq!(Scope::Tenant("t".into()).kind(), ScopeKind::Tenant);
        assert_eq!(Scope::Tenant("t".into()).name(), "t");
        let words: Vec<String> = [ScopeKind::Key, ScopeKind::Tenant, ScopeKind::Request]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(words, ["key", "tenant", "request"]);
        let r = QuotaRejection {
            limit: LimitKind::Concurrency,
            scope_kind: ScopeKind::Tenant,
            retry_after: Duration::from_secs(1),
            status: RateLimitStatus::default(),
            never: false,
        };
        assert_eq!(
            r.to_string(),
            "Rate limit reached for tenant on concurrent requests per minute: retry after 1s."
        );
    }

    #[test]
    fn concurrency_permits_are_released_on_drop() {
        let q = LocalQuotas::default();
        let scopes = key(limits(0, 0, 2));
        let a = q.admit(&scopes, 0).unwrap();
        let b = q.admit(&scopes, 0).unwrap();
        assert_eq!(
            q.admit(&scopes, 0).err().unwrap().limit,
            LimitKind::Concurrency
        );
        assert_eq!(q.in_flight(&Scope::Key("k".into())), 2);
        drop(a);
        assert!(q.admit(&scopes, 0).is_ok());
        drop(b);
        assert_eq!(q.in_flight(&Scope::Key("k".into())), 0);
    }

    #[test]
    fn tenant_refusal_returns_the_keys_reservation_and_slot() {
        let q = LocalQuotas::default();
        let scopes = vec![
            (Scope::Key("k".into()), limits(0, 1000, 5)),
            (Scope::Tenant("t".into()), limits(0, 0, 1)),
        ];
        let _held = q.admit(&scopes, 300).unwrap();
        let r = q.admit(&scopes, 300).err().unwrap();
        assert_eq!(
            (r.limit, r.scope_kind),
            (LimitKind::Concurrency, ScopeKind::Tenant)
        );
        assert_eq!(q.in_flight(&Scope::Key("k".into())), 1);
        // The key's bucket got its 300 back: 700 are left, so 700 fits alone.
        let key_only = key(limits(0, 1000, 5));
        assert!(q.admit(&key_only, 700).is_ok());
    }
}
