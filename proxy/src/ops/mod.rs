//! Operations: what keeps the gateway observable and accountable but is no
//! request's business — [`metrics`], the ledger and prices ([`accounting`]),
//! soft-limit [`alert`]s, [`logging`], the request span and access log
//! ([`request_log`]), OpenTelemetry export (`otel`, behind the `otel` cargo
//! feature), and the [`control`] runtime for work off the request path.

pub mod accounting;
pub mod alert;
pub mod control;
pub mod edge_metrics;
pub mod engine_metrics;
pub mod logging;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod request_log;

pub use accounting::Accounting;
pub use alert::Alerts;
pub use control::ControlRuntime;
pub use metrics::Metrics;
