//! Quotas shared by every node through Redis.
//!
//! One Lua script admits a request against all its scopes atomically, in one
//! round trip, on the Redis server's clock: GCRA for requests per minute, a
//! reserve-and-settle token bucket for tokens per minute, and a counter for
//! concurrency (with an expiry, so a node that dies holding slots does not
//! block a tenant forever). The semantics match [`crate::LocalQuotas`].
//! The connection is made lazily and re-made after failures, at most once a
//! second, so sluice starts and serves while Redis is away; what it does then
//! is the caller's policy (fail open to local limits, or closed).

use crate::quota::{LimitKind, QuotaLimits, QuotaRejection, RateLimitStatus, Scope, ScopeKind};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long one Redis call may take before the node treats Redis as down.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Least time between two reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

struct Shared {
    client: redis::Client,
    connection: RwLock<Option<ConnectionManager>>,
    last_attempt: Mutex<Option<Instant>>,
    admit: redis::Script,
    release: redis::Script,
    up: AtomicBool,
    prefix: String,
}

/// A Redis-backed quota store; cheap to clone.
#[derive(Clone)]
pub struct RedisQuotas {
    shared: Arc<Shared>,
}

/// A request admitted through Redis; settle it with the real usage. Dropping
/// it releases its concurrency slots (in a background task).
pub struct RedisAdmission {
    quotas: RedisQuotas,
    scopes: Vec<(Scope, QuotaLimits)>,
    reserved_tokens: u64,
    used_tokens: Option<u64>,
    /// Header values after admission.
    pub status: RateLimitStatus,
}

impl RedisAdmission {
    /// Records the real token usage; applied when the admission is dropped.
    pub fn settle(&mut self, used_tokens: u64) {
        self.used_tokens = Some(used_tokens);
    }
}

impl Drop for RedisAdmission {
    fn drop(&mut self) {
        let needs = self.scopes.iter().any(|(_, l)| {
            l.concurrent_requests.is_some()
                || (l.tokens_per_minute.is_some() && self.used_tokens.is_some())
        });
        if !needs {
            return;
        }
        let give_back = self
            .used_tokens
            .map_or(0, |used| self.reserved_tokens as i64 - used as i64);
        let quotas = self.quotas.clone();
        let scopes = std::mem::take(&mut self.scopes);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = quotas.release(&scopes, give_back).await {
                    tracing::debug!(error = %e, "could not release quota slots in Redis");
                }
            });
        }
    }
}

impl RedisQuotas {
    /// A store for `url` (`redis://host:port/db`); keys are prefixed `sluice:q:`.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(RedisQuotas {
            shared: Arc::new(Shared {
                client: redis::Client::open(url)?,
                connection: RwLock::new(None),
                last_attempt: Mutex::new(None),
                admit: redis::Script::new(include_str!("redis_quota.lua")),
                release: redis::Script::new(include_str!("redis_quota_release.lua")),
                up: AtomicBool::new(false),
                prefix: "sluice:q:".to_string(),
            }),
        })
    }

    /// Whether the last Redis call worked.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Ok(guard) = self.shared.connection.read() {
            if let Some(c) = guard.as_ref() {
                return Ok(c.clone());
            }
        }
        {
            let Ok(mut last) = self.shared.last_attempt.lock() else {
                return Err(io_error("lock poisoned"));
            };
            if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return Err(io_error("Redis is down; waiting to reconnect"));
            }
            *last = Some(Instant::now());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(100);
        let manager =
            ConnectionManager::new_with_config(self.shared.client.clone(), config).await?;
        if let Ok(mut slot) = self.shared.connection.write() {
            *slot = Some(manager.clone());
        }
        Ok(manager)
    }

    fn note(&self, ok: bool) {
        let was = self.shared.up.swap(ok, Ordering::Relaxed);
        match (was, ok) {
            (true, false) => tracing::error!("Redis quota store unreachable"),
            (false, true) => tracing::info!("Redis quota store reachable"),
            _ => {}
        }
    }

    fn keys(&self, scope: &Scope) -> [String; 3] {
        let id = match scope {
            Scope::Key(k) => format!("k:{k}"),
            Scope::Tenant(t) => format!("t:{t}"),
        };
        let p = &self.shared.prefix;
        [
            format!("{p}{id}:r"),
            format!("{p}{id}:t"),
            format!("{p}{id}:c"),
        ]
    }

    /// Admits a request against every scope; the outer `Err` means Redis
    /// could not be asked (the caller applies its fail-open/closed policy).
    pub async fn admit(
        &self,
        scopes: &[(Scope, QuotaLimits)],
        estimated_tokens: u64,
    ) -> Result<Result<RedisAdmission, QuotaRejection>, redis::RedisError> {
        let mut invocation = self.shared.admit.prepare_invoke();
        invocation.arg(estimated_tokens);
        for (scope, limits) in scopes {
            for key in self.keys(scope) {
                invocation.key(key);
            }
            invocation
                .arg(limits.requests_per_minute.map_or(0, |v| u64::from(v.get())))
                .arg(limits.tokens_per_minute.map_or(0, |v| v.get()))
                .arg(limits.concurrent_requests.map_or(0, |v| u64::from(v.get())));
        }
        let reply: redis::RedisResult<Vec<i64>> = match self.connection().await {
            Ok(mut conn) => invocation.invoke_async(&mut conn).await,
            Err(e) => Err(e),
        };
        self.note(reply.is_ok());
        let r = reply?;
        let get = |i: usize| r.get(i).copied().unwrap_or(-1);
        let pair = |limit: i64, remaining: i64, reset: i64| {
            (limit >= 0).then(|| {
                (
                    limit as u64,
                    remaining.max(0) as u64,
                    Duration::from_millis(reset.max(0) as u64),
                )
            })
        };
        let status = RateLimitStatus {
            requests: pair(get(4), get(5), get(6)),
            tokens: pair(get(7), get(8), get(9)),
        };
        if get(0) == 1 {
            return Ok(Ok(RedisAdmission {
                quotas: self.clone(),
                scopes: scopes.to_vec(),
                reserved_tokens: estimated_tokens,
                used_tokens: None,
                status,
            }));
        }
        let scope_kind = usize::try_from(get(1))
            .ok()
            .and_then(|i| scopes.get(i))
            .map_or(ScopeKind::Key, |(s, _)| s.kind());
        let limit = match get(2) {
            1 => LimitKind::Requests,
            2 => LimitKind::Tokens,
            _ => LimitKind::Concurrency,
        };
        let limits = scopes
            .get(usize::try_from(get(1)).unwrap_or(0))
            .map(|(_, l)| *l);
        let never = limit == LimitKind::Tokens
            && limits
                .and_then(|l| l.tokens_per_minute)
                .is_some_and(|tpm| estimated_tokens > tpm.get());
        Ok(Err(QuotaRejection {
            limit,
            scope_kind,
            retry_after: Duration::from_millis(get(3).max(1) as u64),
            status,
            never,
        }))
    }

    async fn release(
        &self,
        scopes: &[(Scope, QuotaLimits)],
        give_back_tokens: i64,
    ) -> Result<(), redis::RedisError> {
        let mut invocation = self.shared.release.prepare_invoke();
        invocation.arg(give_back_tokens);
        for (scope, limits) in scopes {
            let [_, tokens, concurrency] = self.keys(scope);
            invocation.key(tokens).key(concurrency);
            invocation
                .arg(limits.tokens_per_minute.map_or(0, |v| v.get()))
                .arg(limits.concurrent_requests.map_or(0, |v| u64::from(v.get())));
        }
        let mut conn = self.connection().await?;
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }
}

impl RedisQuotas {
    /// Invokes a prepared script, marking Redis up or down.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, redis::RedisError> {
        let reply = match self.connection().await {
            Ok(mut conn) => invocation.invoke_async(&mut conn).await,
            Err(e) => Err(e),
        };
        self.note(reply.is_ok());
        reply
    }

    /// Runs one command, marking Redis up or down.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, redis::RedisError> {
        let reply = match self.connection().await {
            Ok(mut conn) => cmd.query_async(&mut conn).await,
            Err(e) => Err(e),
        };
        self.note(reply.is_ok());
        reply
    }

    /// Runs the commands `fill` adds to one atomic pipeline.
    pub(crate) async fn run(
        &self,
        fill: impl FnOnce(&mut redis::Pipeline),
    ) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        fill(&mut pipe);
        let reply: Result<(), _> = match self.connection().await {
            Ok(mut conn) => pipe.query_async(&mut conn).await,
            Err(e) => Err(e),
        };
        self.note(reply.is_ok());
        reply
    }
}

fn io_error(message: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, message))
}
