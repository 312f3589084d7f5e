//! Records per second the ledger writer sustains into SQLite (and into
//! PostgreSQL when server binaries are installed and this runs as a real
//! bench), against the naive baseline of one autocommitted INSERT per record.
//!
//! Each iteration hands N records to `Ledger::record` and waits for
//! `Ledger::flush`, so the time covers queueing, batching, hashing the chain
//! and committing. Under `cargo test --benches` (criterion's test mode) each
//! case runs once on a handful of records and PostgreSQL is skipped.

#![allow(missing_docs)] // criterion_group! generates undocumented functions.
#![allow(clippy::panic, clippy::print_stderr)] // a bench that fails must say so loudly

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_ledger::testing::PostgresServer;
use sluice_ledger::{
    sqlite_url, EndState, Ledger, LedgerSettings, Store, TokenUsage, UsageRecord, UsageSource,
};

fn real_bench() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn record(n: u64) -> UsageRecord {
    UsageRecord {
        time_us: 1_741_046_400_000_000 + n as i64,
        request_id: format!("req-{n}"),
        tenant: Some("acme".into()),
        key_id: Some("key-1".into()),
        model: "gpt-4o".into(),
        provider: "openai".into(),
        upstream_model: "gpt-4o-2024-08-06".into(),
        usage: TokenUsage {
            prompt_tokens: 1200,
            completion_tokens: 300,
            cached_prompt_tokens: 0,
            cache_write_tokens: 0,
        },
        usage_source: UsageSource::Reported,
        cost_micros: 6000,
        cost_picos: 6_000_000_000,
        priced: true,
        latency_ms: 850,
        ttft_ms: Some(120),
        http_status: 200,
        stream: true,
        end_state: EndState::Completed,
    }
}

/// One autocommitted INSERT per record: what a ledger without a writer
/// task would do on every request.
async fn naive_insert(store: &Store, seq: i64, r: &UsageRecord) {
    sqlx::query(
        "INSERT INTO usage_records (node_id, seq, record_id, time_us, request_id, tenant, key_id, \
         model, provider, upstream_model, prompt_tokens, completion_tokens, cached_prompt_tokens, \
         usage_source, cost_micros, priced, latency_ms, ttft_ms, http_status, stream, end_state, \
         prev_hash, hash, cost_picos, hash_version, cache_write_tokens) VALUES ($1, $2, $3, $4, \
         $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24, $25, $26)",
    )
    .bind("naive")
    .bind(seq)
    .bind(format!("naive-{seq}"))
    .bind(r.time_us)
    .bind(r.request_id.as_str())
    .bind(r.tenant.as_deref())
    .bind(r.key_id.as_deref())
    .bind(r.model.as_str())
    .bind(r.provider.as_str())
    .bind(r.upstream_model.as_str())
    .bind(r.usage.prompt_tokens as i64)
    .bind(r.usage.completion_tokens as i64)
    .bind(r.usage.cached_prompt_tokens as i64)
    .bind(r.usage_source.as_str())
    .bind(r.cost_micros)
    .bind(1i64)
    .bind(r.latency_ms as i64)
    .bind(r.ttft_ms.map(|t| t as i64))
    .bind(i64::from(r.http_status))
    .bind(1i64)
    .bind(r.end_state.as_str())
    .bind("")
    .bind("")
    .bind(r.cost_picos)
    .bind(3i64)
    .bind(r.usage.cache_write_tokens as i64)
    .execute(store.pool())
    .await
    .unwrap_or_else(|e| panic!("naive insert: {e}"));
}

fn bench_backend(c: &mut Criterion, backend: &str, url: &str, spool_dir: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (batched_n, naive_n) = if real_bench() {
        (5_000u64, 200u64)
    } else {
        (50, 5)
    };
    let settings = LedgerSettings {
        database_url: url.to_string(),
        spool_dir: spool_dir.to_path_buf(),
        node_id: "bench".into(),
        flush_interval: Duration::from_millis(10),
        ..LedgerSettings::default()
    };
    let (ledger, store) = runtime.block_on(async {
        let ledger = Ledger::start(settings)
            .await
            .unwrap_or_else(|e| panic!("ledger: {e}"));
        let store = Store::open(url)
            .await
            .unwrap_or_else(|e| panic!("store: {e}"));
        (ledger, store)
    });

    let mut group = c.benchmark_group("ledger_write");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    group.throughput(Throughput::Elements(batched_n));
    let mut next = 0u64;
    group.bench_function(BenchmarkId::new("batched_writer", backend), |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..batched_n {
                    next += 1;
                    ledger
                        .record(record(next))
                        .unwrap_or_else(|e| panic!("record: {e}"));
                }
                let flushed = ledger
                    .flush()
                    .await
                    .unwrap_or_else(|e| panic!("flush: {e}"));
                assert!(
                    flushed.database_up && flushed.spool_pending_records == 0,
                    "{flushed:?}"
                );
            })
        })
    });

    group.throughput(Throughput::Elements(naive_n));
    let mut seq = 0i64;
    group.bench_function(BenchmarkId::new("naive_insert_per_record", backend), |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..naive_n {
                    seq += 1;
                    naive_insert(&store, seq, &record(seq as u64)).await;
                }
            })
        })
    });
    group.finish();

    runtime.block_on(async {
        ledger
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
        let stats = ledger.stats();
        assert_eq!(stats.records_lost + stats.records_spooled, 0, "{stats:?}");
        store.close().await;
    });
}

fn ledger_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let url = sqlite_url(&dir.path().join("bench.db"));
    bench_backend(c, "sqlite", &url, &dir.path().join("spool-sqlite"));

    if !real_bench() {
        return;
    }
    match PostgresServer::start() {
        Ok(pg) => bench_backend(c, "postgres", &pg.url(), &dir.path().join("spool-pg")),
        Err(e) => eprintln!("note: PostgreSQL bench skipped: {e}"),
    }
}

criterion_group!(benches, ledger_write);
criterion_main!(benches);
