//! sluice: the LLM gateway, as a library the `sluice` binary drives.
//!
//! Where to start reading:
//! - [`app`]: the pingora HTTP application ([`app::Gateway`]) and its route
//!   table; [`app::server::run`] builds and runs the server from a
//!   validated config.
//! - [`forward`]: the forward pipeline — one [`forward::ForwardCtx`] per
//!   request through intake, admit, plan, attempt, relay and settle — and
//!   its seams: client dialects, answer sources (HTTP or in-process),
//!   provider adapters (in `sluice_providers`).
//! - [`local`]: the built-in engine (`sluice_batcher`) as an in-process
//!   answer source for `kind: local` upstreams.
//! - [`streams`]: node slots, preemption and the `/v1/streams` API;
//!   [`admin`]: keys, tenants and usage reports.
//! - [`downstream`]: the client's side of a connection (body, answers,
//!   disconnects); [`error`]: the one mapping to OpenAI's error body.
//!   Access policy (keys, quotas, budgets) lives in `sluice_filters`.
//! - [`tls`]: the listener's certificates (SNI, rotation) and upstream CA
//!   roots.
//! - [`ops`]: metrics, accounting, alerts, logging, the control runtime;
//!   [`cli`]: the command line.
//!
//! Only this crate knows pingora. Dependencies point one way: `app` uses
//! everything, the pipeline and the APIs use the leaves (`downstream`,
//! `error`, `ops`), and no module imports `app`.

pub mod admin;
pub mod app;
pub mod cli;
pub mod downstream;
pub mod error;
pub mod forward;
pub mod local;
pub mod ops;
pub mod streams;
pub mod tls;

pub use app::listeners::Start;
pub use app::server::{run, StartupError};
pub use app::Gateway;
