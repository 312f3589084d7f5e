//! The one error type of the ledger crate.

use std::path::PathBuf;
use std::time::Duration;

/// Why a ledger operation failed. [`LedgerError::kind`] gives a short label
/// for metrics; the `Display` text may contain file paths and database
/// messages, so log it but never send it to a client.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The settings do not make sense (empty node id, zero batch size, unknown URL scheme).
    #[error("ledger settings: {field}: {message}")]
    Settings {
        /// The offending field of [`crate::LedgerSettings`].
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A database call failed (connect, query, commit).
    #[error("ledger database: {operation}: {source}")]
    Database {
        /// What the ledger was doing, e.g. `insert batch`.
        operation: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The schema migrations could not be applied.
    #[error("ledger database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A database call took longer than allowed.
    #[error("ledger database: {operation} timed out after {after:?}")]
    Timeout {
        /// What the ledger was doing.
        operation: &'static str,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// A stored row holds a value the ledger never writes (unknown enum text,
    /// negative token count, malformed hash): the row was edited by hand.
    #[error("ledger row {node_id}/{seq}: {message}")]
    InvalidRow {
        /// Node whose chain holds the row.
        node_id: String,
        /// Sequence number of the row in that chain.
        seq: i64,
        /// What is wrong with it.
        message: String,
    },
    /// The spool file or directory could not be read or written. With the
    /// database also unavailable, this is the one case where a record is lost.
    #[error("ledger spool {path}: {source}")]
    Spool {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A pricing table or override is malformed.
    #[error("pricing: {0}")]
    Pricing(String),
    /// Writing a CSV or JSON export failed.
    #[error("ledger export: {0}")]
    Export(String),
    /// The ledger was shut down; the writer no longer runs.
    #[error("ledger is shut down")]
    Closed,
}

impl LedgerError {
    /// A short, fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerError::Settings { .. } => "settings",
            LedgerError::Database { .. } => "database",
            LedgerError::Migrate(_) => "migrate",
            LedgerError::Timeout { .. } => "timeout",
            LedgerError::InvalidRow { .. } => "invalid_row",
            LedgerError::Spool { .. } => "spool",
            LedgerError::Pricing(_) => "pricing",
            LedgerError::Export(_) => "export",
            LedgerError::Closed => "closed",
        }
    }

    pub(crate) fn database(operation: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError {
        move |source| LedgerError::Database { operation, source }
    }

    pub(crate) fn spool(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LedgerError {
        let path = path.into();
        move |source| LedgerError::Spool { path, source }
    }

    pub(crate) fn settings(field: &'static str, message: impl Into<String>) -> LedgerError {
        LedgerError::Settings {
            field,
            message: message.into(),
        }
    }
}
