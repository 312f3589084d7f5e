//! Request filters: who is calling, may they, and can they afford it.
//!
//! The access policy lives in [`access`]: [`AccessPolicy`] reads the caller
//! from a request's headers, checks its model allow-list and priority,
//! admits it against its key's and tenant's quotas, reserves its worst-case
//! spend on their budgets (soft-limit downgrades and alerts included), and
//! says which streams a concurrency refusal may preempt
//! ([`preemption_scope`]); the gateway only maps [`AccessError`] to HTTP.
//! Start reading there.
//!
//! Its parts, each usable alone: [`auth`] ([`Authenticator`]: virtual keys to [`KeyEntry`]), then
//! [`quotas`] ([`Quotas`]: requests, tokens and concurrency per minute per
//! key and tenant, on this node ([`quota`]) or shared through Redis
//! ([`redis_quota`])) and [`budget`] ([`LocalBudgets`]: spend reservations
//! in micro-dollars). [`streams`] ([`StreamRegistry`]) tracks and steers live
//! streams, [`fair_queue`] ([`FairQueue`]) shares the node's slots between
//! tenants, and [`stream_bus`] carries stream control between nodes.
//! [`RequestId`] gives each request its identity. These are
//! plain types and functions, unit-tested and benchmarked without a server;
//! only `proxy/` wires them into pingora.

pub mod access;
pub mod auth;
pub mod budget;
pub mod budgets;
pub mod fair_queue;
pub mod jwt;
pub mod quota;
pub mod quotas;
pub mod redis_budget;
pub mod redis_quota;
mod request_id;
pub mod stream_bus;
pub mod streams;

pub use access::{
    preemption_scope, AccessError, AccessPolicy, BudgetScope, Caller, SeedRequest, SoftLimitAlert,
    SpendHold, TenantPolicy,
};
pub use auth::{AuthError, Authenticator, KeyEntry, KeyHash, KeySource, KeySourceError, Priority};
pub use budget::{
    period_start, BudgetRejection, BudgetReservation, BudgetSpec, LocalBudgets, Period,
};
pub use budgets::{BudgetError, BudgetHold, Budgets};
pub use fair_queue::{FairQueue, QueueError, Slot};
pub use jwt::JwtVerifier;
pub use quota::{
    Admission, LimitKind, LocalQuotas, QuotaLimits, QuotaRejection, RateLimitStatus, Scope,
    ScopeKind,
};
pub use quotas::{QuotaAdmission, QuotaError, Quotas};
pub use redis_budget::{RedisBudgetReservation, RedisBudgets};
pub use redis_quota::{RedisAdmission, RedisQuotas};
pub use request_id::RequestId;
pub use stream_bus::StreamBus;
pub use streams::{
    Command, Control, EndCause, Preempted, StateCounts, StreamHandle, StreamOwner, StreamRegistry,
    StreamView, Viewer, Within,
};
