//! Provider adapters and the router.
//!
//! Start at [`Router`]: it maps the `"model"` a client asked for to an
//! [`UpstreamTarget`] (where to send it and under which model name). The
//! request body is read through [`RoutingFields::parse`], which looks only at
//! what routing needs and keeps the rest as raw bytes, so a pass-through
//! request is forwarded untouched but for the model name. [`openai`] is the
//! adapter for OpenAI and every OpenAI-compatible server. Nothing here knows
//! about the HTTP server; `proxy/` drives these types.

mod endpoint;
mod error;
pub mod openai;
mod request;
mod router;
mod usage;

pub use endpoint::Endpoint;
pub use error::ProviderError;
pub use request::RoutingFields;
pub use router::{Route, Router, UpstreamTarget};
pub use usage::{Usage, UsageTracker};
