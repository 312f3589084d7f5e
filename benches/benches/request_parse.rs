//! Reading `model`/`stream` from a request body and rewriting the model name:
//! sluice's borrowed one-pass parse and splice, against the naive way of
//! parsing into `serde_json::Value`, editing it and serialising it again.

#![allow(clippy::panic)] // A bench that silently timed the error path would lie.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_benches::chat_request;
use sluice_providers::RoutingFields;
use std::hint::black_box;

fn parse_and_rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_parse_rewrite");
    for size in [1_024usize, 16 * 1024, 256 * 1024] {
        let body = Bytes::from(chat_request(size));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("sluice_routing_fields", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let fields =
                        RoutingFields::parse(black_box(body)).unwrap_or_else(|e| panic!("{e}"));
                    black_box(fields.body_for_upstream(body, "gpt-4o-mini-2024-07-18"))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("naive_value_roundtrip", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut v: serde_json::Value =
                        serde_json::from_slice(black_box(body)).unwrap_or_default();
                    let stream = v["stream"].as_bool().unwrap_or(false);
                    v["model"] = serde_json::Value::from("gpt-4o-mini-2024-07-18");
                    black_box((stream, serde_json::to_vec(&v).unwrap_or_default()))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse_and_rewrite);
criterion_main!(benches);
