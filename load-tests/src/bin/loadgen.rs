//! `loadgen`: drive the same request at several targets, one after another in
//! one run, and print a markdown table with each target's ratio to the first.

use bytes::Bytes;
use clap::Parser;
use sluice_load_tests::loadgen::{process_cpu_time, run, LoadSpec};
use std::io::Write;
use std::time::Duration;

/// Closed-loop HTTP/1.1 keep-alive load generator.
#[derive(Parser)]
struct Args {
    /// `name=url` pairs; the first is the baseline for ratios.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// JSON request body (POST); empty sends GET.
    #[arg(long, default_value = "")]
    body: String,
    /// Extra `name: value` headers.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds per target.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Warm-up seconds per target.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// `name=PID`: report that process's CPU time per request for target `name`.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<String>,
    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let headers = args
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| target | req/s | ratio | p50 ms | p90 ms | p99 ms | p99.9 ms | TTFB p50 ms | CPU µs/req | errors |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut baseline: Option<(f64, f64, f64)> = None;
    let mut added = Vec::new();
    for target in &args.targets {
        let (name, url) = target.split_once('=').ok_or_else(|| {
            std::io::Error::other(format!("--target wants name=url, got {target}"))
        })?;
        let spec = LoadSpec {
            url: url.parse().map_err(std::io::Error::other)?,
            body: Bytes::from(args.body.clone()),
            headers: headers.clone(),
            connections: args.connections,
            duration: Duration::from_secs(args.duration_s),
            warmup: Duration::from_secs(args.warmup_s),
        };
        let pid = args
            .cpu_pids
            .iter()
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| *n == name)
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        let cpu_before = pid.map(process_cpu_time).transpose()?;
        let report = runtime.block_on(run(&spec))?;
        let cpu_per_request = match (pid, cpu_before) {
            (Some(pid), Some(before)) => {
                let used = process_cpu_time(pid)?.saturating_sub(before);
                format!(
                    "{:.1}",
                    used.as_secs_f64() * 1e6 / report.all_ok.max(1) as f64
                )
            }
            _ => "-".to_string(),
        };
        let rps = report.requests_per_s();
        let (p50, p99) = (report.latency_ms(0.5), report.latency_ms(0.99));
        let ratio = baseline.map_or(1.0, |(b, _, _)| rps / b);
        if let Some((_, b50, b99)) = baseline {
            added.push(format!(
                "{name}: added latency p50 {:+.3} ms, p99 {:+.3} ms over {}",
                p50 - b50,
                p99 - b99,
                args.targets[0].split('=').next().unwrap_or("baseline")
            ));
        } else {
            baseline = Some((rps, p50, p99));
        }
        writeln!(
            out,
            "| {name} | {rps:.0} | {ratio:.2} | {p50:.3} | {:.3} | {p99:.3} | {:.3} | {:.3} | {cpu_per_request} | {} |",
            report.latency_ms(0.9),
            report.latency_ms(0.999),
            report.first_byte_ms(0.5),
            report.errors
        )?;
        out.flush()?;
    }
    for line in added {
        writeln!(out, "\n{line}")?;
    }
    Ok(())
}
