//! What a run measured: counters, percentiles, CPU and memory of the targets.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Live counters of a run, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Successful requests so far (warm-up included).
    pub ok: AtomicU64,
    /// Failed requests so far (warm-up included).
    pub errors: AtomicU64,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct LoadReport {
    /// Completed requests with a 2xx status in the measured window.
    pub ok: u64,
    /// Failed requests (transport errors, timeouts or non-2xx) in the measured window.
    pub errors: u64,
    /// Errors in the measured window by kind (`status_429`, `transport`, ...).
    pub error_kinds: BTreeMap<String, u64>,
    /// Successful requests over the whole run, warm-up included: the
    /// denominator for CPU time sampled around the whole run.
    pub all_ok: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Full request latency, microseconds (from when due, in an open loop).
    pub latency_us: Histogram<u64>,
    /// Time to the first body byte, microseconds.
    pub first_byte_us: Histogram<u64>,
    /// Time to the first token: first SSE event with content, else first byte.
    pub ttft_us: Histogram<u64>,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn requests_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0..=1), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Time to first byte at quantile `q`, in milliseconds.
    pub fn first_byte_ms(&self, q: f64) -> f64 {
        self.first_byte_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Time to first token at quantile `q`, in milliseconds.
    pub fn ttft_ms(&self, q: f64) -> f64 {
        self.ttft_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub(super) fn empty(elapsed: Duration) -> std::io::Result<LoadReport> {
        Ok(LoadReport {
            ok: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            all_ok: 0,
            elapsed,
            latency_us: histogram()?,
            first_byte_us: histogram()?,
            ttft_us: histogram()?,
        })
    }

    pub(super) fn merge(&mut self, part: LoadReport) -> std::io::Result<()> {
        self.ok += part.ok;
        self.errors += part.errors;
        self.all_ok += part.all_ok;
        for (kind, n) in part.error_kinds {
            *self.error_kinds.entry(kind).or_default() += n;
        }
        for (mine, theirs) in [
            (&mut self.latency_us, &part.latency_us),
            (&mut self.first_byte_us, &part.first_byte_us),
            (&mut self.ttft_us, &part.ttft_us),
        ] {
            mine.add(theirs).map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// Percentiles of one histogram in milliseconds, for JSON output.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value seen.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Reads `h` (microseconds) as milliseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// 1 µs .. 60 s at 3 significant digits.
fn histogram() -> std::io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(std::io::Error::other)
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn process_cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 10))
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn process_rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc status"))
}
