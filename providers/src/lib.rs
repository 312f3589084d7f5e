//! Provider adapters and the router.
//!
//! Start at [`Router`]: it maps the `"model"` a client asked for to a plan
//! of [`Candidate`]s — a failover chain of [`UpstreamTarget`]s, each with its
//! [`UpstreamHealth`] (circuit breaker, in-flight count, latency average). The
//! request body is read through [`RoutingFields::parse`], which looks only at
//! what routing needs and keeps the rest as raw bytes, so a pass-through
//! request is forwarded untouched but for the model name. [`openai`] is the
//! adapter for OpenAI and every OpenAI-compatible server. Nothing here knows
//! about the HTTP server; `proxy/` drives these types.

mod endpoint;
mod error;
pub mod health;
pub mod openai;
mod request;
mod router;
mod usage;

pub use endpoint::Endpoint;
pub use error::ProviderError;
pub use request::RoutingFields;
pub use health::{AttemptGuard, BreakerState, UpstreamHealth};
pub use router::{Candidate, Route, Router, UpstreamTarget};
pub use usage::{Usage, UsageTracker};
