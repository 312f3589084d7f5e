//! `loadgen`: drive the same requests at several targets, one after another
//! in one run, and print a markdown table with each target's throughput ratio
//! and added latency against chosen baselines; optionally append one JSON
//! line per target for scripts (`--json`). `--hold-streams N` instead holds N
//! streams open through the first target and reports a process's memory.

use bytes::Bytes;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sluice_load_tests::loadgen::{
    hold_streams, process_cpu_time, process_rss_kib, run_with_progress, LoadReport, LoadSpec, Pace,
    Percentiles, Progress, Protocol, RequestKind,
};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// HTTP load generator: closed or open loop, HTTP/1.1 or h2c.
#[derive(Parser)]
struct Args {
    /// `name=url` pairs, run in order.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// JSON request body (POST); empty sends GET.
    #[arg(long, default_value = "")]
    body: String,
    /// Extra `name: value` headers.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A mixed workload: a file of JSON lines
    /// `{"weight": 3, "headers": {"authorization": "Bearer ..."}, "body": {...}}`;
    /// replaces `--body`.
    #[arg(long)]
    mix: Option<std::path::PathBuf>,
    /// Workers (HTTP/1.1: one connection each; each has one request in flight).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Open loop at this many requests per second (0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Speak h2c (HTTP/2 with prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    h2: bool,
    /// With `--h2`, connections the workers share.
    #[arg(long, default_value_t = 4)]
    h2_connections: usize,
    /// Measured seconds per target.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Warm-up seconds per target.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// A request not done after this many seconds counts as an error.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// `name=PID`: report that process's CPU time per request and RSS for target `name`.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<String>,
    /// Throughput ratios are against this target (default: the first).
    #[arg(long)]
    ratio_to: Option<String>,
    /// Added latency is over this target (default: the first).
    #[arg(long)]
    added_over: Option<String>,
    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Append one JSON line per target to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A label for this run in the JSON lines.
    #[arg(long, default_value = "")]
    scenario: String,
    /// Before each target, wait (up to 10 s) until every `--cpu-pid` process
    /// is idle, so one target's leftover work (a ledger writer draining)
    /// does not run during the next one's measurement.
    #[arg(long)]
    settle: bool,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Hold this many streams open through the first target instead of a
    /// timed run (send a streaming body with a long `x-mock-chunk-delay-ms`).
    #[arg(long, default_value_t = 0)]
    hold_streams: usize,
    /// Seconds to hold the streams once open.
    #[arg(long, default_value_t = 5.0)]
    hold_s: f64,
    /// With `--h2`, streams per connection while holding.
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// Streams opened per second while building up to `--hold-streams`.
    #[arg(long, default_value_t = 2000.0)]
    hold_open_rate: f64,
    /// Process whose RSS to read before, during and after holding.
    #[arg(long)]
    rss_pid: Option<u32>,
}

/// One target's result, as a JSON line.
#[derive(Serialize)]
struct JsonResult<'a> {
    scenario: &'a str,
    target: &'a str,
    url: &'a str,
    pace: &'static str,
    rate: Option<f64>,
    connections: usize,
    protocol: Protocol,
    duration_s: f64,
    ok: u64,
    errors: u64,
    error_kinds: &'a BTreeMap<String, u64>,
    rps: f64,
    latency_ms: Percentiles,
    first_byte_ms: Percentiles,
    ttft_ms: Percentiles,
    cpu_us_per_req: Option<f64>,
    rss_kib: Option<u64>,
}

/// One line of a `--mix` file.
#[derive(serde::Deserialize)]
struct MixLine {
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
}

fn one() -> u32 {
    1
}

fn read_mix(path: &std::path::Path) -> std::io::Result<Vec<RequestKind>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let m: MixLine = serde_json::from_str(line).map_err(std::io::Error::other)?;
            Ok(RequestKind {
                body: Bytes::from(m.body.to_string()),
                headers: m.headers.into_iter().collect(),
                weight: m.weight,
            })
        })
        .collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// A bar over one target's run, fed from the live counters by a thread.
struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    fn start(name: &str, total: Duration, progress: Arc<Progress>, visible: bool) -> Bar {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), target);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>18} [{bar:30}] {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = visible.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut last = (start, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let ok = progress.ok.load(Ordering::Relaxed);
                    let errors = progress.errors.load(Ordering::Relaxed);
                    let now = Instant::now();
                    let rate = (ok - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
                    last = (now, ok);
                    bar.set_position(start.elapsed().as_millis() as u64);
                    bar.set_message(format!("{ok} ok, {errors} errors, {rate:.0} req/s"));
                }
                bar.finish_and_clear();
            })
        });
        Bar { stop, thread }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let headers = args
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mix = match &args.mix {
        Some(path) => read_mix(path)?,
        None => Vec::new(),
    };
    let targets: Vec<(&str, &str)> = args
        .targets
        .iter()
        .map(|t| {
            t.split_once('=')
                .ok_or_else(|| std::io::Error::other(format!("--target wants name=url, got {t}")))
        })
        .collect::<Result<_, _>>()?;
    let spec_for = |url: &str| -> std::io::Result<LoadSpec> {
        Ok(LoadSpec {
            url: url.parse().map_err(std::io::Error::other)?,
            body: Bytes::from(args.body.clone()),
            headers: headers.clone(),
            connections: args.connections,
            duration: secs(args.duration_s),
            warmup: secs(args.warmup_s),
            pace: if args.rate > 0.0 {
                Pace::Open {
                    rate_per_s: args.rate,
                }
            } else {
                Pace::Closed
            },
            protocol: if args.h2 {
                Protocol::H2c
            } else {
                Protocol::Http1
            },
            h2_connections: args.h2_connections,
            mix: mix.clone(),
            timeout: secs(args.timeout_s),
        })
    };
    if args.hold_streams > 0 {
        let (name, url) = targets[0];
        return hold(&args, &runtime, name, spec_for(url)?);
    }

    let show_bar = !args.no_progress && std::io::stderr().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut reports: Vec<(&str, LoadReport)> = Vec::new();
    let mut json_lines = Vec::new();
    writeln!(
        out,
        "| target | req/s | ratio | p50 ms | p90 ms | p99 ms | p99.9 ms | TTFT p50 ms | TTFT p99 ms | CPU µs/req | RSS MiB | errors |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    let ratio_to = args.ratio_to.as_deref().unwrap_or(targets[0].0);
    for &(name, url) in &targets {
        let spec = spec_for(url)?;
        let pid = args
            .cpu_pids
            .iter()
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| *n == name)
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if args.settle {
            settle(&args.cpu_pids);
        }
        let cpu_before = pid.map(process_cpu_time).transpose()?;
        let progress = Arc::new(Progress::default());
        let bar = Bar::start(
            name,
            spec.warmup + spec.duration,
            progress.clone(),
            show_bar,
        );
        let report = runtime.block_on(run_with_progress(&spec, &progress));
        bar.finish();
        let report = report?;
        let cpu_us = match (pid, cpu_before) {
            (Some(pid), Some(before)) => {
                let used = process_cpu_time(pid)?.saturating_sub(before);
                Some(used.as_secs_f64() * 1e6 / report.all_ok.max(1) as f64)
            }
            _ => None,
        };
        let rss_kib = pid.and_then(|p| process_rss_kib(p).ok());
        let rps = report.requests_per_s();
        let ratio = reports
            .iter()
            .find(|(n, _)| *n == ratio_to)
            .map_or(1.0, |(_, b)| rps / b.requests_per_s().max(1e-9));
        writeln!(
            out,
            "| {name} | {rps:.0} | {ratio:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            report.latency_ms(0.5),
            report.latency_ms(0.9),
            report.latency_ms(0.99),
            report.latency_ms(0.999),
            report.ttft_ms(0.5),
            report.ttft_ms(0.99),
            cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
            rss_kib.map_or("-".into(), |r| format!("{:.1}", r as f64 / 1024.0)),
            report.errors
        )?;
        out.flush()?;
        let line = JsonResult {
            scenario: &args.scenario,
            target: name,
            url,
            pace: if args.rate > 0.0 { "open" } else { "closed" },
            rate: (args.rate > 0.0).then_some(args.rate),
            connections: args.connections,
            protocol: spec.protocol,
            duration_s: args.duration_s,
            ok: report.ok,
            errors: report.errors,
            error_kinds: &report.error_kinds,
            rps,
            latency_ms: Percentiles::of(&report.latency_us),
            first_byte_ms: Percentiles::of(&report.first_byte_us),
            ttft_ms: Percentiles::of(&report.ttft_us),
            cpu_us_per_req: cpu_us,
            rss_kib,
        };
        json_lines.push(serde_json::to_string(&line).map_err(std::io::Error::other)?);
        reports.push((name, report));
    }
    writeln!(out)?;
    let find = |n: &str| reports.iter().find(|(name, _)| *name == n).map(|(_, r)| r);
    if let Some(base) = find(ratio_to) {
        for (name, r) in reports.iter().filter(|(n, _)| *n != ratio_to) {
            writeln!(
                out,
                "- throughput {name} / {ratio_to} = {:.2}",
                r.requests_per_s() / base.requests_per_s().max(1e-9)
            )?;
        }
    }
    let over = args.added_over.as_deref().unwrap_or(targets[0].0);
    if let Some(base) = find(over) {
        for (name, r) in reports.iter().filter(|(n, _)| *n != over) {
            writeln!(
                out,
                "- added over {over}: {name} p50 {:+.3} ms, p99 {:+.3} ms, TTFT p50 {:+.3} ms, TTFT p99 {:+.3} ms",
                r.latency_ms(0.5) - base.latency_ms(0.5),
                r.latency_ms(0.99) - base.latency_ms(0.99),
                r.ttft_ms(0.5) - base.ttft_ms(0.5),
                r.ttft_ms(0.99) - base.ttft_ms(0.99),
            )?;
        }
    }
    if let Some(path) = &args.json {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for line in json_lines {
            writeln!(file, "{line}")?;
        }
    }
    Ok(())
}

/// Waits until the processes named in `name=PID` pairs use under 5% of a
/// core over 300 ms, for at most 10 s.
fn settle(pids: &[String]) {
    let pids: Vec<u32> = pids
        .iter()
        .filter_map(|p| p.split_once('=')?.1.parse().ok())
        .collect();
    let total = || -> Duration { pids.iter().filter_map(|p| process_cpu_time(*p).ok()).sum() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let before = total();
        std::thread::sleep(Duration::from_millis(300));
        if total().saturating_sub(before) <= Duration::from_millis(15) {
            return;
        }
    }
}

/// What `--hold-streams` reports, as a JSON line.
#[derive(Serialize)]
struct HoldResult<'a> {
    scenario: &'a str,
    target: &'a str,
    protocol: Protocol,
    #[serde(flatten)]
    streams: sluice_load_tests::loadgen::HoldReport,
    rss_before_kib: Option<u64>,
    rss_during_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    kib_per_stream: Option<f64>,
}

fn hold(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    spec: LoadSpec,
) -> std::io::Result<()> {
    let rss = || args.rss_pid.and_then(|p| process_rss_kib(p).ok());
    let before = rss();
    let hold_for = secs(args.hold_s);
    let during_peak = Arc::new(std::sync::Mutex::new(None::<u64>));
    let peak = during_peak.clone();
    let pid = args.rss_pid;
    let report = runtime.block_on(hold_streams(
        &spec,
        args.hold_streams,
        args.streams_per_connection,
        args.hold_open_rate,
        Duration::from_secs(120),
        |open| async move {
            let _ = writeln!(
                std::io::stderr(),
                "{open} streams open; holding {:.1} s",
                hold_for.as_secs_f64()
            );
            let until = Instant::now() + hold_for;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(kib) = pid.and_then(|p| process_rss_kib(p).ok()) {
                    if let Ok(mut m) = peak.lock() {
                        *m = Some(m.map_or(kib, |v: u64| v.max(kib)));
                    }
                }
            }
        },
    ))?;
    std::thread::sleep(Duration::from_secs(1));
    let after = rss();
    let during = during_peak.lock().ok().and_then(|m| *m);
    let per_stream = match (before, during) {
        (Some(b), Some(d)) if report.open > 0 => {
            Some(d.saturating_sub(b) as f64 / report.open as f64)
        }
        _ => None,
    };
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| target | streams asked | open | failed | open all s | RSS before MiB | RSS during MiB | RSS after MiB | KiB / stream |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {name} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
        report.requested,
        report.open,
        report.failed,
        report.open_all_s,
        mib(before),
        mib(during),
        mib(after),
        per_stream.map_or("-".into(), |k| format!("{k:.1}")),
    )?;
    if let Some(path) = &args.json {
        let line = HoldResult {
            scenario: &args.scenario,
            target: name,
            protocol: spec.protocol,
            streams: report,
            rss_before_kib: before,
            rss_during_kib: during,
            rss_after_kib: after,
            kib_per_stream: per_stream,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(
            file,
            "{}",
            serde_json::to_string(&line).map_err(std::io::Error::other)?
        )?;
    }
    Ok(())
}
