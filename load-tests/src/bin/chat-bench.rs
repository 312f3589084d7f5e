//! `chat-bench`: N streaming chat completions sent at once to one
//! OpenAI-compatible server (sluice's engine, llama.cpp's `llama-server`),
//! greedy and with `ignore_eos`, so every server does the same work. Per
//! level it measures output tok/s (completion tokens from each stream's
//! `usage` / wall time of the level), TTFT (request sent -> first content
//! delta) and inter-token latency (gaps between content deltas, per stream,
//! pooled), sums the prompt tokens and whatever the server says about cached
//! prompt tokens (`usage.prompt_tokens_details.cached_tokens`, llama-server's
//! `timings.prompt_n` / `cache_n`), and reads the server's VmRSS / VmHWM.
//! One JSON line per level on stdout (and `--json`), a summary on stderr.
//!
//! It fails (exit 1, after printing what it measured) when an answer is not
//! 200, a stream breaks or carries an error event, has no `usage`, or
//! produces fewer completion tokens than asked. `load-tests/engine_vs_llama.sh`
//! drives it.

use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The chat prompts, in rotation (the same four as the batcher's benches).
const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in simple words.",
    "Give me three tips for learning to code.",
];

/// Streaming chat completions at one server, N at once.
#[derive(Parser)]
struct Args {
    /// The chat completions URL (`http://127.0.0.1:PORT/v1/chat/completions`).
    #[arg(long)]
    url: String,
    /// The `model` field.
    #[arg(long)]
    model: String,
    /// A name for the server in the output (`llama`, `sluice`).
    #[arg(long)]
    label: String,
    /// A name for the scenario in the output.
    #[arg(long, default_value = "chat")]
    scenario: String,
    /// Requests sent at once, one level after another (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    concurrency: Vec<usize>,
    /// `max_tokens` of each request; each must produce exactly this many.
    #[arg(long, default_value_t = 64)]
    max_tokens: u64,
    /// A file whose text is the system message of every request (the
    /// shared-prefix scenario); without it the messages have only a user turn.
    #[arg(long)]
    system_file: Option<PathBuf>,
    /// Make every request's user message distinct, across rounds too
    /// (`Request 2.7: ...`), so only the system message is shared.
    #[arg(long)]
    distinct: bool,
    /// Runs of each level, each reported on its own line.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Requests sent one at a time before the first level and not measured.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The server's process id, for VmRSS / VmHWM.
    #[arg(long)]
    pid: Option<u32>,
    /// A request not finished after this many seconds fails the run.
    #[arg(long, default_value_t = 600.0)]
    timeout_s: f64,
    /// A Prometheus `/metrics` URL read after each level: its samples whose
    /// names speak of prompt tokens, prefill or prefix caching go into the
    /// JSON line (`metrics`), whatever the server calls them.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Append the JSON lines to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one stream delivered.
#[derive(Default)]
struct Stream {
    /// Request sent -> first content delta with text.
    ttft: Option<Duration>,
    /// Gaps between consecutive content deltas.
    gaps: Vec<Duration>,
    /// Content deltas with text.
    deltas: u64,
    /// `usage.completion_tokens` of the final chunk.
    completion_tokens: Option<u64>,
    /// `usage.prompt_tokens`.
    prompt_tokens: Option<u64>,
    /// `usage.prompt_tokens_details.cached_tokens`, where the server says it.
    cached_tokens: Option<u64>,
    /// llama-server's `timings.prompt_n`: prompt tokens computed.
    prompt_n: Option<u64>,
    /// llama-server's `timings.cache_n`: prompt tokens taken from its cache.
    cache_n: Option<u64>,
    /// `finish_reason` of the last choice that had one.
    finish_reason: Option<String>,
    /// `data: [DONE]` arrived.
    done: bool,
}

/// Percentiles in milliseconds.
#[derive(Serialize)]
struct Millis {
    p50: f64,
    p90: f64,
    p99: f64,
}

/// One level's result, as a JSON line.
#[derive(Serialize)]
struct Level<'a> {
    label: &'a str,
    scenario: &'a str,
    concurrency: usize,
    round: usize,
    max_tokens: u64,
    wall_s: f64,
    completion_tokens: u64,
    prompt_tokens: u64,
    tok_s: f64,
    deltas: u64,
    ttft_ms: Millis,
    itl_ms: Millis,
    /// Sum of `usage.prompt_tokens_details.cached_tokens`, if any stream had it.
    cached_tokens: Option<u64>,
    /// Sum of llama-server's `timings.prompt_n`, if any stream had it.
    prompt_n: Option<u64>,
    /// Sum of llama-server's `timings.cache_n`, if any stream had it.
    cache_n: Option<u64>,
    /// Server VmRSS before the level (after loading and warm-up), MiB.
    rss_before_mib: Option<f64>,
    /// Server VmRSS right after the level, MiB.
    rss_after_mib: Option<f64>,
    /// Server VmHWM (peak RSS since start) after the level, MiB.
    hwm_mib: Option<f64>,
    /// `--metrics-url`'s matching samples after the level (series -> value).
    metrics: BTreeMap<String, f64>,
    failures: Vec<String>,
}

/// Metric names containing any of these are kept (lowercase).
const METRIC_WORDS: [&str; 6] = [
    "prefix",
    "prefill",
    "prompt_tokens",
    "cached",
    "computed",
    "cache_hit",
];

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "chat-bench {}: {e}", args.label);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs every level; `Ok(false)` when some request failed.
fn run(args: &Args) -> std::io::Result<bool> {
    let url: Uri = args.url.parse().map_err(std::io::Error::other)?;
    let system = match &args.system_file {
        Some(path) => Some(std::fs::read_to_string(path)?),
        None => None,
    };
    // One thread: the client shares the cores with the server under test,
    // and 64 streams of a few tokens a second are little work.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs_f64(args.timeout_s);
    let body = |n: usize, round: usize| chat_body(args, system.as_deref(), n, round);
    let mut all_ok = true;
    runtime.block_on(async {
        for w in 0..args.warmup {
            let sender = connect(&url).await?;
            // No system message: the warm-up leaves no shared prefix behind.
            let warm = chat_body(args, None, w, 0);
            let stream = exchange(sender, request(&url, warm)?, timeout).await;
            if let Err(e) = stream {
                return Err(std::io::Error::other(format!(
                    "warm-up request failed: {e}"
                )));
            }
        }
        for &n in &args.concurrency {
            for round in 1..=args.rounds {
                let rss_before = args.pid.and_then(|p| proc_status_kib(p, "VmRSS:"));
                // Connections first, so the level times requests, not handshakes.
                let mut senders = Vec::with_capacity(n);
                for _ in 0..n {
                    senders.push(connect(&url).await?);
                }
                let requests = (0..n)
                    .map(|i| request(&url, body(i, round)))
                    .collect::<std::io::Result<Vec<_>>>()?;
                let started = Instant::now();
                let streams = futures_util::future::join_all(
                    senders
                        .into_iter()
                        .zip(requests)
                        .map(|(s, r)| exchange(s, r, timeout)),
                )
                .await;
                let wall = started.elapsed();
                let mut level = summarise(args, n, round, wall, streams, rss_before);
                if let Some(metrics) = &args.metrics_url {
                    match scrape(metrics).await {
                        Ok(samples) => level.metrics = samples,
                        Err(e) => level.failures.push(format!("GET {metrics}: {e}")),
                    }
                }
                all_ok &= level.failures.is_empty();
                report(args, &level)?;
            }
        }
        Ok(())
    })?;
    Ok(all_ok)
}

/// Request `n`'s body in `round`: greedy, `max_tokens`, `ignore_eos`, usage
/// in the last chunk.
fn chat_body(args: &Args, system: Option<&str>, n: usize, round: usize) -> Bytes {
    let question = QUESTIONS[n % QUESTIONS.len()];
    let user = if args.distinct {
        format!("Request {round}.{n}: {question}")
    } else {
        question.to_string()
    };
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.push(serde_json::json!({"role": "user", "content": user}));
    let body = serde_json::json!({
        "model": args.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    });
    Bytes::from(body.to_string())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One HTTP/1.1 connection of its own per request.
async fn connect(url: &Uri) -> std::io::Result<Sender> {
    let authority = url
        .authority()
        .ok_or_else(|| std::io::Error::other("URL has no host"))?;
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

fn request(url: &Uri, body: Bytes) -> std::io::Result<Request<Full<Bytes>>> {
    let host = url.authority().map(|a| a.as_str()).unwrap_or("127.0.0.1");
    Request::post(url.path())
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(body))
        .map_err(std::io::Error::other)
}

/// Sends one request and reads its SSE stream to the end.
async fn exchange(
    mut sender: Sender,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Stream, String> {
    let started = Instant::now();
    let work = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            return Err(format!(
                "status {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        let mut stream = Stream::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut last_delta: Option<Instant> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let now = Instant::now();
            // CRLF or LF line ends alike.
            pending.extend(data.iter().filter(|b| **b != b'\r'));
            // Events end with a blank line; handle every complete one.
            while let Some(end) = memchr::memmem::find(&pending, b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                on_event(&event, now, started, &mut stream, &mut last_delta)?;
            }
        }
        if !pending.iter().all(u8::is_ascii_whitespace) {
            on_event(
                &pending,
                Instant::now(),
                started,
                &mut stream,
                &mut last_delta,
            )?;
        }
        Ok(stream)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no end after {} s", timeout.as_secs()))?
}

/// One SSE event: a content delta, the usage chunk, an error, or `[DONE]`.
fn on_event(
    event: &[u8],
    now: Instant,
    started: Instant,
    stream: &mut Stream,
    last_delta: &mut Option<Instant>,
) -> Result<(), String> {
    let text = String::from_utf8_lossy(event);
    for line in text.lines() {
        // llama-server reports a failure mid-stream as an `error:` field.
        if let Some(error) = line.strip_prefix("error:") {
            return Err(format!("error event: {}", error.trim()));
        }
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            stream.done = true;
            continue;
        }
        let chunk: serde_json::Value =
            serde_json::from_str(data).map_err(|e| format!("not JSON ({e}): {data}"))?;
        if let Some(error) = chunk.get("error") {
            return Err(format!("error event: {error}"));
        }
        let choices = chunk.get("choices").and_then(|c| c.as_array());
        for choice in choices.into_iter().flatten() {
            let content = choice.pointer("/delta/content").and_then(|c| c.as_str());
            if content.is_some_and(|c| !c.is_empty()) {
                stream.deltas += 1;
                match last_delta.replace(now) {
                    Some(before) => stream.gaps.push(now - before),
                    None => stream.ttft = Some(now - started),
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(|r| r.as_str()) {
                stream.finish_reason = Some(reason.to_string());
            }
        }
        let number = |pointer: &str| chunk.pointer(pointer).and_then(|v| v.as_u64());
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            stream.completion_tokens = number("/usage/completion_tokens");
            stream.prompt_tokens = number("/usage/prompt_tokens");
            stream.cached_tokens = number("/usage/prompt_tokens_details/cached_tokens");
        }
        if chunk.get("timings").is_some() {
            stream.prompt_n = number("/timings/prompt_n");
            stream.cache_n = number("/timings/cache_n");
        }
    }
    Ok(())
}

fn summarise<'a>(
    args: &'a Args,
    n: usize,
    round: usize,
    wall: Duration,
    streams: Vec<Result<Stream, String>>,
    rss_before: Option<u64>,
) -> Level<'a> {
    let mut failures = Vec::new();
    let (mut ttft, mut gaps) = (Vec::new(), Vec::new());
    let (mut completion, mut prompt, mut deltas) = (0, 0, 0);
    let sum = |field: fn(&Stream) -> Option<u64>, ok: &[&Stream]| -> Option<u64> {
        ok.iter()
            .filter_map(|s| field(s))
            .fold(None, |acc, v| Some(acc.unwrap_or(0) + v))
    };
    let mut ok = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                failures.push(format!("request {i}: {e}"));
                continue;
            }
        };
        match stream.completion_tokens {
            None => failures.push(format!("request {i}: no usage in the stream")),
            Some(t) if t < args.max_tokens => failures.push(format!(
                "request {i}: {t} completion tokens of {} asked (finish_reason {:?})",
                args.max_tokens, stream.finish_reason
            )),
            Some(_) => {}
        }
        if !stream.done {
            failures.push(format!("request {i}: no data: [DONE]"));
        }
        completion += stream.completion_tokens.unwrap_or(0);
        prompt += stream.prompt_tokens.unwrap_or(0);
        deltas += stream.deltas;
        ttft.extend(stream.ttft);
        gaps.extend_from_slice(&stream.gaps);
        ok.push(stream);
    }
    let rss = |key| args.pid.and_then(|p| proc_status_kib(p, key));
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    Level {
        label: &args.label,
        scenario: &args.scenario,
        concurrency: n,
        round,
        max_tokens: args.max_tokens,
        wall_s: wall.as_secs_f64(),
        completion_tokens: completion,
        prompt_tokens: prompt,
        tok_s: completion as f64 / wall.as_secs_f64(),
        deltas,
        ttft_ms: percentiles(&mut ttft),
        itl_ms: percentiles(&mut gaps),
        cached_tokens: sum(|s| s.cached_tokens, &ok),
        prompt_n: sum(|s| s.prompt_n, &ok),
        cache_n: sum(|s| s.cache_n, &ok),
        rss_before_mib: mib(rss_before),
        rss_after_mib: mib(rss("VmRSS:")),
        hwm_mib: mib(rss("VmHWM:")),
        metrics: BTreeMap::new(),
        failures,
    }
}

/// GETs a Prometheus text page and keeps the samples named in [`METRIC_WORDS`].
async fn scrape(url: &str) -> std::io::Result<BTreeMap<String, f64>> {
    let url: Uri = url.parse().map_err(std::io::Error::other)?;
    let mut sender = connect(&url).await?;
    let host = url.authority().map(|a| a.as_str()).unwrap_or("127.0.0.1");
    let request = Request::get(url.path())
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    if !status.is_success() {
        return Err(std::io::Error::other(format!("status {status}")));
    }
    Ok(prompt_samples(&String::from_utf8_lossy(&body)))
}

/// The samples of a Prometheus text page whose names hold one of [`METRIC_WORDS`].
fn prompt_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or("").to_ascii_lowercase();
            METRIC_WORDS.iter().any(|w| name.contains(w))
        })
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

/// Nearest-rank p50 / p90 / p99 in ms (0 when empty).
fn percentiles(values: &mut [Duration]) -> Millis {
    values.sort_unstable();
    let at = |q: f64| {
        if values.is_empty() {
            return 0.0;
        }
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1].as_secs_f64() * 1000.0
    };
    Millis {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn report(args: &Args, level: &Level) -> std::io::Result<()> {
    let line = serde_json::to_string(level).map_err(std::io::Error::other)?;
    writeln!(std::io::stdout().lock(), "{line}")?;
    if let Some(path) = &args.json {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{line}")?;
    }
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{} {} N={} round {}: {:.1} tok/s ({} tokens in {:.2} s), TTFT p50 {:.0} ms, ITL p50 {:.1} ms, prompt {} tokens, hwm {:.0} MiB",
        level.label,
        level.scenario,
        level.concurrency,
        level.round,
        level.tok_s,
        level.completion_tokens,
        level.wall_s,
        level.ttft_ms.p50,
        level.itl_ms.p50,
        level.prompt_tokens,
        level.hwm_mib.unwrap_or(0.0),
    )?;
    for failure in level.failures.iter().take(10) {
        writeln!(err, "  FAILED {failure}")?;
    }
    if level.failures.len() > 10 {
        writeln!(err, "  ... and {} more failures", level.failures.len() - 10)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_text_deltas_usage_and_timings() {
        let started = Instant::now();
        let (mut stream, mut last) = (Stream::default(), None);
        let events = [
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\" there\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":16}},\"timings\":{\"prompt_n\":14,\"cache_n\":16}}\n\n",
            "data: [DONE]\n\n",
        ];
        for e in events {
            on_event(
                e.as_bytes(),
                Instant::now(),
                started,
                &mut stream,
                &mut last,
            )
            .unwrap();
        }
        assert_eq!(stream.deltas, 2);
        assert_eq!(stream.gaps.len(), 1);
        assert!(stream.ttft.is_some());
        assert_eq!(stream.completion_tokens, Some(2));
        assert_eq!(stream.prompt_tokens, Some(30));
        assert_eq!(stream.cached_tokens, Some(16));
        assert_eq!((stream.prompt_n, stream.cache_n), (Some(14), Some(16)));
        assert_eq!(stream.finish_reason.as_deref(), Some("length"));
        assert!(stream.done);
    }

    #[test]
    fn an_error_event_fails_the_stream() {
        let (mut stream, mut last) = (Stream::default(), None);
        let event = b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
        assert!(on_event(
            event,
            Instant::now(),
            Instant::now(),
            &mut stream,
            &mut last
        )
        .is_err());
    }

    #[test]
    fn prompt_samples_keep_prefill_and_prefix_counters_only() {
        let text = "# HELP llamacpp:prompt_tokens_total x\nllamacpp:prompt_tokens_total 120\n\
            llamacpp:prompt_tokens_cached_total 40\nllamacpp:tokens_predicted_total 64\n\
            vllm:prefix_cache_hits_total{model=\"smol\"} 7\nsluice_engine_kv_blocks{state=\"used\"} 3\n";
        let samples = prompt_samples(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples["llamacpp:prompt_tokens_total"], 120.0);
        assert_eq!(samples["vllm:prefix_cache_hits_total{model=\"smol\"}"], 7.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&mut values);
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        assert_eq!(percentiles(&mut []).p50, 0.0);
    }
}
