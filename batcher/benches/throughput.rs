//! Output throughput of the batcher at 1..64 concurrent requests against
//! one-at-a-time decoding with candle-transformers' own Llama on the same
//! weights, in the same run; TTFT and inter-token latency p50/p99; KV block
//! utilisation. Results go in `batcher/BENCHMARKS.md`.
//!
//! `cargo bench -p sluice-batcher --bench throughput` runs the full sweep on
//! SmolLM2-135M (`models/`, fetched by `batcher/scripts/fetch-smollm2.sh`).
//! Under `cargo test` (no `--bench` flag) it runs a seconds-long smoke pass
//! on the tiny random model instead.
#![allow(missing_docs)]
// The report is this binary's output.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::models::{llama as dense_llama, quantized_llama};
use sluice_batcher::model::tiny::{scratch_dir, write_tiny_model};
use sluice_batcher::{
    load_gguf, load_hf_dir, Engine, EngineConfig, EngineHandle, Event, GenerateRequest,
    LoadedModel, SamplingParams, SchedulerConfig,
};

/// One reference forward: (new tokens, their first position) -> last logits.
type StepFn = Box<dyn FnMut(&[u32], usize) -> Tensor>;

/// One-at-a-time reference: candle-transformers' Llama with its own KV cache.
enum Reference {
    Quantized(PathBuf),
    Dense(PathBuf),
}

impl Reference {
    /// Generates `max_tokens` greedily for each prompt in turn; returns
    /// (output tok/s, median per-token decode time, median prefill time).
    fn run(&self, prompts: &[Vec<u32>], max_tokens: usize) -> (f64, Duration, Duration) {
        let device = Device::Cpu;
        let mut step: StepFn = match self {
            Self::Quantized(path) => {
                let mut file = std::fs::File::open(path).unwrap();
                let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
                let mut model =
                    quantized_llama::ModelWeights::from_gguf(content, &mut file, &device).unwrap();
                Box::new(move |tokens, pos| {
                    let input = Tensor::new(tokens, &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    model.forward(&input, pos).unwrap()
                })
            }
            Self::Dense(dir) => {
                let json = std::fs::read_to_string(dir.join("config.json")).unwrap();
                let config: dense_llama::LlamaConfig = serde_json::from_str(&json).unwrap();
                let config = config.into_config(false);
                let tensors =
                    candle_core::safetensors::load(dir.join("model.safetensors"), &device).unwrap();
                let vb =
                    candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &device);
                let model = dense_llama::Llama::load(vb, &config).unwrap();
                let mut cache = None;
                Box::new(move |tokens, pos| {
                    if pos == 0 {
                        cache = Some(
                            dense_llama::Cache::new(
                                true,
                                candle_core::DType::F32,
                                &config,
                                &Device::Cpu,
                            )
                            .unwrap(),
                        );
                    }
                    let input = Tensor::new(tokens, &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    model.forward(&input, pos, cache.as_mut().unwrap()).unwrap()
                })
            }
        };
        let mut decode_times = Vec::new();
        let mut prefill_times = Vec::new();
        let start = Instant::now();
        let mut generated = 0;
        for prompt in prompts {
            let t = Instant::now();
            let mut logits = step(prompt, 0);
            prefill_times.push(t.elapsed());
            for pos in prompt.len()..prompt.len() + max_tokens {
                let next: u32 = logits
                    .flatten_all()
                    .unwrap()
                    .argmax(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                generated += 1;
                let t = Instant::now();
                logits = step(&[next], pos);
                decode_times.push(t.elapsed());
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        decode_times.sort();
        prefill_times.sort();
        (
            generated as f64 / elapsed,
            decode_times[decode_times.len() / 2],
            prefill_times[prefill_times.len() / 2],
        )
    }
}

/// What one concurrency level measured.
struct Level {
    concurrency: usize,
    tokens_per_s: f64,
    ttft: Vec<Duration>,
    itl: Vec<Duration>,
    peak_blocks: usize,
    total_blocks: usize,
    preemptions: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run_level(
    engine: &EngineHandle,
    prompts: &[Vec<u32>],
    concurrency: usize,
    max_tokens: usize,
) -> Level {
    let before = engine.stats_blocking().unwrap();
    let start = Instant::now();
    let mut readers = Vec::new();
    for i in 0..concurrency {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(max_tokens)
        };
        let request = GenerateRequest::from_tokens(prompts[i % prompts.len()].clone(), params);
        let submitted = Instant::now();
        let mut stream = engine.submit_blocking(request).unwrap();
        readers.push(std::thread::spawn(move || {
            let mut stamps = Vec::new();
            while let Some(event) = stream.blocking_recv() {
                match event {
                    Event::Token(_) => stamps.push(Instant::now()),
                    Event::Finished(_) => break,
                    Event::Error(e) => panic!("{e}"),
                }
            }
            (submitted, stamps)
        }));
    }
    let mut peak_blocks = 0;
    while !readers.iter().all(|r| r.is_finished()) {
        peak_blocks = peak_blocks.max(engine.stats_blocking().unwrap().blocks_used);
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (mut ttft, mut itl, mut generated) = (Vec::new(), Vec::new(), 0);
    for r in readers {
        let (submitted, stamps) = r.join().unwrap();
        generated += stamps.len();
        if let Some(first) = stamps.first() {
            ttft.push(*first - submitted);
        }
        itl.extend(stamps.windows(2).map(|w| w[1] - w[0]));
    }
    ttft.sort();
    itl.sort();
    let after = engine.stats_blocking().unwrap();
    Level {
        concurrency,
        tokens_per_s: generated as f64 / elapsed,
        ttft,
        itl,
        peak_blocks,
        total_blocks: after.blocks_total,
        preemptions: after.preemptions - before.preemptions,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `SLUICE_BENCH_STEPS=1`: time single model steps (decode batches of B
/// sequences with 48 cached tokens each) to see where a step's time goes.
fn step_timings(path: &std::path::Path) {
    use sluice_batcher::model::{ChunkInput, PackedBatch};
    // SLUICE_REQUANTIZE=0: keep the file's types (Q4_1's scalar kernel).
    let keep = std::env::var("SLUICE_REQUANTIZE").is_ok_and(|v| v == "0");
    let mut options = sluice_batcher::model::GgufOptions::default();
    if keep {
        options.requantize_to = None;
    }
    let model = sluice_batcher::model::load_gguf_with(path, &Device::Cpu, &options).unwrap();
    let runner = model.runner;
    println!("after load: {}", memory_status());
    let block_size = 16;
    let cache = runner.new_cache(512, block_size).unwrap();
    let tokens: Vec<u32> = (0..49).map(|i| 100 + i).collect();
    // SLUICE_BENCH_BATCHES=1,8: only these batch sizes (e.g. to profile one).
    let batches: Vec<usize> = std::env::var("SLUICE_BENCH_BATCHES")
        .map(|v| v.split(',').map(|b| b.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![1, 8, 32, 64]);
    for b in batches {
        let tables: Vec<Vec<u32>> = (0..b)
            .map(|s| (0..4).map(|k| (s * 4 + k) as u32).collect())
            .collect();
        let chunks: Vec<ChunkInput> = tables
            .iter()
            .map(|t| ChunkInput {
                tokens: &tokens[48..49],
                start: 48,
                block_table: t,
                wants_logits: true,
            })
            .collect();
        let batch = PackedBatch::new(
            &chunks,
            block_size,
            runner.config().kv_width(),
            &Device::Cpu,
        )
        .unwrap();
        runner.forward(&batch, &cache).unwrap();
        let start = Instant::now();
        let n: u32 = std::env::var("SLUICE_BENCH_REPS").map_or(5, |v| v.parse().unwrap());
        for _ in 0..n {
            runner.forward(&batch, &cache).unwrap();
        }
        let per = start.elapsed() / n;
        println!(
            "decode batch {b}: {:.1} ms/step, {:.1} tok/s",
            ms(per),
            b as f64 / per.as_secs_f64()
        );
    }
    println!("after steps: {}", memory_status());
    matrix_timings(path, &options);
}

/// One-row (decode) time of each of layer 0's matrices and the output
/// projection, as loaded for the runner: where a batch-1 step's matmul time goes.
fn matrix_timings(path: &std::path::Path, options: &sluice_batcher::model::GgufOptions) {
    use candle_core::quantized::{gguf_file, QMatMul};
    use candle_core::Module;
    use sluice_batcher::model::weights::prepare_matrix;
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
        "token_embd.weight",
    ] {
        let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
        let q = prepare_matrix(q, options.requantize_to, &Device::Cpu).unwrap();
        let (dtype, (n, k)) = (q.dtype(), q.shape().dims2().unwrap());
        let m = QMatMul::from_qtensor(q).unwrap();
        let x = candle_core::Tensor::ones((1, k), candle_core::DType::F32, &Device::Cpu).unwrap();
        m.forward(&x).unwrap();
        let reps = 50;
        let start = Instant::now();
        for _ in 0..reps {
            m.forward(&x).unwrap();
        }
        println!(
            "matrix {name} ({dtype:?}, {n}x{k}): {:.3} ms per one-row matmul",
            ms(start.elapsed() / reps)
        );
    }
}

/// This process's resident and peak resident memory (Linux `/proc/self/status`).
fn memory_status() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one run measures, and on which model.
struct Setup {
    model: LoadedModel,
    reference: Reference,
    prompts: Vec<Vec<u32>>,
    levels: Vec<usize>,
    max_tokens: usize,
    label: &'static str,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::var_os("SLUICE_BENCH_STEPS").is_some() {
        step_timings(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        );
        return;
    }
    let gguf =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let setup = if full && gguf.exists() {
        let model = load_gguf(&gguf, &Device::Cpu).unwrap();
        let tokenizer = model.tokenizer.clone().unwrap();
        let texts = [
            "What is the capital of France?",
            "Write a haiku about the sea.",
            "Explain what a CPU does in one paragraph.",
            "List three fruits and their colours.",
        ];
        let prompts = texts
            .iter()
            .map(|t| {
                let chat = format!("<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n");
                tokenizer.encode(chat, true).unwrap().get_ids().to_vec()
            })
            .collect();
        Setup {
            model,
            reference: Reference::Quantized(gguf),
            prompts,
            levels: vec![1, 2, 4, 8, 16, 32, 64],
            max_tokens: 64,
            label: "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        }
    } else {
        let dir = write_tiny_model(&scratch_dir("bench"), 1, false).unwrap();
        let model = load_hf_dir(&dir, &Device::Cpu).unwrap();
        let prompts = vec![vec![1, 5, 9, 13, 17, 21], vec![1, 2, 3], vec![7; 12]];
        let levels = if full {
            vec![1, 2, 4, 8, 16, 32, 64]
        } else {
            vec![1, 8]
        };
        Setup {
            model,
            reference: Reference::Dense(dir),
            prompts,
            levels,
            max_tokens: if full { 64 } else { 8 },
            label: "tiny random Llama (f32)",
        }
    };
    let Setup {
        model,
        reference,
        prompts,
        levels,
        max_tokens,
        label,
    } = setup;
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            block_size: 16,
            num_blocks: 512,
            max_num_seqs: 64,
            max_tokens_per_step: 512,
            max_prefill_chunk: 256,
            ..SchedulerConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::start(model, config).unwrap();
    // Warm-up (page in weights, size thread pools).
    run_level(&engine, &prompts, 2, 4);

    let reference_requests = if full { 4 } else { 1 };
    let ref_prompts: Vec<Vec<u32>> = (0..reference_requests)
        .map(|i| prompts[i % prompts.len()].clone())
        .collect();
    let (ref_tps, ref_decode, ref_prefill) = reference.run(&ref_prompts, max_tokens);
    let ref_decode_tps = 1.0 / ref_decode.as_secs_f64();

    println!("model: {label}; {max_tokens} output tokens per request, greedy");
    println!(
        "reference (candle-transformers, one at a time): {ref_tps:.1} tok/s end to end; \
         decode p50 {:.2} ms/token ({ref_decode_tps:.1} tok/s decode only); prefill p50 {:.1} ms",
        ms(ref_decode),
        ms(ref_prefill)
    );
    println!("| concurrent | tok/s | x ref (end to end) | x ref (decode only) | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | peak KV blocks | preemptions |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &c in &levels {
        let l = run_level(&engine, &prompts, c, max_tokens);
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {}/{} ({:.0}%) | {} |",
            l.concurrency,
            l.tokens_per_s,
            l.tokens_per_s / ref_tps,
            l.tokens_per_s / ref_decode_tps,
            ms(percentile(&l.ttft, 0.5)),
            ms(percentile(&l.ttft, 0.99)),
            ms(percentile(&l.itl, 0.5)),
            ms(percentile(&l.itl, 0.99)),
            l.peak_blocks,
            l.total_blocks,
            100.0 * l.peak_blocks as f64 / l.total_blocks as f64,
            l.preemptions,
        );
    }
}
