//! Automatic prefix caching through the engine on the tiny random-weight
//! Llama: requests sharing a long system prompt give the same greedy tokens
//! with caching on and off, and caching cuts the prompt tokens computed;
//! shared prefixes under preemption and eviction keep every output.
// Test helpers outside #[test] fns fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use candle_core::Device;
use sluice_batcher::model::tiny::{scratch_dir, write_tiny_model};
use sluice_batcher::rng::SplitMix64;
use sluice_batcher::{
    load_hf_dir, Engine, EngineConfig, EngineHandle, EngineStats, Event, GenerateRequest,
    SamplingParams, SchedulerConfig,
};

/// Requests sharing the system prompt.
const REQUESTS: usize = 32;
/// Tokens of the shared system prompt: 30 blocks of 16.
const PREFIX: usize = 480;
/// Each request's own tokens after it.
const SUFFIX: usize = 8;

fn requests() -> Vec<GenerateRequest> {
    let mut rng = SplitMix64::new(17);
    let mut token = move || 3 + (rng.next_u64() % 250) as u32;
    let prefix: Vec<u32> = (0..PREFIX).map(|_| token()).collect();
    (0..REQUESTS)
        .map(|_| {
            let mut prompt = prefix.clone();
            prompt.extend((0..SUFFIX).map(|_| token()));
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(6)
            };
            GenerateRequest::from_tokens(prompt, params)
        })
        .collect()
}

fn engine(scheduler: SchedulerConfig, shuffle_blocks: Option<u64>) -> EngineHandle {
    let dir = write_tiny_model(&scratch_dir("prefix-cache"), 11, false).unwrap();
    let model = load_hf_dir(&dir, &Device::Cpu).unwrap();
    let config = EngineConfig {
        scheduler,
        shuffle_blocks,
        ..EngineConfig::default()
    };
    Engine::start(model, config).unwrap()
}

/// Submits every request at once; each one's tokens, and for each token
/// the gap between its top two logprobs (when asked for).
fn run_all(engine: &EngineHandle, requests: Vec<GenerateRequest>) -> Vec<Vec<(u32, f32)>> {
    let streams: Vec<_> = requests
        .into_iter()
        .map(|r| engine.submit_blocking(r).unwrap())
        .collect();
    streams
        .into_iter()
        .map(|mut stream| {
            let mut tokens = Vec::new();
            while let Some(event) = stream.blocking_recv() {
                match event {
                    Event::Token(t) => {
                        let gap = match t.top_logprobs.as_slice() {
                            [a, b, ..] => a.1 - b.1,
                            _ => f32::INFINITY,
                        };
                        tokens.push((t.token, gap));
                    }
                    Event::Finished(_) => {}
                    Event::Error(e) => panic!("request failed: {e}"),
                }
            }
            tokens
        })
        .collect()
}

fn tokens_of(outputs: &[Vec<(u32, f32)>]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .map(|o| o.iter().map(|(token, _)| *token).collect())
        .collect()
}

/// Runs every request at once on a fresh engine; their tokens and the stats.
fn run(enable_prefix_caching: bool) -> (Vec<Vec<u32>>, EngineStats) {
    let engine = engine(
        SchedulerConfig {
            num_blocks: 1100,
            enable_prefix_caching,
            ..SchedulerConfig::default()
        },
        None,
    );
    let outputs = tokens_of(&run_all(&engine, requests()));
    (outputs, engine.stats_blocking().unwrap())
}

#[test]
fn a_shared_system_prompt_is_computed_once_and_outputs_do_not_change() {
    let (uncached, off) = run(false);
    let (cached, on) = run(true);
    for (i, (a, b)) in uncached.iter().zip(&cached).enumerate() {
        assert_eq!(a.len(), 6);
        assert_eq!(a, b, "request {i}: caching changed the greedy tokens");
    }
    let prompt_tokens = (REQUESTS * (PREFIX + SUFFIX)) as u64;
    assert_eq!(off.prefill_tokens_computed, prompt_tokens, "{off:?}");
    assert_eq!((off.prefix_cache_queries, off.prefix_cache_hits), (0, 0));
    // The first request computes its whole prompt, the others their suffix.
    assert!(
        on.prefill_tokens_computed * 10 <= off.prefill_tokens_computed,
        "caching cut prefill only from {} to {} tokens: {on:?}",
        off.prefill_tokens_computed,
        on.prefill_tokens_computed
    );
    assert_eq!(on.prefix_cache_queries, prompt_tokens);
    assert_eq!(on.prefix_cache_hits, ((REQUESTS - 1) * PREFIX) as u64);
    assert_eq!(on.blocks_used, 0);
    eprintln!(
        "prefill tokens computed: {} without caching, {} with ({:.1}% fewer); hit rate {:.1}%",
        off.prefill_tokens_computed,
        on.prefill_tokens_computed,
        100.0 * (1.0 - on.prefill_tokens_computed as f64 / off.prefill_tokens_computed as f64),
        100.0 * on.prefix_cache_hits as f64 / on.prefix_cache_queries as f64,
    );
}

/// Three families of prompts sharing 20 tokens (5 blocks of 4), each with a
/// few tokens of its own, in a pool far too small for all of them (shuffled
/// block ids): cached blocks are shared, evicted and reused while sequences
/// are preempted and recompute from the cache; every request still gets the
/// tokens it gets alone without caching (up to a near-tie in its logits).
#[test]
fn shared_prefixes_under_preemption_and_eviction_keep_outputs() {
    let mut rng = SplitMix64::new(5);
    let mut token = move || 3 + (rng.next_u64() % 250) as u32;
    let families: Vec<Vec<u32>> = (0..3).map(|_| (0..20).map(|_| token()).collect()).collect();
    let requests: Vec<GenerateRequest> = (0..12)
        .map(|i| {
            let mut prompt = families[i % 3].clone();
            prompt.extend((0..1 + i % 5).map(|_| token()));
            let params = SamplingParams {
                max_tokens: 12,
                ignore_eos: true,
                logprobs: Some(2),
                ..SamplingParams::default()
            };
            GenerateRequest::from_tokens(prompt, params)
        })
        .collect();
    let small = |enable_prefix_caching, num_blocks| SchedulerConfig {
        block_size: 4,
        num_blocks,
        max_num_seqs: 8,
        max_tokens_per_step: 32,
        max_prefill_chunk: 16,
        enable_prefix_caching,
        ..SchedulerConfig::default()
    };
    let reference = engine(small(false, 64), None);
    let alone: Vec<Vec<(u32, f32)>> = requests
        .iter()
        .map(|r| run_all(&reference, vec![r.clone()]).remove(0))
        .collect();
    let engine = engine(small(true, 16), Some(3));
    let batched = run_all(&engine, requests);
    let mut compared = 0;
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(a.len(), b.len(), "request {i}");
        for (k, ((ta, gap_a), (tb, gap_b))) in a.iter().zip(b).enumerate() {
            if gap_a.min(*gap_b) < 1e-3 {
                break; // a near-tie may flip with another summation order
            }
            assert_eq!(ta, tb, "request {i} differs at token {k}");
            compared += 1;
        }
    }
    assert!(
        compared * 10 >= 12 * 12 * 9,
        "too many near-ties: {compared}"
    );
    let stats = engine.stats_blocking().unwrap();
    assert!(stats.preemptions > 0, "pool not small enough: {stats:?}");
    assert!(stats.prefix_cache_hits > 0, "{stats:?}");
    assert!(stats.prefix_cache_evictions > 0, "{stats:?}");
    assert_eq!(stats.blocks_used, 0);
}
