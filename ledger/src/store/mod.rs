//! The database: connecting, the schema, and reading rows back.
//!
//! One [`Store`] wraps an sqlx `Any` pool, so SQLite and PostgreSQL share
//! every query (written with `$1` placeholders, which both accept, and only
//! `BIGINT`/`TEXT` values). Each backend has its own migration directory
//! under `ledger/migrations/`, compiled in. Writing lives in [`append`],
//! verification in `crate::verify`, reports in `crate::report`.

pub(crate) mod append;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

use crate::chain::{hash_from_hex, Hash, HashVersion, LedgerRow};
use crate::record::{EndState, UsageSource};
use crate::settings::Backend;
use crate::LedgerError;

/// `(version, description, sql)` of each SQLite migration, in order.
///
/// Version 4 (`0004_stored_responses.sql`) comes from another line of work
/// and is not here yet. sqlx does not need versions without gaps: it applies
/// every listed version a database has not recorded, so a database migrated
/// to 5 without 4 still gets 4 once it is listed.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "usage records",
        include_str!("../../migrations/sqlite/0001_usage_records.sql"),
    ),
    (
        2,
        "keys and tenants",
        include_str!("../../migrations/sqlite/0002_access.sql"),
    ),
    (
        3,
        "exact cost in pico-dollars, hash version per row",
        include_str!("../../migrations/sqlite/0003_exact_cost.sql"),
    ),
    (
        4,
        "stored responses",
        include_str!("../../migrations/sqlite/0004_stored_responses.sql"),
    ),
    (
        5,
        "prompt-cache write tokens",
        include_str!("../../migrations/sqlite/0005_cache_writes.sql"),
    ),
];

/// `(version, description, sql)` of each PostgreSQL migration, in order.
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "usage records",
        include_str!("../../migrations/postgres/0001_usage_records.sql"),
    ),
    (
        2,
        "keys and tenants",
        include_str!("../../migrations/postgres/0002_access.sql"),
    ),
    (
        3,
        "exact cost in pico-dollars, hash version per row",
        include_str!("../../migrations/postgres/0003_exact_cost.sql"),
    ),
    (
        4,
        "stored responses",
        include_str!("../../migrations/postgres/0004_stored_responses.sql"),
    ),
    (
        5,
        "prompt-cache write tokens",
        include_str!("../../migrations/postgres/0005_cache_writes.sql"),
    ),
];

/// Every column of `usage_records`, in the order queries select them and
/// [`decode_row`] reads them (those of later migrations last, in migration
/// order).
pub(crate) const ROW_COLUMNS: &str = "node_id, seq, record_id, time_us, request_id, tenant, \
    key_id, model, provider, upstream_model, prompt_tokens, completion_tokens, \
    cached_prompt_tokens, usage_source, cost_micros, priced, latency_ms, ttft_ms, \
    http_status, stream, end_state, prev_hash, hash, cost_picos, hash_version, \
    cache_write_tokens";

/// Number of columns in [`ROW_COLUMNS`].
pub(crate) const ROW_COLUMN_COUNT: usize = 26;

/// Pool settings of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most open connections. Default: 4.
    pub max_connections: u32,
    /// Longest wait for a connection, connecting included. Default: 5 s.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection pool to the ledger database, schema migrated.
///
/// The [`crate::Ledger`] writer opens its own; open another with
/// [`Store::open`] for reports ([`Store::report`]) and checks
/// ([`Store::verify`]). Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (see [`crate::LedgerSettings::database_url`]) with
    /// default [`StoreOptions`], creating the SQLite file if missing, and
    /// runs any pending migrations.
    pub async fn open(url: &str) -> Result<Store, LedgerError> {
        Store::open_with(url, &StoreOptions::default()).await
    }

    /// [`Store::open`] with explicit pool settings.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Store, LedgerError> {
        let store = Store::connect(url, options).await?;
        store.migrate_up_to(i64::MAX).await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Store, LedgerError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let connect = match backend {
            Backend::Sqlite => sqlite_connect_options(url)?,
            Backend::Postgres => AnyConnectOptions::from_str(url).map_err(|_| {
                LedgerError::settings("database_url", "not a valid postgres:// URL")
            })?,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets reports read while the writer writes; with the
                        // default synchronous=FULL every commit is durable.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        // Statement journals in memory, and a page cache that
                        // holds the hot index pages (32 MiB at most): a quarter
                        // less time per batch in `cargo bench -p sluice-ledger`.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        conn.execute("PRAGMA cache_size = -32768").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(LedgerError::database("connect"))?;
        Ok(Store { pool, backend })
    }

    /// Runs the pending migrations numbered up to `version` (every one with
    /// `i64::MAX`; older ones to build a database as an earlier release left
    /// it, in tests).
    pub(crate) async fn migrate_up_to(&self, version: i64) -> Result<(), LedgerError> {
        let all = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        // Versions ascend, so the wanted ones are a prefix.
        let wanted = all.iter().take_while(|(v, _, _)| *v <= version).count();
        Migrator::new(EmbeddedMigrations(&all[..wanted]))
            .await?
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for ad-hoc SQL (admin tools, tests). Writing to
    /// `usage_records` through it breaks the hash chain.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Number of stored records, of one node or of all.
    pub async fn record_count(&self, node_id: Option<&str>) -> Result<i64, LedgerError> {
        let row = match node_id {
            Some(node) => {
                sqlx::query("SELECT COUNT(*) FROM usage_records WHERE node_id = $1")
                    .bind(node)
                    .fetch_one(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT COUNT(*) FROM usage_records")
                    .fetch_one(&self.pool)
                    .await
            }
        }
        .map_err(LedgerError::database("count records"))?;
        row.try_get::<i64, _>(0)
            .map_err(LedgerError::database("count records"))
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Any options for a SQLite URL: the file is created if missing, and a
/// relative path is made absolute first (sqlx would otherwise read
/// `sqlite://Name.db` as a URL host and lower-case it).
fn sqlite_connect_options(url: &str) -> Result<AnyConnectOptions, LedgerError> {
    let parsed = SqliteConnectOptions::from_str(url)
        .map_err(|_| LedgerError::settings("database_url", "not a valid sqlite: URL"))?;
    let path = absolute(parsed.get_filename())?;
    let url = parsed.filename(path).create_if_missing(true).to_url_lossy();
    AnyConnectOptions::from_url(&url)
        .map_err(|_| LedgerError::settings("database_url", "not a valid sqlite: URL"))
}

fn absolute(path: &Path) -> Result<PathBuf, LedgerError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(LedgerError::spool("."))?;
    Ok(cwd.join(path))
}

/// Migrations compiled into the binary (sqlx's `migrate!` macro would need
/// the `macros` feature).
#[derive(Debug)]
struct EmbeddedMigrations(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// A row read back with its stored chain links.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
    pub(crate) row: LedgerRow,
    pub(crate) prev_hash: Hash,
    pub(crate) hash: Hash,
}

/// Reads a row selected with [`ROW_COLUMNS`]. Values the writer never
/// produces (unknown enum text or hash version, flags other than 0/1,
/// malformed hashes) are [`LedgerError::InvalidRow`].
pub(crate) fn decode_row(row: &AnyRow) -> Result<StoredRow, LedgerError> {
    let node_id: String = row.try_get(0).map_err(LedgerError::database("read row"))?;
    let seq: i64 = row.try_get(1).map_err(LedgerError::database("read row"))?;
    let invalid = |message: String| LedgerError::InvalidRow {
        node_id: node_id.clone(),
        seq,
        message,
    };
    let text = |i: usize| -> Result<String, LedgerError> {
        row.try_get(i)
            .map_err(|e| invalid(format!("column {i}: {e}")))
    };
    let opt_text = |i: usize| -> Result<Option<String>, LedgerError> {
        row.try_get(i)
            .map_err(|e| invalid(format!("column {i}: {e}")))
    };
    let int = |i: usize| -> Result<i64, LedgerError> {
        row.try_get(i)
            .map_err(|e| invalid(format!("column {i}: {e}")))
    };
    let flag = |i: usize| -> Result<bool, LedgerError> {
        match int(i)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(format!("column {i}: flag {other} is not 0 or 1"))),
        }
    };
    let hash = |i: usize| -> Result<Hash, LedgerError> {
        hash_from_hex(&text(i)?)
            .ok_or_else(|| invalid(format!("column {i}: not a SHA-256 hex digest")))
    };
    let usage_source = text(13)?;
    let end_state = text(20)?;
    let hash_version = int(24)?;
    let ttft_ms: Option<i64> = row
        .try_get(17)
        .map_err(|e| invalid(format!("column 17: {e}")))?;
    let stored = StoredRow {
        row: LedgerRow {
            node_id: node_id.clone(),
            seq,
            record_id: text(2)?,
            time_us: int(3)?,
            request_id: text(4)?,
            tenant: opt_text(5)?,
            key_id: opt_text(6)?,
            model: text(7)?,
            provider: text(8)?,
            upstream_model: text(9)?,
            prompt_tokens: int(10)?,
            completion_tokens: int(11)?,
            cached_prompt_tokens: int(12)?,
            cache_write_tokens: int(25)?,
            usage_source: UsageSource::parse(&usage_source)
                .ok_or_else(|| invalid(format!("unknown usage_source {usage_source:?}")))?,
            cost_micros: int(14)?,
            cost_picos: int(23)?,
            priced: flag(15)?,
            latency_ms: int(16)?,
            ttft_ms,
            http_status: int(18)?,
            stream: flag(19)?,
            end_state: EndState::parse(&end_state)
                .ok_or_else(|| invalid(format!("unknown end_state {end_state:?}")))?,
            hash_version: HashVersion::from_number(hash_version)
                .ok_or_else(|| invalid(format!("unknown hash_version {hash_version}")))?,
        },
        prev_hash: hash(21)?,
        hash: hash(22)?,
    };
    Ok(stored)
}
