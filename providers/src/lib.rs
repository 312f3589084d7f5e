//! Provider adapters and the router.
//!
//! Start at [`Router`]: it maps the `"model"` a client asked for to a plan
//! of [`Candidate`]s — a failover chain of [`UpstreamTarget`]s, each with its
//! [`UpstreamHealth`] (circuit breaker, in-flight count, latency average). The
//! request body is read through [`RoutingFields::parse`], which looks only at
//! what routing needs and keeps the rest as raw bytes, so a pass-through
//! request is forwarded untouched but for the model name. Nothing here knows
//! about the HTTP server; `proxy/` drives these types.
//!
//! Wire translation starts at [`Provider`] (in `provider.rs`): one enum over
//! OpenAI-compatible, Azure, Anthropic, Gemini and Bedrock upstreams, with
//! [`Provider::build_request`] for the way out and
//! [`Provider::response_translator`] for the way back. Each variant holds
//! one provider's type, which implements the `WireFormat` trait (in
//! `wire/mod.rs`); every `Provider` method is a `match` forwarding to it.
//! [`openai`] serves OpenAI and every OpenAI-compatible server; the
//! translated formats live in [`anthropic`], [`gemini`] and [`bedrock`],
//! each split into `request.rs`, `response.rs` and `stream.rs`.
//!
//! What formats share lives in `wire/`, which imports no provider: header
//! building, turn merging, SSE framing, stream state and the
//! [`ResponseTranslator`]. `chat.rs` reads the OpenAI request once;
//! `chunk.rs` writes OpenAI replies and chunks from the common shape.
//!
//! To add a provider: write one module (a file, or a folder once it grows)
//! whose type implements `WireFormat` — for a translated format, its
//! `response_translator` hands [`ResponseTranslator`] a `ReplyFormat` of its
//! reply functions — and add one variant to [`Provider`] with its arm in
//! each method's `match` (and in [`Provider::new`], for the config kind).

pub mod anthropic;
pub mod azure;
pub mod bedrock;
mod chat;
mod chunk;
pub mod dialects;
mod endpoint;
mod error;
pub mod eventstream;
pub mod gemini;
pub mod health;
pub mod openai;
mod provider;
mod request;
mod router;
mod upstream_error;
mod usage;
mod wire;

pub use endpoint::Endpoint;
pub use error::ProviderError;
pub use health::{AttemptGuard, BreakerState, UpstreamHealth};
pub use provider::{find_preset, translate_whole, Preset, Provider, ProviderKind, PRESETS};
pub use request::RoutingFields;
pub use router::{Candidate, Route, Router, UpstreamTarget};
pub use upstream_error::{UpstreamError, UpstreamErrorKind};
pub use usage::{Usage, UsageTracker};
pub use wire::{ReplyContext, ResponseTranslator, UpstreamRequest};
