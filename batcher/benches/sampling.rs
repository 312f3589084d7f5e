//! Sampling one token from a 49,152-token vocabulary (SmolLM2's), as the
//! engine does for every sampled (non-greedy) token: `sampling::sample`
//! beside the naive version it replaced, a full sort of the vocabulary per
//! token. `cargo bench -p sluice-batcher --bench sampling`.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_batcher::sampling::sample;
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

/// The sampler before: every token sorted, then the walk.
fn sample_sorted(params: &SamplingParams, logits: &[f32], uniform: f32) -> u32 {
    let logits = logits.to_vec();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let max = logits[order[0] as usize];
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&t| ((logits[t as usize] - max) / params.temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if params.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= params.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut cumulative = 0.0;
    for (t, p) in order.iter().zip(&probs) {
        cumulative += p;
        if uniform < cumulative {
            return *t;
        }
    }
    order.last().copied().unwrap_or(0)
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
