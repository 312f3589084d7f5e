//! Closed-loop HTTP load: N keep-alive connections, each sending the next
//! request as soon as the previous response has fully arrived.
//!
//! Hand-written over hyper's connection API rather than wrapping wrk, because
//! the comparison we publish needs both targets driven by the same client in
//! the same process and run, and time-to-first-byte for streams, which wrk
//! does not report.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

/// What to send, how hard, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Full URL, `http://host:port/path`.
    pub url: Uri,
    /// POST body (a GET is sent when empty).
    pub body: Bytes,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// Measured run time (after warm-up).
    pub duration: Duration,
    /// Unmeasured warm-up time.
    pub warmup: Duration,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct LoadReport {
    /// Completed requests with a 2xx status in the measured window.
    pub ok: u64,
    /// Failed requests (transport errors or non-2xx) in the measured window.
    pub errors: u64,
    /// Successful requests over the whole run, warm-up included: the
    /// denominator for CPU time sampled around the whole run.
    pub all_ok: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Full request latency, microseconds.
    pub latency_us: Histogram<u64>,
    /// Time to the first body byte, microseconds.
    pub first_byte_us: Histogram<u64>,
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
}

/// 1 µs .. 60 s at 3 significant digits.
fn histogram() -> std::io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(std::io::Error::other)
}

fn empty_report(elapsed: Duration) -> std::io::Result<LoadReport> {
    Ok(LoadReport {
        ok: 0,
        errors: 0,
        all_ok: 0,
        elapsed,
        latency_us: histogram()?,
        first_byte_us: histogram()?,
    })
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

/// Runs `spec` and returns its report.
pub async fn run(spec: &LoadSpec) -> std::io::Result<LoadReport> {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let stop_at = measure_from + spec.duration;
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            connection_loop(&spec, measure_from, stop_at).await
        }));
    }
    let mut report = empty_report(spec.duration)?;
    for task in tasks {
        let part = task.await.map_err(std::io::Error::other)??;
        report.ok += part.ok;
        report.errors += part.errors;
        report.all_ok += part.all_ok;
        report
            .latency_us
            .add(&part.latency_us)
            .map_err(std::io::Error::other)?;
        report
            .first_byte_us
            .add(&part.first_byte_us)
            .map_err(std::io::Error::other)?;
    }
    Ok(report)
}

async fn connect(
    url: &Uri,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let authority = url
        .authority()
        .ok_or_else(|| std::io::Error::other("URL has no host"))?
        .as_str();
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn connection_loop(
    spec: &LoadSpec,
    measure_from: Instant,
    stop_at: Instant,
) -> std::io::Result<LoadReport> {
    let mut part = empty_report(spec.duration)?;
    let mut sender = connect(&spec.url).await?;
    let host = spec
        .url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let path = spec
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    while Instant::now() < stop_at {
        let mut builder = Request::builder()
            .method(if spec.body.is_empty() { "GET" } else { "POST" })
            .uri(path.as_str())
            .header("host", host.as_str())
            .header("content-type", "application/json");
        for (k, v) in &spec.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(spec.body.clone()))
            .map_err(std::io::Error::other)?;
        let sent = Instant::now();
        let outcome = exchange(&mut sender, request, sent).await;
        let done = Instant::now();
        if outcome.is_ok() {
            part.all_ok += 1;
        }
        if sent < measure_from || done > stop_at {
            if outcome.is_err() {
                sender = connect(&spec.url).await?;
            }
            continue;
        }
        match outcome {
            Ok(first_byte) => {
                part.ok += 1;
                let _ = part
                    .latency_us
                    .record((done - sent).as_micros().max(1) as u64);
                let _ = part
                    .first_byte_us
                    .record(first_byte.as_micros().max(1) as u64);
            }
            Err(_) => {
                part.errors += 1;
                sender = connect(&spec.url).await?;
            }
        }
    }
    Ok(part)
}

/// Sends one request and drains the response; returns the time to first byte.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    sent: Instant,
) -> Result<Duration, std::io::Error> {
    sender.ready().await.map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let success = response.status().is_success();
    let mut body = response.into_body();
    let mut first_byte = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        if first_byte.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first_byte = Some(sent.elapsed());
        }
    }
    if !success {
        return Err(std::io::Error::other("non-2xx status"));
    }
    Ok(first_byte.unwrap_or_else(|| sent.elapsed()))
}
