//! The usage ledger: one priced record per request, never lost.
//!
//! Where to start:
//!
//! - [`Ledger`] (`writer.rs`): the cloneable handle the proxy calls
//!   [`Ledger::record`] on. It queues in memory, writes batches from one
//!   writer task, and spools to disk when the database is slow or down,
//!   replaying later without duplicates. The module docs say exactly what
//!   can and cannot be lost.
//! - [`UsageRecord`] (`record.rs`): what one request cost.
//! - [`PriceTable`] (`pricing.rs`): prices from `data/prices.yaml` plus
//!   overrides; a request's exact cost in integer pico-dollars
//!   ([`cost_picos`]) and rounded once to micro-dollars ([`cost_micros`]).
//! - [`count_tokens`] (`tokens.rs`): tiktoken counts when a provider reports
//!   no usage.
//! - [`Store`] (`store/`): SQLite or PostgreSQL through sqlx, the same
//!   queries for both; [`Store::verify`] checks the per-node hash chain
//!   ([`chain`] documents the hashed bytes); [`Store::report`] streams
//!   grouped usage, and [`export`] writes it as CSV or JSON lines.
//! - `testing` (cargo feature `testing`): a throwaway PostgreSQL server for
//!   integration tests, and databases at an older schema for upgrade tests.
//!
//! Nothing here knows about HTTP or pingora.

mod access_store;
pub mod chain;
mod conversation_store;
mod counters;
mod error;
pub mod export;
mod pricing;
mod record;
mod report;
mod settings;
mod spool;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod tokens;
mod verify;
mod writer;

pub use access_store::{StoredKey, StoredTenant};
pub use counters::{HistogramSnapshot, LedgerCounters, LedgerStats, WRITE_LATENCY_BUCKETS};
pub use error::LedgerError;
pub use pricing::{
    cost_micros, cost_picos, micros_to_picos, round_picos_to_micros, Cost, Price, PriceBook,
    PriceOverride, PriceTable, UsdPerMillion, PICOS_PER_MICRO,
};
pub use record::{unix_micros_now, EndState, TokenUsage, UsageRecord, UsageSource};
pub use report::{GroupKey, ReportQuery, ReportRow, METRIC_COLUMNS};
pub use settings::{sqlite_url, Backend, LedgerSettings};
pub use store::{Store, StoreOptions};
pub use tokens::{count_tokens, tokenizer_for, Tokenizer};
pub use verify::{ChainBreak, ChainProblem, ChainSummary, VerifyReport};
pub use writer::{Admission, DurableAck, FlushReport, Ledger};
