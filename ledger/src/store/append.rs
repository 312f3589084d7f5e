//! Writing a batch of records as the next links of this node's chain.

use std::collections::HashSet;

use sqlx::any::{Any, AnyArguments};
use sqlx::{Arguments, Row, Transaction};

use super::{Store, ROW_COLUMNS, ROW_COLUMN_COUNT};
use crate::chain::{hash_from_hex, hash_to_hex, Hash, LedgerRow, GENESIS_HASH};
use crate::settings::Backend;
use crate::spool::PendingRecord;
use crate::LedgerError;

/// Rows per INSERT statement: 500 x 26 parameters stays under SQLite's
/// 32,766 and PostgreSQL's 65,535 bind-parameter limits.
const ROWS_PER_INSERT: usize = 500;

/// The last link of a node's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainTip {
    pub(crate) seq: i64,
    pub(crate) hash: Hash,
}

impl ChainTip {
    /// The tip of an empty chain.
    pub(crate) const GENESIS: ChainTip = ChainTip {
        seq: 0,
        hash: GENESIS_HASH,
    };
}

/// What [`Store::append_chained`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The chain's new tip.
    pub(crate) tip: ChainTip,
    /// Records inserted.
    pub(crate) inserted: usize,
    /// Records skipped because their `record_id` was already stored.
    pub(crate) skipped: usize,
}

impl Store {
    /// Appends `records`, in order, to `node_id`'s chain in one transaction.
    ///
    /// `tip` is the chain's last link as the caller last saw it committed;
    /// `None` (after a failed or timed-out write, whose outcome is unknown)
    /// reads it from the table inside the transaction. With
    /// `skip_existing`, records whose `record_id` is already stored are
    /// skipped (spool replay); fresh records from the queue skip that query.
    pub(crate) async fn append_chained(
        &self,
        node_id: &str,
        tip: Option<ChainTip>,
        records: &[PendingRecord],
        skip_existing: bool,
    ) -> Result<Appended, LedgerError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(LedgerError::database("begin"))?;
        let mut tip = match tip {
            Some(tip) => tip,
            None => load_tip(&mut tx, node_id).await?,
        };
        let mut seen = if skip_existing {
            existing_record_ids(&mut tx, self.backend(), records).await?
        } else {
            HashSet::new()
        };
        let mut rows = Vec::with_capacity(records.len());
        for pending in records {
            if !seen.insert(pending.record_id.clone()) {
                continue;
            }
            let row = LedgerRow::new(node_id, tip.seq + 1, &pending.record_id, &pending.record);
            let hash = row.hash(&tip.hash);
            rows.push((row, tip.hash, hash));
            tip = ChainTip {
                seq: tip.seq + 1,
                hash,
            };
        }
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert_rows(&mut tx, self.backend(), chunk).await?;
        }
        tx.commit().await.map_err(LedgerError::database("commit"))?;
        Ok(Appended {
            tip,
            inserted: rows.len(),
            skipped: records.len() - rows.len(),
        })
    }
}

async fn load_tip(tx: &mut Transaction<'_, Any>, node_id: &str) -> Result<ChainTip, LedgerError> {
    let row = sqlx::query(
        "SELECT seq, hash FROM usage_records WHERE node_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(node_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(LedgerError::database("read chain tip"))?;
    let Some(row) = row else {
        return Ok(ChainTip::GENESIS);
    };
    let seq: i64 = row
        .try_get(0)
        .map_err(LedgerError::database("read chain tip"))?;
    let hex: String = row
        .try_get(1)
        .map_err(LedgerError::database("read chain tip"))?;
    let hash = hash_from_hex(&hex).ok_or_else(|| LedgerError::InvalidRow {
        node_id: node_id.to_string(),
        seq,
        message: "hash is not a SHA-256 hex digest".into(),
    })?;
    Ok(ChainTip { seq, hash })
}

/// `n` bind placeholders, comma-separated, numbered from `first`.
///
/// PostgreSQL needs `$1, $2, ...`. SQLite accepts those too, but binds
/// named parameters in time quadratic in their number
/// (`sqlite3_bind_parameter_name` scans a list per parameter; 500 rows x 23
/// columns took ~100 ms), so bulk statements use its anonymous `?`.
fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        match backend {
            Backend::Sqlite => out.push('?'),
            Backend::Postgres => {
                out.push('$');
                out.push_str(&(first + i).to_string());
            }
        }
    }
    out
}

async fn existing_record_ids(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    records: &[PendingRecord],
) -> Result<HashSet<String>, LedgerError> {
    let mut existing = HashSet::new();
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "SELECT record_id FROM usage_records WHERE record_id IN ({})",
            placeholders(backend, 1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for pending in chunk {
            query = query.bind(pending.record_id.as_str());
        }
        for row in query
            .fetch_all(&mut **tx)
            .await
            .map_err(LedgerError::database("look up replayed records"))?
        {
            let id: String = row
                .try_get(0)
                .map_err(LedgerError::database("look up replayed records"))?;
            existing.insert(id);
        }
    }
    Ok(existing)
}

async fn insert_rows(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    rows: &[(LedgerRow, Hash, Hash)],
) -> Result<(), LedgerError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = format!("INSERT INTO usage_records ({ROW_COLUMNS}) VALUES ");
    for r in 0..rows.len() {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(
            backend,
            r * ROW_COLUMN_COUNT + 1,
            ROW_COLUMN_COUNT,
        ));
        sql.push(')');
    }
    // Arguments gathered in place: `Query::bind` moves the whole query by
    // value on every call, 26 times a row, which was most of the writer's
    // own CPU.
    let mut args = AnyArguments::default();
    args.reserve(rows.len() * ROW_COLUMN_COUNT, 0);
    for (row, prev_hash, hash) in rows {
        push(&mut args, row.node_id.as_str())?;
        push(&mut args, row.seq)?;
        push(&mut args, row.record_id.as_str())?;
        push(&mut args, row.time_us)?;
        push(&mut args, row.request_id.as_str())?;
        push(&mut args, row.tenant.as_deref())?;
        push(&mut args, row.key_id.as_deref())?;
        push(&mut args, row.model.as_str())?;
        push(&mut args, row.provider.as_str())?;
        push(&mut args, row.upstream_model.as_str())?;
        push(&mut args, row.prompt_tokens)?;
        push(&mut args, row.completion_tokens)?;
        push(&mut args, row.cached_prompt_tokens)?;
        push(&mut args, row.usage_source.as_str())?;
        push(&mut args, row.cost_micros)?;
        push(&mut args, i64::from(row.priced))?;
        push(&mut args, row.latency_ms)?;
        push(&mut args, row.ttft_ms)?;
        push(&mut args, row.http_status)?;
        push(&mut args, i64::from(row.stream))?;
        push(&mut args, row.end_state.as_str())?;
        push(&mut args, hash_to_hex(prev_hash))?;
        push(&mut args, hash_to_hex(hash))?;
        push(&mut args, row.cost_picos)?;
        push(&mut args, row.hash_version.number())?;
        push(&mut args, row.cache_write_tokens)?;
    }
    sqlx::query_with(&sql, args)
        .execute(&mut **tx)
        .await
        .map_err(LedgerError::database("insert records"))?;
    Ok(())
}

/// Adds one bind value.
fn push<'q, T>(args: &mut AnyArguments<'q>, value: T) -> Result<(), LedgerError>
where
    T: 'q + sqlx::Encode<'q, Any> + sqlx::Type<Any>,
{
    args.add(value)
        .map_err(|e| LedgerError::database("encode a record")(sqlx::Error::Encode(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_backend() {
        assert_eq!(placeholders(Backend::Postgres, 24, 3), "$24, $25, $26");
        assert_eq!(placeholders(Backend::Sqlite, 24, 3), "?, ?, ?");
        assert_eq!(placeholders(Backend::Sqlite, 1, 0), "");
    }
}
