//! The gateway's cost over the engine: 32 concurrent streaming chats of 64
//! greedy tokens on SmolLM2-135M, first driven in-process through
//! `serve::ServedModel` (the same engine, template and settings the gateway
//! uses), then through the release `sluice` binary over HTTP/1.1 with a
//! `kind: local` upstream — one after the other, in one run. Reports total
//! time and TTFT p50 of each and the gateway's ratio to the direct run.
//!
//! `cargo build --release -p sluice && cargo bench -p sluice-batcher --bench gateway`.
//! Under `cargo test` (no `--bench` flag) it does nothing.
#![allow(missing_docs)]
// The report is this binary's output.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_batcher::serve::{DeviceChoice, KvCacheSize, ServeOptions, ServedModel};
use sluice_batcher::{Event, GenerateRequest, SamplingParams};

const CLIENTS: usize = 32;
const MAX_TOKENS: usize = 64;
/// In-process and gateway runs alternate this many times; the median counts.
const ROUNDS: usize = 3;
const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in simple words.",
    "Give me three tips for learning to code.",
];

fn options(model: &Path) -> ServeOptions {
    ServeOptions {
        model: model.to_path_buf(),
        device: DeviceChoice::Cpu,
        kv_cache: Some(KvCacheSize::Blocks(512)),
        max_sequences: 64,
        max_tokens_per_step: 512,
        threads: 0,
        chat_template: None,
    }
}

/// Total wall time and each request's time to first token.
struct Run {
    total: Duration,
    ttft: Vec<Duration>,
    tokens: usize,
}

impl Run {
    fn ttft_p50(&self) -> Duration {
        let mut sorted = self.ttft.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }
}

fn in_process(model: &Path) -> Run {
    let served = ServedModel::start(&options(model)).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |n: usize| {
        let served = served.clone();
        async move {
            let messages =
                serde_json::json!([{"role": "user", "content": QUESTIONS[n % QUESTIONS.len()]}]);
            let prompt = served.chat_prompt(&messages, None).unwrap();
            let sampling = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(MAX_TOKENS)
            };
            let started = Instant::now();
            let mut stream = served
                .engine()
                .submit(GenerateRequest::from_tokens(prompt, sampling))
                .await
                .unwrap();
            let (mut first, mut tokens) = (None, 0);
            while let Some(event) = stream.recv().await {
                match event {
                    Event::Token(_) => {
                        first.get_or_insert_with(|| started.elapsed());
                        tokens += 1;
                    }
                    Event::Finished(_) => break,
                    Event::Error(e) => panic!("{e}"),
                }
            }
            (first.unwrap(), tokens)
        }
    };
    runtime.block_on(ask(0)); // warm-up
    let started = Instant::now();
    let results = runtime.block_on(futures_util::future::join_all((0..CLIENTS).map(ask)));
    Run {
        total: started.elapsed(),
        ttft: results.iter().map(|r| r.0).collect(),
        tokens: results.iter().map(|r| r.1).sum(),
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn through_gateway(binary: &Path, model: &Path) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        format!(
            "upstreams:\n  engine: {{kind: local, model: \"{}\", kv_cache_blocks: 512, max_sequences: 64, max_tokens_per_step: 512}}\nmodels:\n  - {{name: smol, upstream: engine}}\nledger: {{enabled: false}}\n",
            model.display()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _gateway = Gateway(
        Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{base}/health/ready"))
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "sluice did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ask = |n: usize| {
        let body = serde_json::json!({
            "model": "smol", "stream": true, "max_tokens": MAX_TOKENS, "ignore_eos": true,
            "temperature": 0, "messages": [{"role": "user", "content": QUESTIONS[n % QUESTIONS.len()]}],
        });
        let started = Instant::now();
        let mut response = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let (mut first, mut seen, mut buf) = (None, String::new(), [0u8; 16384]);
        loop {
            let n = response.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            if first.is_none()
                && seen.contains("\"content\":\"")
                && seen.matches("data: ").count() >= 1
            {
                first = Some(started.elapsed());
            }
        }
        // Content chunks with text (the opening chunk's content is empty).
        let tokens = seen.matches("\"delta\":{\"content\":\"").count()
            - seen.matches("\"delta\":{\"content\":\"\"").count();
        (first.unwrap(), tokens)
    };
    ask(0); // warm-up
    let started = Instant::now();
    let results: Vec<(Duration, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS).map(|n| scope.spawn(move || ask(n))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    Run {
        total: started.elapsed(),
        ttft: results.iter().map(|r| r.0).collect(),
        tokens: results.iter().map(|r| r.1).sum(),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let model = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let binary = root.join("target/release/sluice");
    if !model.exists() || !binary.exists() {
        println!(
            "needs {} (batcher/scripts/fetch-smollm2.sh) and {} (cargo build --release -p sluice)",
            model.display(),
            binary.display()
        );
        return;
    }
    println!("SmolLM2-135M Q4_1, {CLIENTS} concurrent streaming chats x {MAX_TOKENS} greedy tokens, {ROUNDS} rounds alternating");
    println!("| round | path | total s | tokens | tok/s | TTFT p50 ms |");
    println!("|---|---|---|---|---|---|");
    let (mut total_ratios, mut ttft_deltas) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let direct = in_process(&model);
        let gateway = through_gateway(&binary, &model);
        for (name, run) in [
            ("engine in-process", &direct),
            ("through the gateway (HTTP/1.1)", &gateway),
        ] {
            println!(
                "| {round} | {name} | {:.2} | {} | {:.1} | {:.0} |",
                run.total.as_secs_f64(),
                run.tokens,
                run.tokens as f64 / run.total.as_secs_f64(),
                run.ttft_p50().as_secs_f64() * 1e3
            );
        }
        total_ratios.push(gateway.total.as_secs_f64() / direct.total.as_secs_f64());
        ttft_deltas
            .push((gateway.ttft_p50().as_secs_f64() - direct.ttft_p50().as_secs_f64()) * 1e3);
    }
    total_ratios.sort_by(f64::total_cmp);
    ttft_deltas.sort_by(f64::total_cmp);
    println!(
        "gateway / in-process, median of {ROUNDS} rounds: total time x{:.3} (rounds {:?}), TTFT p50 {:+.1} ms (rounds {:?})",
        total_ratios[ROUNDS / 2],
        total_ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        ttft_deltas[ROUNDS / 2],
        ttft_deltas.iter().map(|d| d.round()).collect::<Vec<_>>()
    );
}
