//! Operations: what keeps the gateway observable and accountable but is no
//! request's business — [`metrics`], the ledger and prices ([`accounting`]),
//! soft-limit [`alert`]s, [`logging`], and the [`control`] runtime for work
//! off the request path.

pub mod accounting;
pub mod alert;
pub mod control;
pub mod edge_metrics;
pub mod engine_metrics;
pub mod logging;
pub mod metrics;

pub use accounting::Accounting;
pub use alert::Alerts;
pub use control::ControlRuntime;
pub use metrics::Metrics;
