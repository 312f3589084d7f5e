//! How the ledger runs: where it stores, how it batches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LedgerError;

/// Settings of a [`crate::Ledger`]. Plain data with defaults; the config
/// crate maps its `ledger:` section onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Where records are stored: `sqlite://PATH` / `sqlite:PATH` (the file is
    /// created on first use; a relative path is taken from the working
    /// directory) or `postgres://user:pass@host/db` (`postgresql://` too;
    /// `?sslmode=require` for TLS). Default: `sqlite:sluice-ledger.db`.
    pub database_url: String,
    /// Directory of the spool: records that could not reach the database wait
    /// here as JSON lines until they can. Created if missing. Must be on a
    /// local disk and private to this node. Default: `sluice-ledger-spool`.
    pub spool_dir: PathBuf,
    /// Names this node's hash chain. Every gateway node sharing one PostgreSQL
    /// database needs its own, stable across restarts. 1-64 characters.
    /// Default: `local`.
    pub node_id: String,
    /// Records held in memory between the request path and the writer; when
    /// full, records go straight to the spool. Default: 10,000.
    pub queue_capacity: usize,
    /// Most records written in one database transaction. Default: 256.
    pub batch_size: usize,
    /// Longest a record waits in memory for its batch to fill. Default: 200 ms.
    pub flush_interval: Duration,
    /// Longest one database write may take before the batch is spooled and
    /// the database treated as down. Default: 5 s.
    pub write_timeout: Duration,
    /// How often a down database is retried and the spool replayed.
    /// Default: 1 s.
    pub retry_interval: Duration,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            database_url: "sqlite:sluice-ledger.db".to_string(),
            spool_dir: PathBuf::from("sluice-ledger-spool"),
            node_id: "local".to_string(),
            queue_capacity: 10_000,
            batch_size: 256,
            flush_interval: Duration::from_millis(200),
            write_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
        }
    }
}

impl LedgerSettings {
    /// Defaults, with the SQLite file (`ledger.db`) and the spool (`spool/`)
    /// inside `dir`: the usual choice for a single node (`--data-dir`).
    pub fn in_dir(dir: &Path) -> LedgerSettings {
        LedgerSettings {
            database_url: sqlite_url(&dir.join("ledger.db")),
            spool_dir: dir.join("spool"),
            ..LedgerSettings::default()
        }
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), LedgerError> {
        Backend::from_url(&self.database_url)?;
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return Err(LedgerError::settings(
                "node_id",
                "must be 1 to 64 characters",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(LedgerError::settings(
                "queue_capacity",
                "must be at least 1",
            ));
        }
        if self.batch_size == 0 {
            return Err(LedgerError::settings("batch_size", "must be at least 1"));
        }
        for (field, value) in [
            ("flush_interval", self.flush_interval),
            ("write_timeout", self.write_timeout),
            ("retry_interval", self.retry_interval),
        ] {
            if value.is_zero() {
                return Err(LedgerError::settings(field, "must be more than zero"));
            }
        }
        Ok(())
    }
}

/// A `sqlite:` URL for a file path.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend of `url`, from its scheme.
    pub fn from_url(url: &str) -> Result<Backend, LedgerError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(LedgerError::settings(
                "database_url",
                "must start with sqlite: (a file) or postgres:// (a server)",
            ))
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LedgerSettings::default().validate().unwrap();
        let in_dir = LedgerSettings::in_dir(Path::new("/var/lib/sluice"));
        assert_eq!(in_dir.database_url, "sqlite:/var/lib/sluice/ledger.db");
        assert_eq!(in_dir.spool_dir, Path::new("/var/lib/sluice/spool"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(&str, LedgerSettings)> = vec![
            (
                "database_url",
                LedgerSettings {
                    database_url: "mysql://x".into(),
                    ..Default::default()
                },
            ),
            (
                "node_id",
                LedgerSettings {
                    node_id: String::new(),
                    ..Default::default()
                },
            ),
            (
                "batch_size",
                LedgerSettings {
                    batch_size: 0,
                    ..Default::default()
                },
            ),
            (
                "queue_capacity",
                LedgerSettings {
                    queue_capacity: 0,
                    ..Default::default()
                },
            ),
            (
                "retry_interval",
                LedgerSettings {
                    retry_interval: Duration::ZERO,
                    ..Default::default()
                },
            ),
        ];
        for (field, settings) in cases {
            match settings.validate() {
                Err(LedgerError::Settings { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn backends_by_scheme() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::from_url("sqlite:x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::from_url("x.db").is_err());
    }
}
