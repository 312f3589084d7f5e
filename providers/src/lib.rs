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
//!
//! Wire translation starts at [`Provider`] (in `adapter.rs`): one enum over
//! OpenAI-compatible, Azure, Anthropic, Gemini and Bedrock upstreams, with
//! [`Provider::build_request`] for the way out and
//! [`Provider::response_translator`] for the way back. Each provider's
//! format lives in its own module; `chat.rs` reads the OpenAI request once,
//! `chunk.rs` writes OpenAI replies and chunks from the common shape.

mod adapter;
pub mod anthropic;
pub mod azure;
pub mod bedrock;
mod chat;
mod chunk;
mod endpoint;
mod error;
pub mod eventstream;
pub mod gemini;
pub mod health;
pub mod openai;
mod request;
mod router;
mod sse;
mod upstream_error;
mod usage;

pub use adapter::{
    find_preset, translate_whole, Preset, Provider, ProviderKind, ReplyContext, ResponseTranslator,
    UpstreamRequest, PRESETS,
};
pub use endpoint::Endpoint;
pub use error::ProviderError;
pub use health::{AttemptGuard, BreakerState, UpstreamHealth};
pub use request::RoutingFields;
pub use router::{Candidate, Route, Router, UpstreamTarget};
pub use upstream_error::{UpstreamError, UpstreamErrorKind};
pub use usage::{Usage, UsageTracker};
