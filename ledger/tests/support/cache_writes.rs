//! Prompt-cache writes end to end: migration `0005` on a database holding
//! version 2 rows, then version 3 rows that count and price cache writes,
//! in reports and in the hash chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use sluice_ledger::chain::HashVersion;
use sluice_ledger::testing::create_schema_up_to;
use sluice_ledger::{
    export, ChainProblem, GroupKey, Ledger, PriceTable, ReportQuery, Store, TokenUsage, UsageRecord,
};
use sqlx::Row;

use super::upgrade::write_old_rows;
use super::{fast_settings, record, rows, DAY, DAY0};

/// 10,000 prompt tokens of `claude-sonnet-4` (6,000 read from the cache,
/// 3,000 written to it) and 700 completion tokens, priced from the embedded
/// table: 1,000 x 3.00 + 6,000 x 0.30 + 3,000 x 3.75 + 700 x 15.00 =
/// 26,550 µ$.
pub fn cache_writing_record(n: usize, time_us: i64) -> UsageRecord {
    let usage = TokenUsage {
        prompt_tokens: 10_000,
        completion_tokens: 700,
        cached_prompt_tokens: 6_000,
        cache_write_tokens: 3_000,
    };
    let cost = PriceTable::embedded()
        .unwrap()
        .cost("claude-sonnet-4", &usage);
    UsageRecord {
        usage,
        provider: "anthropic".into(),
        cost_micros: cost.micros,
        cost_picos: cost.picos,
        priced: cost.priced,
        ..record(n, Some("acme"), "claude-sonnet-4", time_us)
    }
}

/// `(seq, cache_write_tokens, hash_version)` of every row, by seq.
async fn cache_write_columns(store: &Store) -> Vec<(i64, i64, i64)> {
    sqlx::query("SELECT seq, cache_write_tokens, hash_version FROM usage_records ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn first_break(store: &Store) -> Option<(i64, ChainProblem)> {
    let report = store.verify().await.unwrap();
    report.first_break().map(|b| (b.seq, b.problem.clone()))
}

async fn execute(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

/// A database at schema version 3 with five version 2 rows is opened by
/// this release: migration `0005` (with no `0004` in this build: sqlx skips
/// the gap) gives them `cache_write_tokens = 0` and they verify. The chain
/// goes on with version 3 rows that carry cache writes, priced at their own
/// rate; reports and CSV sum them; editing them is caught on every version.
pub async fn scenario_cache_writes_after_v2_rows(url: &str, dir: &Path) {
    create_schema_up_to(url, 3).await.unwrap();
    write_old_rows(url, "node-c", 5, HashVersion::V2).await;

    let store = Store::open(url).await.unwrap();
    let migrated = cache_write_columns(&store).await;
    assert_eq!(
        migrated,
        (1..=5).map(|seq| (seq, 0, 2)).collect::<Vec<_>>(),
        "old rows: no cache writes, still version 2"
    );
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    store.close().await;

    let ledger = Ledger::start(fast_settings(url, &dir.join("spool"), "node-c"))
        .await
        .unwrap();
    for n in 0..3 {
        ledger
            .record(cache_writing_record(100 + n, DAY0 + DAY + n as i64))
            .unwrap();
    }
    ledger.shutdown().await.unwrap();

    let store = Store::open(url).await.unwrap();
    let all = cache_write_columns(&store).await;
    assert_eq!(all[5..], [(6, 3_000, 3), (7, 3_000, 3), (8, 3_000, 3)]);
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.chains[0].last_seq, 8);

    // Reports sum the writes beside the reads; the cost is exact.
    let q = ReportQuery::new(DAY0, DAY0 + 2 * DAY, &[GroupKey::Day]);
    let by_day = rows(&store, &q).await;
    assert_eq!(by_day.len(), 2);
    assert_eq!(by_day[0].cache_write_tokens, 0);
    let day = &by_day[1];
    assert_eq!(
        (
            day.prompt_tokens,
            day.cached_prompt_tokens,
            day.cache_write_tokens
        ),
        (30_000, 18_000, 9_000)
    );
    assert_eq!(day.cost_picos, 3 * 26_550_000_000);
    assert_eq!(day.cost_micros(), 3 * 26_550);
    let mut csv = Vec::new();
    export::write_csv(&q, store.report(&q), &mut csv)
        .await
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(
        csv.lines().nth(2),
        Some("2025-03-05,3,30000,2100,18000,79650,0.079650,0,79650000000,9000"),
        "{csv}"
    );

    // Lowering a version 3 row's cache writes breaks its hash.
    execute(
        &store,
        "UPDATE usage_records SET cache_write_tokens = 0 WHERE seq = 7",
    )
    .await;
    assert_eq!(
        first_break(&store).await,
        Some((7, ChainProblem::ContentMismatch))
    );
    execute(
        &store,
        "UPDATE usage_records SET cache_write_tokens = 3000 WHERE seq = 7",
    )
    .await;
    assert_eq!(first_break(&store).await, None);

    // So does passing it off as a version 2 row, whose hash skips them.
    execute(
        &store,
        "UPDATE usage_records SET hash_version = 2 WHERE seq = 8",
    )
    .await;
    assert_eq!(
        first_break(&store).await,
        Some((8, ChainProblem::ContentMismatch))
    );
    execute(
        &store,
        "UPDATE usage_records SET hash_version = 3 WHERE seq = 8",
    )
    .await;

    // A version 2 row's cache writes are held to the migration's 0.
    execute(
        &store,
        "UPDATE usage_records SET cache_write_tokens = 1 WHERE seq = 2",
    )
    .await;
    let (seq, problem) = first_break(&store)
        .await
        .expect("v2 cache_write_tokens edit not detected");
    assert_eq!(seq, 2);
    assert!(
        matches!(&problem, ChainProblem::InvalidRow { message } if message.contains("cache_write_tokens")),
        "{problem:?}"
    );
    execute(
        &store,
        "UPDATE usage_records SET cache_write_tokens = 0 WHERE seq = 2",
    )
    .await;
    assert_eq!(first_break(&store).await, None);
    store.close().await;
}
