//! Batch invariance on SmolLM2-135M-Instruct (Q4_1 GGUF, loaded with the
//! default options): a sequence's logits, and so its greedy tokens, do not
//! depend on what else shares its steps. Every GGUF matrix is held in one
//! format (Q8_0) for every row count, candle's quantized matmul computes each
//! output row on its own, and the attention kernel is per row, so the
//! equality asserted here is exact (bit for bit), not a tolerance.
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (run
//! `batcher/scripts/fetch-smollm2.sh`). Without it the tests are skipped,
//! except under `CI` where they fail.
// Test helpers outside #[test] fns fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use candle_core::{Device, Tensor};
use sluice_batcher::model::{ChunkInput, LlamaRunner, PackedBatch};
use sluice_batcher::{load_gguf, Engine, EngineConfig, Event, GenerateRequest, SamplingParams};

const PROMPTS: [&str; 8] = [
    "What is the capital of France? Tell me a little about it.",
    "Write a haiku about the sea.",
    "Explain what a CPU does in one paragraph.",
    "List three fruits and their colours.",
    "Why is the sky blue?",
    "Give me a short recipe for pancakes, step by step, with quantities.",
    "Hi!",
    "Translate 'good morning' into German, Spanish and Italian.",
];

fn chat(text: &str) -> String {
    format!("<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
}

/// One step over `chunks` (each `(tokens, start, blocks)`), logits as rows.
fn step(
    runner: &LlamaRunner,
    cache: &sluice_batcher::kv_cache::KvCache,
    chunks: &[(&[u32], usize, &[u32])],
) -> Vec<Vec<f32>> {
    let inputs: Vec<ChunkInput> = chunks
        .iter()
        .map(|&(tokens, start, block_table)| ChunkInput {
            tokens,
            start,
            block_table,
            wants_logits: true,
        })
        .collect();
    let batch = PackedBatch::new(&inputs, 16, runner.config().kv_width(), &Device::Cpu).unwrap();
    let logits: Tensor = runner.forward(&batch, cache).unwrap();
    logits.to_vec2::<f32>().unwrap()
}

/// At the runner: sequence 0's prefill logits and the logits of two decode
/// steps are bitwise the same when it runs alone as when it shares each step
/// (prefill chunks, then decode rows) with seven other sequences.
#[test]
fn smollm2_logits_do_not_depend_on_the_batch() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let model = load_gguf(&path, &Device::Cpu).unwrap();
    let tokenizer = model.tokenizer.clone().unwrap();
    let runner = model.runner;
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tokenizer.encode(chat(p), true).unwrap().get_ids().to_vec())
        .collect();
    // Four 16-token blocks per sequence, disjoint, not in order.
    let tables: Vec<Vec<u32>> = (0..8u32)
        .map(|s| vec![31 - s, 8 + s, 16 + s, 24 + s])
        .collect();
    let next = [198u32, 504];

    let alone_cache = runner.new_cache(32, 16).unwrap();
    let p = &prompts[0];
    let mut alone = vec![step(&runner, &alone_cache, &[(p, 0, &tables[0])]).remove(0)];
    for (i, token) in next.iter().enumerate() {
        let t = std::slice::from_ref(token);
        alone.push(step(&runner, &alone_cache, &[(t, p.len() + i, &tables[0])]).remove(0));
    }

    let shared_cache = runner.new_cache(32, 16).unwrap();
    // Sequence 0 in the middle of the batch, so its rows start at an offset.
    let order = [3usize, 5, 0, 1, 7, 2, 6, 4];
    let prefill: Vec<(&[u32], usize, &[u32])> = order
        .iter()
        .map(|&s| (prompts[s].as_slice(), 0, tables[s].as_slice()))
        .collect();
    let row = order.iter().position(|&s| s == 0).unwrap();
    let mut shared = vec![step(&runner, &shared_cache, &prefill).remove(row)];
    for (i, token) in next.iter().enumerate() {
        let t = std::slice::from_ref(token);
        let decode: Vec<(&[u32], usize, &[u32])> = order
            .iter()
            .map(|&s| (t, prompts[s].len() + i, tables[s].as_slice()))
            .collect();
        shared.push(step(&runner, &shared_cache, &decode).remove(row));
    }

    for (i, (a, b)) in alone.iter().zip(&shared).enumerate() {
        let differing = a
            .iter()
            .zip(b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        let max_diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert_eq!(
            differing, 0,
            "step {i}: {differing} logits differ between batch of 1 and batch of 8 \
             (max |diff| {max_diff})"
        );
    }
}

fn greedy_tokens(stream: sluice_batcher::TokenStream) -> Vec<u32> {
    let mut stream = stream;
    let mut tokens = Vec::new();
    while let Some(event) = stream.blocking_recv() {
        match event {
            Event::Token(t) => tokens.push(t.token),
            Event::Finished(_) => {}
            Event::Error(e) => panic!("{e}"),
        }
    }
    tokens
}

/// Through the engine: each of eight greedy requests gives the same tokens
/// alone as when all eight run at once (continuous batching, shared prefill
/// and decode steps, different lengths).
#[test]
fn smollm2_greedy_tokens_alone_equal_tokens_among_eight() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let engine = Engine::start(
        load_gguf(&path, &Device::Cpu).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    let request = |i: usize| {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(24 + 4 * i)
        };
        GenerateRequest::from_text(chat(PROMPTS[i]), params)
    };
    let alone: Vec<Vec<u32>> = (0..PROMPTS.len())
        .map(|i| greedy_tokens(engine.submit_blocking(request(i)).unwrap()))
        .collect();
    let streams: Vec<_> = (0..PROMPTS.len())
        .map(|i| engine.submit_blocking(request(i)).unwrap())
        .collect();
    let together: Vec<Vec<u32>> = streams.into_iter().map(greedy_tokens).collect();
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.len(), 24 + 4 * i, "request {i}: length");
        assert_eq!(a, b, "request {i}: alone and among eight differ");
    }
}
