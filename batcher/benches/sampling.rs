//! Sampling one token from a 49,152-token vocabulary (SmolLM2's), as the
//! engine does for every sampled (non-greedy) token: `sampling::sample`
//! beside the naive version it replaced, a full sort of the vocabulary per
//! token. `cargo bench -p sluice-batcher --bench sampling`.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_batcher::sampling::{sample, sample_from_sorted};
use sluice_batcher::SamplingParams;
use std::hint::black_box;

const VOCAB: usize = 49_152;

/// Logits shaped like a language model's: a long low tail and a few tokens
/// well above it (deterministic, no RNG crate needed).
fn logits() -> Vec<f32> {
    (0..VOCAB)
        .map(|i| {
            let x = (i as f32 * 12.9898).sin() * 43_758.547;
            let noise = (x - x.floor()) * 4.0 - 2.0;
            if i % 4_093 == 7 {
                8.0 + noise
            } else {
                noise
            }
        })
        .collect()
}

/// The sampler before, with the row copy `sample` also makes.
fn sample_sorted(params: &SamplingParams, logits: &[f32], uniform: f32) -> u32 {
    let row = logits.to_vec();
    sample_from_sorted(params, black_box(&row), uniform)
}

fn sampling(c: &mut Criterion) {
    let logits = logits();
    let mut group = c.benchmark_group("sample_49k_vocab");
    let cases = [
        ("t0.7_top_p0.9", 0.7, 0, 0.9),
        ("t1.0_top_k40", 1.0, 40, 1.0),
        ("t1.0_plain", 1.0, 0, 1.0),
    ];
    for (name, temperature, top_k, top_p) in cases {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 11,
            ..SamplingParams::default()
        };
        group.bench_function(BenchmarkId::new("partial_ranking", name), |b| {
            b.iter(|| sample(black_box(&params), black_box(&logits), &[], 0))
        });
        group.bench_function(BenchmarkId::new("full_sort", name), |b| {
            b.iter(|| sample_sorted(black_box(&params), black_box(&logits), 0.42))
        });
    }
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
