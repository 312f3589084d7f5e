//! Automatic prefix caching through the engine on the tiny random-weight
//! Llama: requests sharing a long system prompt give the same greedy tokens
//! with caching on and off, and caching cuts the prompt tokens computed.
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
    load_hf_dir, Engine, EngineConfig, EngineStats, Event, GenerateRequest, SamplingParams,
    SchedulerConfig,
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

/// Runs every request at once on a fresh engine; their tokens and the stats.
fn run(enable_prefix_caching: bool) -> (Vec<Vec<u32>>, EngineStats) {
    let dir = write_tiny_model(&scratch_dir("prefix-cache"), 11, false).unwrap();
    let model = load_hf_dir(&dir, &Device::Cpu).unwrap();
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            num_blocks: 1100,
            enable_prefix_caching,
            ..SchedulerConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::start(model, config).unwrap();
    let streams: Vec<_> = requests()
        .into_iter()
        .map(|r| engine.submit_blocking(r).unwrap())
        .collect();
    let outputs = streams
        .into_iter()
        .map(|mut stream| {
            let mut tokens = Vec::new();
            while let Some(event) = stream.blocking_recv() {
                match event {
                    Event::Token(t) => tokens.push(t.token),
                    Event::Finished(_) => {}
                    Event::Error(e) => panic!("request failed: {e}"),
                }
            }
            tokens
        })
        .collect();
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
