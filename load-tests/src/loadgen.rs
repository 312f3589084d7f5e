//! HTTP load, closed-loop or open-loop, over HTTP/1.1 keep-alive or h2c.
//!
//! - **Closed loop** ([`Pace::Closed`]): N workers, each sending its next
//!   request as soon as the previous response has fully arrived. Measures the
//!   most a target can serve; latency under it is mostly queueing.
//! - **Open loop** ([`Pace::Open`]): requests are due at a fixed rate whatever
//!   the target does (request `i` at `start + i / rate`, dealt round-robin to
//!   the workers, as wrk2 does), and each latency is measured from the time
//!   the request was *due*, not from when a free connection sent it. A target
//!   that stalls is charged for every request that waited behind the stall,
//!   so the percentiles are free of coordinated omission. (A worker that was
//!   idle and woke late from its timer is charged from the actual send
//!   instead: tokio's timer ticks in whole milliseconds, and that slack is
//!   the generator's, not the target's.)
//!
//! Each response's time to first byte and time to first token (the first SSE
//! event carrying non-empty `content`, or the first byte of a body that has
//! none) are recorded beside the full latency. [`hold_streams`] opens many
//! streams and keeps them open, for memory per stream.
//!
//! Hand-written over hyper's connection API rather than wrapping wrk, because
//! the comparison we publish needs every target driven by the same client in
//! the same process and run, h2c, and time to first token, which wrk lacks.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod hold;
mod report;
mod tls;

pub use hold::{hold_streams, HoldReport};
pub use report::{process_cpu_time, process_rss_kib, LoadReport, Percentiles, Progress};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each worker sends as soon as its previous response is complete.
    Closed,
    /// Requests are due at this many per second in total, measured from when due.
    Open {
        /// Requests per second, over all workers.
        rate_per_s: f64,
    },
}

/// The wire protocol to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 keep-alive: one connection per worker.
    Http1,
    /// HTTP/2: over cleartext with prior knowledge for `http://`, by ALPN
    /// for `https://`; workers share connections.
    H2c,
}

/// One kind of request in a mixed workload.
#[derive(Debug, Clone)]
pub struct RequestKind {
    /// POST body (a GET is sent when empty).
    pub body: Bytes,
    /// Extra request headers, on top of [`LoadSpec::headers`].
    pub headers: Vec<(String, String)>,
    /// Share of the requests, relative to the other kinds' weights.
    pub weight: u32,
}

/// What to send, how hard, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Full URL, `http://host:port/path` or `https://...` (TLS, the
    /// server's certificate not verified: this measures, it does not trust).
    pub url: Uri,
    /// POST body (a GET is sent when empty); used when `mix` is empty.
    pub body: Bytes,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Workers: with HTTP/1.1 one connection each; each has at most one
    /// request in flight.
    pub connections: usize,
    /// Measured run time (after warm-up).
    pub duration: Duration,
    /// Unmeasured warm-up time.
    pub warmup: Duration,
    /// Closed or open loop.
    pub pace: Pace,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// With h2c, how many connections the workers share (round-robin).
    pub h2_connections: usize,
    /// A mixed workload: request `i` is of the kind its index falls on by
    /// weight (deterministic, so every target gets the same sequence).
    pub mix: Vec<RequestKind>,
    /// A request not complete after this long counts as an error.
    pub timeout: Duration,
}

impl LoadSpec {
    /// A closed-loop HTTP/1.1 spec with the defaults for everything else.
    pub fn closed(url: Uri, body: Bytes, connections: usize, duration: Duration) -> Self {
        LoadSpec {
            url,
            body,
            headers: Vec::new(),
            connections,
            duration,
            warmup: Duration::from_secs(1),
            pace: Pace::Closed,
            protocol: Protocol::Http1,
            h2_connections: 1,
            mix: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A request sender on one connection, either protocol.
#[derive(Clone)]
enum Sender {
    Http1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// The server closed the connection (`connection: close`): the worker
    /// opens a new one before its next request.
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.try_lock().is_ok_and(|s| s.is_closed()),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// A connection to `url`'s authority: plain TCP for `http://`, TLS for
/// `https://` (ALPN `h2` with [`Protocol::H2c`], else `http/1.1`).
async fn connect(url: &Uri, protocol: Protocol) -> std::io::Result<Sender> {
    let authority = url
        .authority()
        .ok_or_else(|| std::io::Error::other("URL has no host"))?;
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    if url.scheme_str() == Some("https") {
        let tls = tls::connect(stream, authority.host(), protocol).await?;
        handshake(TokioIo::new(tls), protocol).await
    } else {
        handshake(TokioIo::new(stream), protocol).await
    }
}

async fn handshake<T>(io: TokioIo<T>, protocol: Protocol) -> std::io::Result<Sender>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Sender::Http1(Arc::new(tokio::sync::Mutex::new(sender))))
        }
        Protocol::H2c => {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        }
    }
}

/// The request kinds as a table of prepared requests and a weight wheel.
struct Requests {
    kinds: Vec<(Bytes, Vec<(http::HeaderName, http::HeaderValue)>)>,
    /// Kind index for each slot of the wheel (one slot per unit of weight).
    wheel: Vec<usize>,
    host: String,
    path: String,
}

impl Requests {
    fn new(spec: &LoadSpec) -> std::io::Result<Requests> {
        let single = [RequestKind {
            body: spec.body.clone(),
            headers: Vec::new(),
            weight: 1,
        }];
        let kinds_in: &[RequestKind] = if spec.mix.is_empty() {
            &single
        } else {
            &spec.mix
        };
        let mut kinds = Vec::new();
        let mut wheel = Vec::new();
        for (i, kind) in kinds_in.iter().enumerate() {
            let mut headers = Vec::new();
            for (k, v) in spec.headers.iter().chain(&kind.headers) {
                headers.push((
                    http::HeaderName::try_from(k.as_str()).map_err(std::io::Error::other)?,
                    http::HeaderValue::try_from(v.as_str()).map_err(std::io::Error::other)?,
                ));
            }
            kinds.push((kind.body.clone(), headers));
            wheel.extend(std::iter::repeat_n(i, kind.weight.max(1) as usize));
        }
        Ok(Requests {
            kinds,
            wheel,
            host: spec
                .url
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            path: spec
                .url
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        })
    }

    /// Request number `i` of the run.
    fn build(&self, i: u64, protocol: Protocol) -> std::io::Result<Request<Full<Bytes>>> {
        let kind = self.wheel[(i % self.wheel.len() as u64) as usize];
        let (body, headers) = &self.kinds[kind];
        let mut builder = Request::builder()
            .method(if body.is_empty() { "GET" } else { "POST" })
            .header("content-type", "application/json");
        builder = match protocol {
            Protocol::Http1 => builder
                .uri(self.path.as_str())
                .header("host", self.host.as_str()),
            Protocol::H2c => builder.uri(format!("http://{}{}", self.host, self.path)),
        };
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        builder
            .body(Full::new(body.clone()))
            .map_err(std::io::Error::other)
    }
}

/// Runs `spec` and returns its report; `progress` (if any) counts live.
pub async fn run(spec: &LoadSpec) -> std::io::Result<LoadReport> {
    run_with_progress(spec, &Arc::new(Progress::default())).await
}

/// [`run`], updating `progress` as requests complete.
pub async fn run_with_progress(
    spec: &LoadSpec,
    progress: &Arc<Progress>,
) -> std::io::Result<LoadReport> {
    let workers = spec.connections.max(1);
    let requests = Arc::new(Requests::new(spec)?);
    // h2c: the shared connections, opened up front.
    let mut shared = Vec::new();
    if spec.protocol == Protocol::H2c {
        for _ in 0..spec.h2_connections.max(1) {
            shared.push(connect(&spec.url, Protocol::H2c).await?);
        }
    }
    let start = Instant::now();
    let clock = Clock {
        start,
        measure_from: start + spec.warmup,
        stop_at: start + spec.warmup + spec.duration,
    };
    let run = Arc::new(RunState {
        spec: spec.clone(),
        requests,
        clock,
        progress: progress.clone(),
        next: AtomicU64::new(0),
        workers,
    });
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let run = run.clone();
        let sender = shared.get(worker % shared.len().max(1)).cloned();
        tasks.push(tokio::spawn(async move {
            worker_loop(&run, sender, worker).await
        }));
    }
    let mut report = LoadReport::empty(spec.duration)?;
    for task in tasks {
        report.merge(task.await.map_err(std::io::Error::other)??)?;
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
}

/// What every worker of one run shares.
struct RunState {
    spec: LoadSpec,
    requests: Arc<Requests>,
    clock: Clock,
    progress: Arc<Progress>,
    /// Closed loop: the number of the next request to send.
    next: AtomicU64,
    workers: usize,
}

async fn worker_loop(
    run: &RunState,
    mut sender: Option<Sender>,
    worker: usize,
) -> std::io::Result<LoadReport> {
    let RunState {
        spec,
        requests,
        clock,
        progress,
        next,
        workers,
    } = run;
    let mut part = LoadReport::empty(spec.duration)?;
    if sender.is_none() {
        sender = Some(connect(&spec.url, spec.protocol).await?);
    }
    let mut round: u64 = 0;
    loop {
        // Request number: the open loop deals the schedule round-robin over
        // workers; the closed loop numbers requests in the order they are
        // sent, so a mix holds its shares even when its kinds differ in speed.
        let (i, due) = match spec.pace {
            Pace::Closed => (next.fetch_add(1, Ordering::Relaxed), Instant::now()),
            Pace::Open { rate_per_s } => {
                let i = round * *workers as u64 + worker as u64;
                round += 1;
                let due = clock.start + Duration::from_secs_f64(i as f64 / rate_per_s.max(1e-3));
                (i, due)
            }
        };
        if due >= clock.stop_at {
            break;
        }
        // An open loop against a target slower than the rate falls ever
        // further behind. Past a grace period, requests still owed are not
        // sent but counted as errors, so a saturated target cannot stretch
        // the run or hide its backlog.
        if Instant::now() >= clock.stop_at + spec.duration.max(Duration::from_secs(2)) {
            if due >= clock.measure_from {
                part.errors += 1;
                *part.error_kinds.entry("not_sent".into()).or_default() += 1;
            }
            continue;
        }
        // A worker still busy with earlier requests when this one fell due is
        // the target's doing: charge it from `due`. A worker that was idle
        // sleeps until `due`, and the timer (1 ms ticks) may wake it late:
        // that delay is the load generator's, so charge from the actual send.
        let due = if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        let request = requests.build(i, spec.protocol)?;
        let outcome = match &sender {
            Some(s) => tokio::time::timeout(spec.timeout, exchange(s, request, due))
                .await
                .unwrap_or(Err(Failure::Timeout)),
            None => Err(Failure::Transport),
        };
        let done = Instant::now();
        match &outcome {
            Ok(_) => progress.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => progress.errors.fetch_add(1, Ordering::Relaxed),
        };
        // A broken or timed-out connection is replaced before the next request.
        if matches!(outcome, Err(Failure::Transport | Failure::Timeout))
            || sender.as_ref().is_none_or(Sender::is_closed)
        {
            sender = connect(&spec.url, spec.protocol).await.ok();
        }
        if outcome.is_ok() {
            part.all_ok += 1;
        }
        // Closed loop: only requests that started and ended in the window.
        // Open loop: every request due in the window, however late it ended
        // (dropping the slow ones would hide exactly what we measure).
        let counted = match spec.pace {
            Pace::Closed => due >= clock.measure_from && done <= clock.stop_at,
            Pace::Open { .. } => due >= clock.measure_from,
        };
        if !counted {
            continue;
        }
        match outcome {
            Ok(times) => {
                part.ok += 1;
                let us = |d: Duration| d.as_micros().max(1) as u64;
                let _ = part.latency_us.record(us(done - due));
                let _ = part.first_byte_us.record(us(times.first_byte));
                let _ = part.ttft_us.record(us(times.first_token));
            }
            Err(failure) => {
                part.errors += 1;
                *part.error_kinds.entry(failure.kind()).or_default() += 1;
            }
        }
    }
    Ok(part)
}

/// When the first byte and first token of a response arrived, after `due`.
#[derive(Debug, Clone, Copy)]
struct Times {
    first_byte: Duration,
    first_token: Duration,
}

#[derive(Debug)]
enum Failure {
    Status(u16),
    Transport,
    Timeout,
}

impl Failure {
    fn kind(&self) -> String {
        match self {
            Failure::Status(code) => format!("status_{code}"),
            Failure::Transport => "transport".into(),
            Failure::Timeout => "timeout".into(),
        }
    }
}

/// Whether `data` holds an SSE content delta with at least one character:
/// `"content":"` followed by anything but the closing quote.
fn has_content(data: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"content\":\"";
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&data[at..], NEEDLE) {
        let next = at + i + NEEDLE.len();
        if data.get(next).is_some_and(|b| *b != b'"') {
            return true;
        }
        at = next;
    }
    false
}

/// Sends one request and drains the response.
async fn exchange(
    sender: &Sender,
    request: Request<Full<Bytes>>,
    due: Instant,
) -> Result<Times, Failure> {
    let response = match sender {
        Sender::Http1(s) => {
            let mut s = s.lock().await;
            s.ready().await.map_err(|_| Failure::Transport)?;
            s.send_request(request)
                .await
                .map_err(|_| Failure::Transport)?
        }
        Sender::H2(s) => {
            let mut s = s.clone();
            s.ready().await.map_err(|_| Failure::Transport)?;
            s.send_request(request)
                .await
                .map_err(|_| Failure::Transport)?
        }
    };
    let status = response.status();
    let sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut body = response.into_body();
    let mut first_byte = None;
    let mut first_token = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Transport)?;
        let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) else {
            continue;
        };
        if first_byte.is_none() {
            first_byte = Some(due.elapsed());
        }
        if first_token.is_none() && (!sse || has_content(data)) {
            first_token = Some(due.elapsed());
        }
    }
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    let first_byte = first_byte.unwrap_or_else(|| due.elapsed());
    Ok(Times {
        first_byte,
        first_token: first_token.unwrap_or(first_byte),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MockOptions, MockUpstream};

    #[test]
    fn content_detection_skips_the_empty_role_chunk() {
        assert!(!has_content(
            br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(has_content(
            br#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#
        ));
        assert!(has_content(
            br#"data: {"delta":{"content":""}} data: {"delta":{"content":"x"}}"#
        ));
    }

    fn chat(stream: bool) -> Bytes {
        Bytes::from(format!(
            r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
    }

    async fn mock() -> (MockUpstream, Uri) {
        let mock = MockUpstream::start(MockOptions {
            record_requests: false,
            ..MockOptions::default()
        })
        .await
        .unwrap();
        let url = format!("{}/chat/completions", mock.base_url())
            .parse()
            .unwrap();
        (mock, url)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_over_both_protocols() {
        let (mock, url) = mock().await;
        for protocol in [Protocol::Http1, Protocol::H2c] {
            let mut spec =
                LoadSpec::closed(url.clone(), chat(false), 4, Duration::from_millis(300));
            spec.warmup = Duration::from_millis(50);
            spec.protocol = protocol;
            let report = run(&spec).await.unwrap();
            assert!(report.ok > 10, "{protocol:?}: {report:?}");
            assert_eq!(report.errors, 0);
        }
        assert!(mock.stats().requests() > 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_holds_the_rate_and_measures_ttft() {
        let (_mock, url) = mock().await;
        let mut spec = LoadSpec::closed(url, chat(true), 8, Duration::from_millis(1000));
        spec.warmup = Duration::from_millis(100);
        spec.pace = Pace::Open { rate_per_s: 200.0 };
        spec.headers = vec![("x-mock-chunk-delay-ms".into(), "5".into())];
        let report = run(&spec).await.unwrap();
        assert!((190..=210).contains(&report.ok), "{}", report.ok);
        // Role chunk and first content chunk each wait 5 ms: TTFT >= 10 ms,
        // first byte >= 5 ms.
        assert!(report.ttft_ms(0.5) >= 10.0, "{}", report.ttft_ms(0.5));
        assert!(report.first_byte_ms(0.5) >= 5.0);
        assert!(report.ttft_ms(0.5) < report.latency_ms(0.5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_charges_a_stall_to_every_request_behind_it() {
        let (_mock, url) = mock().await;
        // One worker, 100 req/s, every request takes 50 ms: the schedule runs
        // away, and the waiting shows up in the latency (no coordinated omission).
        let mut spec = LoadSpec::closed(url, chat(false), 1, Duration::from_millis(500));
        spec.warmup = Duration::ZERO;
        spec.pace = Pace::Open { rate_per_s: 100.0 };
        spec.headers = vec![("x-mock-delay-ms".into(), "50".into())];
        let report = run(&spec).await.unwrap();
        assert!(
            report.latency_ms(0.99) > 200.0,
            "{}",
            report.latency_ms(0.99)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mixed_kinds_follow_their_weights_and_errors_are_sorted() {
        let (_mock, url) = mock().await;
        let mut spec = LoadSpec::closed(url, Bytes::new(), 2, Duration::from_millis(300));
        spec.warmup = Duration::ZERO;
        spec.mix = vec![
            RequestKind {
                body: chat(false),
                headers: vec![],
                weight: 3,
            },
            RequestKind {
                body: chat(false),
                headers: vec![("x-mock-status".into(), "429".into())],
                weight: 1,
            },
        ];
        let report = run(&spec).await.unwrap();
        let rejected = report.error_kinds.get("status_429").copied().unwrap_or(0);
        let share = rejected as f64 / (report.ok + report.errors) as f64;
        assert!((0.2..0.3).contains(&share), "{share}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_streams_stay_open_until_released() {
        let (mock, url) = mock().await;
        let mut spec = LoadSpec::closed(url, chat(true), 1, Duration::ZERO);
        spec.protocol = Protocol::H2c;
        spec.headers = vec![
            ("x-mock-chunk-delay-ms".into(), "100".into()),
            ("x-mock-chunks".into(), "1000".into()),
        ];
        let report = hold_streams(
            &spec,
            50,
            20,
            1000.0,
            Duration::from_secs(10),
            |open| async move {
                assert_eq!(open, 50);
            },
        )
        .await
        .unwrap();
        assert_eq!(report.open, 50);
        assert_eq!(report.failed, 0);
        assert_eq!(mock.stats().streams_finished(), 0);
    }
}
