//! Opening a ledger written by an earlier release: migration `0003` on a
//! database holding rows chained with the version 1 encoding, and migration
//! `0005` on one holding version 2 rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use sluice_ledger::chain::{hash_to_hex, HashVersion, LedgerRow, GENESIS_HASH};
use sluice_ledger::testing::create_schema_up_to;
use sluice_ledger::{ChainProblem, GroupKey, Ledger, ReportQuery, Store};
use sqlx::Row;

use super::{fast_settings, record, rows, small_record, DAY, DAY0};

/// Inserts `count` chained rows into `node_id`'s chain as sluice wrote them
/// before migration `0003`: the 23 columns of the old schema, each row
/// hashed with encoding version 1. Returns their `cost_micros`.
async fn write_v1_rows(url: &str, node_id: &str, count: usize) -> Vec<i64> {
    write_old_rows(url, node_id, count, HashVersion::V1).await
}

/// Inserts `count` chained rows into `node_id`'s chain as sluice wrote them
/// with encoding `version`: version 1 before migration `0003` (23 columns),
/// version 2 before migration `0005` (25: `cost_picos` and `hash_version`
/// added). Returns their `cost_micros`.
pub(super) async fn write_old_rows(
    url: &str,
    node_id: &str,
    count: usize,
    version: HashVersion,
) -> Vec<i64> {
    let with_picos = match version {
        HashVersion::V1 => false,
        HashVersion::V2 => true,
        HashVersion::V3 => panic!("version 3 rows are written by the ledger itself"),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut prev = GENESIS_HASH;
    let mut costs = Vec::new();
    for n in 0..count {
        let seq = n as i64 + 1;
        let old = record(n, Some("acme"), "gpt-4o", DAY0 + n as i64);
        let row = LedgerRow {
            hash_version: version,
            ..LedgerRow::new(node_id, seq, &format!("old-{n}"), &old)
        };
        let hash = row.hash(&prev);
        let sql = if with_picos {
            "INSERT INTO usage_records (node_id, seq, record_id, time_us, request_id, tenant, \
             key_id, model, provider, upstream_model, prompt_tokens, completion_tokens, \
             cached_prompt_tokens, usage_source, cost_micros, priced, latency_ms, ttft_ms, \
             http_status, stream, end_state, prev_hash, hash, cost_picos, hash_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $23, $24, $25)"
        } else {
            "INSERT INTO usage_records (node_id, seq, record_id, time_us, request_id, tenant, \
             key_id, model, provider, upstream_model, prompt_tokens, completion_tokens, \
             cached_prompt_tokens, usage_source, cost_micros, priced, latency_ms, ttft_ms, \
             http_status, stream, end_state, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)"
        };
        let mut query = sqlx::query(sql)
            .bind(row.node_id.as_str())
            .bind(row.seq)
            .bind(row.record_id.as_str())
            .bind(row.time_us)
            .bind(row.request_id.as_str())
            .bind(row.tenant.as_deref())
            .bind(row.key_id.as_deref())
            .bind(row.model.as_str())
            .bind(row.provider.as_str())
            .bind(row.upstream_model.as_str())
            .bind(row.prompt_tokens)
            .bind(row.completion_tokens)
            .bind(row.cached_prompt_tokens)
            .bind(row.usage_source.as_str())
            .bind(row.cost_micros)
            .bind(i64::from(row.priced))
            .bind(row.latency_ms)
            .bind(row.ttft_ms)
            .bind(row.http_status)
            .bind(i64::from(row.stream))
            .bind(row.end_state.as_str())
            .bind(hash_to_hex(&prev))
            .bind(hash_to_hex(&hash));
        if with_picos {
            query = query.bind(row.cost_picos).bind(version.number());
        }
        query.execute(&pool).await.unwrap();
        prev = hash;
        costs.push(row.cost_micros);
    }
    pool.close().await;
    costs
}

/// `(seq, cost_micros, cost_picos, hash_version)` of every row, by seq.
async fn cost_columns(store: &Store) -> Vec<(i64, i64, i64, i64)> {
    sqlx::query("SELECT seq, cost_micros, cost_picos, hash_version FROM usage_records ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn first_break(store: &Store) -> Option<(i64, ChainProblem)> {
    let report = store.verify().await.unwrap();
    report.first_break().map(|b| (b.seq, b.problem.clone()))
}

async fn execute(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

/// A database at schema version 2 with ten version 1 rows is opened by this
/// release: migrated and backfilled, it verifies; the node's chain goes on
/// with current (version 3) rows; edits to `cost_picos` are caught on both
/// versions.
pub async fn scenario_upgrade_from_v1_rows(url: &str, dir: &Path) {
    create_schema_up_to(url, 2).await.unwrap();
    let old_costs = write_v1_rows(url, "node-u", 10).await;

    let store = Store::open(url).await.unwrap();
    let migrated = cost_columns(&store).await;
    let expected: Vec<_> = old_costs
        .iter()
        .enumerate()
        .map(|(i, &micros)| (i as i64 + 1, micros, micros * 1_000_000, 1))
        .collect();
    assert_eq!(migrated, expected, "backfilled, marked version 1");
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    store.close().await;

    // The node carries on where its chain ends, now with version 3 rows.
    let ledger = Ledger::start(fast_settings(url, &dir.join("spool"), "node-u"))
        .await
        .unwrap();
    for n in 0..5 {
        ledger
            .record(small_record(100 + n, DAY0 + DAY + n as i64))
            .unwrap();
    }
    ledger.shutdown().await.unwrap();
    let store = Store::open(url).await.unwrap();
    let all = cost_columns(&store).await;
    assert_eq!(all.len(), 15);
    assert!(all[10..]
        .iter()
        .all(|&(_, micros, picos, version)| (micros, picos, version) == (10, 10_140_000, 3)));
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.chains[0].last_seq, 15);

    // Old and new rows add up exactly.
    let old_picos: i128 = old_costs.iter().map(|&m| i128::from(m) * 1_000_000).sum();
    let q = ReportQuery::new(DAY0, DAY0 + 2 * DAY, &[GroupKey::Day]);
    let by_day: Vec<i128> = rows(&store, &q)
        .await
        .iter()
        .map(|r| r.cost_picos)
        .collect();
    assert_eq!(by_day, [old_picos, 5 * 10_140_000]);

    // Lowering a version 3 row's exact cost breaks its hash.
    execute(
        &store,
        "UPDATE usage_records SET cost_picos = cost_picos - 1 WHERE seq = 12",
    )
    .await;
    assert_eq!(
        first_break(&store).await,
        Some((12, ChainProblem::ContentMismatch))
    );
    execute(
        &store,
        "UPDATE usage_records SET cost_picos = cost_picos + 1 WHERE seq = 12",
    )
    .await;
    assert_eq!(first_break(&store).await, None);

    // So does passing it off as a version 1 row, whose hash skips cost_picos.
    execute(
        &store,
        "UPDATE usage_records SET hash_version = 1 WHERE seq = 13",
    )
    .await;
    assert_eq!(
        first_break(&store).await,
        Some((13, ChainProblem::ContentMismatch))
    );
    execute(
        &store,
        "UPDATE usage_records SET hash_version = 3 WHERE seq = 13",
    )
    .await;

    // A version 1 row's cost_picos is held to what the migration derived.
    execute(
        &store,
        "UPDATE usage_records SET cost_picos = cost_picos - 1 WHERE seq = 4",
    )
    .await;
    let (seq, problem) = first_break(&store)
        .await
        .expect("v1 cost_picos edit not detected");
    assert_eq!(seq, 4);
    assert!(
        matches!(&problem, ChainProblem::InvalidRow { message } if message.contains("cost_picos")),
        "{problem:?}"
    );
    execute(
        &store,
        "UPDATE usage_records SET cost_picos = cost_picos + 1 WHERE seq = 4",
    )
    .await;

    // A hash version this build does not know is reported, not guessed.
    execute(
        &store,
        "UPDATE usage_records SET hash_version = 4 WHERE seq = 15",
    )
    .await;
    let (seq, problem) = first_break(&store).await.unwrap();
    assert_eq!(seq, 15);
    assert!(
        matches!(problem, ChainProblem::InvalidRow { .. }),
        "{problem:?}"
    );
    store.close().await;
}
