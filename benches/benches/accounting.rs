//! Accounting per request: pricing the usage and encoding the usage record.
//!
//! - `pricing_lookup`: `PriceTable::cost` on the shipped table (exact name,
//!   dated snapshot, provider-prefixed, unknown) against the naive way of
//!   lower-casing the name and scanning a list for the longest matching key.
//! - `usage_record_encode`: what the ledger writer does with each record
//!   before its INSERT — build the stored row, its canonical bytes and the
//!   SHA-256 chain hash — against hashing the record's `serde_json` text; and
//!   the JSON line the spool and exports write, typed `Serialize` against a
//!   `serde_json::Value` built first.

#![allow(clippy::panic, clippy::unwrap_used)] // A bench that silently timed the error path would lie.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sha2::{Digest, Sha256};
use sluice_ledger::chain::{hash_to_hex, LedgerRow, GENESIS_HASH};
use sluice_ledger::{
    cost_micros, EndState, Price, PriceTable, TokenUsage, UsageRecord, UsageSource,
};
use std::hint::black_box;

const USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 1_200,
    completion_tokens: 350,
    cached_prompt_tokens: 1_024,
    cache_write_tokens: 0,
};

/// Naive pricing: lower-case the name, drop a provider prefix, then scan every
/// entry for the longest key the name starts with.
fn naive_cost(table: &[(String, Price)], model: &str) -> Option<i64> {
    let lowered = model.trim().to_lowercase();
    let name = lowered.rsplit('/').next().unwrap_or(&lowered).to_string();
    table
        .iter()
        .filter(|(key, _)| name.starts_with(key.as_str()))
        .max_by_key(|(key, _)| key.len())
        .map(|(_, price)| cost_micros(price, &USAGE))
}

fn pricing(c: &mut Criterion) {
    let table = PriceTable::embedded().unwrap();
    let list: Vec<(String, Price)> = table
        .iter()
        .map(|(k, p)| (k.to_string(), p.clone()))
        .collect();
    let mut group = c.benchmark_group("pricing_lookup");
    for (case, model) in [
        ("exact", "gpt-4o-mini"),
        ("dated_snapshot", "gpt-4o-mini-2024-07-18"),
        ("provider_prefixed_upper", "OpenAI/GPT-4o"),
        ("unknown", "my-finetune-v3"),
    ] {
        let known = table.lookup(model).is_some();
        group.bench_with_input(
            BenchmarkId::new("sluice_price_table", case),
            model,
            |b, m| {
                b.iter(|| {
                    let cost = table.cost(black_box(m), &USAGE);
                    assert_eq!(cost.priced, known);
                    black_box(cost)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("naive_lowercase_scan", case),
            model,
            |b, m| b.iter(|| black_box(naive_cost(&list, black_box(m)))),
        );
    }
    group.finish();
}

fn record() -> UsageRecord {
    UsageRecord {
        time_us: 1_763_700_000_000_000,
        request_id: "0b9c2f1e-6f0a-4f53-9d3c-2a1f4e5d6c7b".into(),
        tenant: Some("acme".into()),
        key_id: Some("acme-web".into()),
        model: "gpt-4o-mini".into(),
        provider: "openai".into(),
        upstream_model: "gpt-4o-mini-2024-07-18".into(),
        usage: USAGE,
        usage_source: UsageSource::Reported,
        cost_micros: 427,
        cost_picos: 427_000_000,
        priced: true,
        latency_ms: 812,
        ttft_ms: Some(143),
        http_status: 200,
        stream: true,
        end_state: EndState::Completed,
    }
}

fn encode(c: &mut Criterion) {
    let record = record();
    let record_id = "5a0f3c1d-8e2b-4c7a-9f6e-1d2c3b4a5f60";
    let mut group = c.benchmark_group("usage_record_encode");
    group.bench_function("sluice_row_canonical_sha256", |b| {
        b.iter(|| {
            let row = LedgerRow::new("local", 42, record_id, black_box(&record));
            let hash = row.hash(&GENESIS_HASH);
            black_box((row, hash_to_hex(&hash)))
        })
    });
    group.bench_function("naive_json_sha256", |b| {
        b.iter(|| {
            let json = serde_json::to_vec(black_box(&record)).unwrap();
            let mut hasher = Sha256::new();
            hasher.update(GENESIS_HASH);
            hasher.update(&json);
            let hex: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            black_box((json, hex))
        })
    });
    group.bench_function("sluice_json_line_serialize", |b| {
        b.iter(|| {
            let mut line = Vec::with_capacity(512);
            serde_json::to_writer(&mut line, black_box(&record)).unwrap();
            line.push(b'\n');
            black_box(line)
        })
    });
    group.bench_function("naive_json_line_via_value", |b| {
        b.iter(|| {
            let value = serde_json::to_value(black_box(&record)).unwrap();
            black_box(format!("{value}\n"))
        })
    });
    group.finish();
}

criterion_group!(benches, pricing, encode);
criterion_main!(benches);
