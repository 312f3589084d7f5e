//! Helpers and backend-independent scenarios shared by `sqlite.rs` and
//! `postgres.rs`. Each scenario takes a database URL and a scratch directory.

#![allow(dead_code)]
// each test binary uses a different subset
// Test helpers: a failed assumption must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use sluice_ledger::{
    export, round_picos_to_micros, ChainProblem, EndState, GroupKey, Ledger, LedgerSettings,
    PriceTable, ReportQuery, ReportRow, Store, TokenUsage, UsageRecord, UsageSource,
};
use sqlx::Row;

mod cache_writes;
mod conversations;
mod upgrade;
pub use cache_writes::scenario_cache_writes_after_v2_rows;
pub use conversations::scenario_stored_conversations;
pub use upgrade::scenario_upgrade_from_v1_rows;

/// 2025-03-04T00:00:00Z in unix micros.
pub const DAY0: i64 = 1_741_046_400_000_000;
pub const HOUR: i64 = 3_600_000_000;
pub const DAY: i64 = 24 * HOUR;

/// Settings for tests: small batches and short timers so faults show quickly.
pub fn fast_settings(url: &str, spool_dir: &Path, node_id: &str) -> LedgerSettings {
    LedgerSettings {
        database_url: url.to_string(),
        spool_dir: spool_dir.to_path_buf(),
        node_id: node_id.to_string(),
        queue_capacity: 256,
        batch_size: 16,
        flush_interval: Duration::from_millis(10),
        write_timeout: Duration::from_millis(1500),
        retry_interval: Duration::from_millis(100),
    }
}

/// A priced gpt-4o record with distinct request id `n`.
pub fn record(n: usize, tenant: Option<&str>, model: &str, time_us: i64) -> UsageRecord {
    let usage = TokenUsage {
        prompt_tokens: 100 + n as u64,
        completion_tokens: 50,
        cached_prompt_tokens: 0,
        cache_write_tokens: 0,
    };
    let cost = PriceTable::embedded().unwrap().cost(model, &usage);
    UsageRecord {
        time_us,
        request_id: format!("req-{n}"),
        tenant: tenant.map(String::from),
        key_id: tenant.map(|t| format!("key-{t}")),
        model: model.to_string(),
        provider: "openai".into(),
        upstream_model: model.to_string(),
        usage,
        usage_source: UsageSource::Reported,
        cost_micros: cost.micros,
        cost_picos: cost.picos,
        priced: cost.priced,
        latency_ms: 120,
        ttft_ms: Some(30),
        http_status: 200,
        stream: n.is_multiple_of(2),
        end_state: EndState::Completed,
    }
}

/// Polls `check` every 50 ms until it returns true, panicking after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flushes until the spool is empty and the database up.
pub async fn drain(ledger: &Ledger) {
    wait_until(Duration::from_secs(30), "the spool to drain", || async {
        let report = ledger.flush().await.unwrap();
        report.database_up && report.spool_pending_records == 0
    })
    .await;
}

/// `(rows, distinct request ids, distinct record ids)` in the table.
pub async fn counts(store: &Store) -> (i64, i64, i64) {
    let row = sqlx::query(
        "SELECT COUNT(*), COUNT(DISTINCT request_id), COUNT(DISTINCT record_id) FROM usage_records",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Records 100 records through the ledger, restarts it, records 10 more
/// and a second node adds its own: everything stored once, both chains verify.
pub async fn scenario_write_restart_verify(url: &str, dir: &Path) {
    let settings = fast_settings(url, &dir.join("spool-a"), "node-a");
    let ledger = Ledger::start(settings.clone()).await.unwrap();
    for n in 0..100 {
        ledger
            .record(record(n, Some("acme"), "gpt-4o", DAY0 + n as i64))
            .unwrap();
    }
    let flushed = ledger.flush().await.unwrap();
    assert!(flushed.database_up);
    assert_eq!(flushed.spool_pending_records, 0);
    let stats = ledger.stats();
    assert_eq!(stats.records_written, 100);
    assert_eq!(stats.records_spooled, 0);
    assert!(stats.write_latency.count >= 100 / 16);
    ledger.shutdown().await.unwrap();

    // A restarted node continues its chain where the table says it ends.
    let ledger = Ledger::start(settings).await.unwrap();
    for n in 100..110 {
        ledger
            .record(record(n, Some("acme"), "gpt-4o", DAY0 + n as i64))
            .unwrap();
    }
    ledger.shutdown().await.unwrap();
    // Another node sharing the database keeps a chain of its own.
    let other = Ledger::start(fast_settings(url, &dir.join("spool-b"), "node-b"))
        .await
        .unwrap();
    for n in 110..115 {
        let mut r = record(n, None, "claude-3-haiku", DAY0);
        // A NUL from a client's JSON must not make the batch unwritable.
        r.request_id = format!("req-\0{n}");
        other.record(r).unwrap();
    }
    other.shutdown().await.unwrap();

    let store = Store::open(url).await.unwrap();
    assert_eq!(counts(&store).await, (115, 115, 115));
    assert_eq!(store.record_count(Some("node-a")).await.unwrap(), 110);
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    let chains: Vec<_> = report
        .chains
        .iter()
        .map(|c| (c.node_id.as_str(), c.records, c.last_seq))
        .collect();
    assert_eq!(chains, [("node-a", 110, 110), ("node-b", 5, 5)]);
    store.close().await;
}

/// Edits one row, then deletes another: verify names the row and the problem.
pub async fn scenario_tamper_is_detected(url: &str, dir: &Path) {
    let ledger = Ledger::start(fast_settings(url, &dir.join("spool"), "node-t"))
        .await
        .unwrap();
    for n in 0..20 {
        ledger
            .record(record(n, Some("acme"), "gpt-4o", DAY0 + n as i64))
            .unwrap();
    }
    ledger.shutdown().await.unwrap();
    let store = Store::open(url).await.unwrap();
    assert!(store.verify().await.unwrap().is_intact());

    // Someone lowers a bill.
    sqlx::query("UPDATE usage_records SET cost_micros = cost_micros - 1 WHERE node_id = 'node-t' AND seq = 7")
        .execute(store.pool())
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    let broken = report.first_break().expect("edit not detected");
    assert_eq!((broken.node_id.as_str(), broken.seq), ("node-t", 7));
    assert_eq!(broken.problem, ChainProblem::ContentMismatch);
    assert!(
        broken.to_string().contains("seq 7 was modified"),
        "{broken}"
    );
    assert_eq!(report.chains[0].records, 20, "verify reads on past a break");

    // Undo it; now someone deletes a record instead.
    sqlx::query("UPDATE usage_records SET cost_micros = cost_micros + 1 WHERE node_id = 'node-t' AND seq = 7")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.verify().await.unwrap().is_intact());
    sqlx::query("DELETE FROM usage_records WHERE node_id = 'node-t' AND seq = 12")
        .execute(store.pool())
        .await
        .unwrap();
    let broken = store
        .verify()
        .await
        .unwrap()
        .first_break()
        .cloned()
        .expect("gap not detected");
    assert_eq!(broken.seq, 13);
    assert_eq!(broken.problem, ChainProblem::Gap { expected_seq: 12 });

    // A value the writer never writes is reported, not a crash.
    sqlx::query(
        "UPDATE usage_records SET end_state = 'exploded' WHERE node_id = 'node-t' AND seq = 3",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let broken = store
        .verify()
        .await
        .unwrap()
        .first_break()
        .cloned()
        .unwrap();
    assert_eq!(broken.seq, 3);
    assert!(
        matches!(broken.problem, ChainProblem::InvalidRow { .. }),
        "{broken:?}"
    );
    store.close().await;
}

async fn rows(store: &Store, query: &ReportQuery) -> Vec<ReportRow> {
    store.report(query).try_collect().await.unwrap()
}

/// `(group values, requests, cost in pico-dollars, unpriced requests)` per row.
fn summary(rows: &[ReportRow]) -> Vec<(Vec<Option<String>>, i64, i128, i64)> {
    rows.iter()
        .map(|r| {
            (
                r.group.iter().map(|(_, v)| v.clone()).collect(),
                r.requests,
                r.cost_picos,
                r.unpriced_requests,
            )
        })
        .collect()
}

fn strings(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(String::from)).collect()
}

/// Known records over two days, three tenants (one NULL) and an unpriced
/// model; grouped queries, the tenant filter, range edges and CSV.
pub async fn scenario_reports(url: &str, dir: &Path) {
    let ledger = Ledger::start(fast_settings(url, &dir.join("spool"), "node-r"))
        .await
        .unwrap();
    let mut records = vec![
        // (tenant, model, time)
        record(0, Some("acme"), "gpt-4o", DAY0), // day 0, hour 0, first instant in range
        record(1, Some("acme"), "gpt-4o", DAY0 + HOUR + 5), // day 0, hour 1
        record(2, Some("acme"), "gpt-4o-mini", DAY0 + DAY + 1), // day 1
        record(3, Some("beta, \"inc\""), "gpt-4o", DAY0 + 2 * HOUR), // day 0, quoting-worthy tenant
        record(4, None, "my-local-model", DAY0 + DAY + HOUR), // day 1, unpriced, no tenant
        record(5, Some("acme"), "gpt-4o", DAY0 + 2 * DAY), // == to: excluded
        record(6, Some("acme"), "gpt-4o", DAY0 - 1), // < from: excluded
    ];
    for r in records.drain(..) {
        ledger.record(r).unwrap();
    }
    ledger.shutdown().await.unwrap();
    let store = Store::open(url).await.unwrap();
    let (from, to) = (DAY0, DAY0 + 2 * DAY);
    // Exact pico-dollars: gpt-4o at 2.50/10.00 per million tokens is
    // 2,500,000/10,000,000 pico-dollars per token; gpt-4o-mini at 0.15/0.60.
    let c = |n: i128| (100 + n) * 2_500_000 + 50 * 10_000_000;
    let mini = |n: i128| (100 + n) * 150_000 + 50 * 600_000;

    // Tenant x model, NULL tenant last.
    let q = ReportQuery::new(from, to, &[GroupKey::Model, GroupKey::Tenant]);
    assert_eq!(
        summary(&rows(&store, &q).await),
        [
            (strings(&[Some("acme"), Some("gpt-4o")]), 2, c(0) + c(1), 0),
            (strings(&[Some("acme"), Some("gpt-4o-mini")]), 1, mini(2), 0),
            (
                strings(&[Some("beta, \"inc\""), Some("gpt-4o")]),
                1,
                c(3),
                0
            ),
            (strings(&[None, Some("my-local-model")]), 1, 0, 1),
        ]
    );

    // By day.
    let q = ReportQuery::new(from, to, &[GroupKey::Day]);
    assert_eq!(
        summary(&rows(&store, &q).await),
        [
            (strings(&[Some("2025-03-04")]), 3, c(0) + c(1) + c(3), 0),
            (strings(&[Some("2025-03-05")]), 2, mini(2), 1),
        ]
    );

    // By hour, restricted to one tenant; tokens summed.
    let q = ReportQuery::new(from, to, &[GroupKey::Hour]).for_tenant("acme");
    let by_hour = rows(&store, &q).await;
    assert_eq!(
        by_hour
            .iter()
            .map(|r| (r.group[0].1.clone().unwrap(), r.requests, r.prompt_tokens))
            .collect::<Vec<_>>(),
        [
            ("2025-03-04T00:00:00Z".to_string(), 1, 100),
            ("2025-03-04T01:00:00Z".to_string(), 1, 101),
            ("2025-03-05T00:00:00Z".to_string(), 1, 102),
        ]
    );

    // Key and provider columns; a tenant filter that matches nothing.
    let q = ReportQuery::new(from, to, &[GroupKey::Provider, GroupKey::Key]);
    let keyed = rows(&store, &q).await;
    assert_eq!(keyed.len(), 3);
    assert_eq!(keyed[0].value(GroupKey::Key), Some(Some("key-acme")));
    assert_eq!(keyed[0].value(GroupKey::Provider), Some(Some("openai")));
    let q = ReportQuery::new(from, to, &[GroupKey::Model]).for_tenant("nobody");
    assert!(rows(&store, &q).await.is_empty());

    // No grouping: one total row, even for an empty range. Its micro-dollars
    // are the exact total rounded once (2305.3 µ$), not the sum of the
    // records' rounded costs (750 + 753 + 758 + 45 = 2306 µ$).
    let total = rows(&store, &ReportQuery::new(from, to, &[])).await;
    assert_eq!(
        summary(&total),
        [(vec![], 5, c(0) + c(1) + c(3) + mini(2), 1)]
    );
    assert_eq!(total[0].cost_micros(), 2305);
    assert_eq!(total[0].cost_usd(), "0.0023053");
    let empty = rows(&store, &ReportQuery::new(0, 1, &[])).await;
    assert_eq!(summary(&empty), [(vec![], 0, 0, 0)]);

    // CSV, streamed straight from the database.
    let q = ReportQuery::new(from, to, &[GroupKey::Tenant, GroupKey::Day]);
    let mut csv = Vec::new();
    let written = export::write_csv(&q, store.report(&q), &mut csv)
        .await
        .unwrap();
    assert_eq!(written, 4);
    let cost = |picos: i128| {
        format!(
            "{},{},0,{picos}",
            round_picos_to_micros(picos),
            export::format_usd_picos(picos)
        )
    };
    let expected = format!(
        "tenant,day,requests,prompt_tokens,completion_tokens,cached_prompt_tokens,cost_micros,cost_usd,unpriced_requests,cost_picos,cache_write_tokens\n\
         acme,2025-03-04,2,201,100,0,{a},0\n\
         acme,2025-03-05,1,102,50,0,{m},0\n\
         \"beta, \"\"inc\"\"\",2025-03-04,1,103,50,0,{b},0\n\
         ,2025-03-05,1,104,50,0,0,0.000000,1,0,0\n",
        a = cost(c(0) + c(1)),
        m = cost(mini(2)),
        b = cost(c(3)),
    );
    // 750 + 752.5 µ$, and 45.3 µ$: exact, not rounded per record.
    assert!(
        expected.contains(",1503,0.0015025,0,1502500000,0\n"),
        "{expected}"
    );
    assert!(
        expected.contains(",45,0.0000453,0,45300000,0\n"),
        "{expected}"
    );
    assert_eq!(String::from_utf8(csv).unwrap(), expected);

    // The owned variant streams the same rows through a channel.
    let mut rx = store.spawn_report(q.clone(), 2);
    let mut via_channel = Vec::new();
    while let Some(row) = rx.recv().await {
        via_channel.push(row.unwrap());
    }
    assert_eq!(via_channel, rows(&store, &q).await);

    // JSON lines.
    let mut json = Vec::new();
    export::write_json_lines(store.report(&q), &mut json)
        .await
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(json).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["requests"], 2);
    assert_eq!(first["cost_micros"], 1503);
    assert_eq!(first["cost_usd"], "0.0015025");
    assert_eq!(first["cost_picos"], "1502500000");
    store.close().await;
}

/// A record of 26 prompt tokens at $0.39 per million: 10.14 µ$, which a
/// per-record rounding books as 10 µ$.
pub fn small_record(n: usize, time_us: i64) -> UsageRecord {
    let prices =
        PriceTable::from_yaml("models:\n  penny-model: {input: \"0.39\", output: \"0.39\"}\n")
            .unwrap();
    let usage = TokenUsage {
        prompt_tokens: 26,
        completion_tokens: 0,
        cached_prompt_tokens: 0,
        cache_write_tokens: 0,
    };
    let cost = prices.cost("penny-model", &usage);
    UsageRecord {
        usage,
        cost_micros: cost.micros,
        cost_picos: cost.picos,
        priced: cost.priced,
        ..record(n, Some("acme"), "penny-model", time_us)
    }
}

/// 1000 small requests whose per-record costs round down: the report's
/// total is the exact sum of tokens x price (in pico-dollars), and its
/// micro-dollars that sum rounded once; per day, per tenant, in CSV. Then
/// three near-maximal records whose pico-dollars pass `i64` together: the
/// sums do not overflow in SQL.
pub async fn scenario_exact_totals(url: &str, dir: &Path) {
    const RECORDS: usize = 1000;
    let ledger = Ledger::start(fast_settings(url, &dir.join("spool"), "node-x"))
        .await
        .unwrap();
    for n in 0..RECORDS {
        ledger.record(small_record(n, DAY0 + n as i64)).unwrap();
    }
    // Each about $9.2M: three of them pass i64::MAX pico-dollars.
    let whale_picos = i64::MAX - 7;
    for n in 0..3 {
        let mut whale = small_record(RECORDS + n, DAY0 + DAY + n as i64);
        whale.cost_picos = whale_picos;
        whale.cost_micros = round_picos_to_micros(whale_picos.into());
        ledger.record(whale).unwrap();
    }
    ledger.shutdown().await.unwrap();
    let store = Store::open(url).await.unwrap();
    assert!(store.verify().await.unwrap().is_intact());

    // 26 tokens x 390,000 pico-dollars per token, 1000 times: 10,140 µ$,
    // where the records' own rounded costs add up to 10,000 µ$.
    let exact: i128 = 26 * 390_000 * RECORDS as i128;
    let rounded_each: i64 = RECORDS as i64 * small_record(0, DAY0).cost_micros;
    assert_eq!(rounded_each, 10_000, "the drift this guards against");
    let total = rows(&store, &ReportQuery::new(DAY0, DAY0 + DAY, &[])).await;
    assert_eq!(total[0].requests, RECORDS as i64);
    assert_eq!(total[0].cost_picos, exact);
    assert_eq!(
        total[0].cost_micros(),
        10_140,
        "1000 x 10.14 µ$, rounded once"
    );
    assert_eq!(total[0].cost_usd(), "0.010140");
    let q = ReportQuery::new(DAY0, DAY0 + DAY, &[GroupKey::Tenant, GroupKey::Day]);
    assert_eq!(
        summary(&rows(&store, &q).await),
        [(strings(&[Some("acme"), Some("2025-03-04")]), 1000, exact, 0)]
    );
    let mut csv = Vec::new();
    export::write_csv(&q, store.report(&q), &mut csv)
        .await
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(
        csv.lines().nth(1),
        Some("acme,2025-03-04,1000,26000,0,0,10140,0.010140,0,10140000000,0"),
        "{csv}"
    );

    // Sums past i64 pico-dollars, the whole range, and per day.
    let whales = 3 * i128::from(whale_picos);
    let whole = rows(&store, &ReportQuery::new(DAY0, DAY0 + 2 * DAY, &[])).await;
    assert_eq!(whole[0].cost_picos, exact + whales);
    assert_eq!(
        whole[0].cost_micros(),
        round_picos_to_micros(exact + whales)
    );
    let by_day = rows(
        &store,
        &ReportQuery::new(DAY0, DAY0 + 2 * DAY, &[GroupKey::Day]),
    )
    .await;
    assert_eq!(by_day[1].cost_picos, whales);
    assert_eq!(by_day[1].cost_usd(), "27670116.1105643274");
    store.close().await;
}
