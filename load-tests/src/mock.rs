//! The mock upstream server: OpenAI routes here and in `mock_body`, the
//! other providers' routes in `mock_providers`.

mod responses;

use crate::mock_body::{self, Reply};
use crate::mock_providers;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the mock answers when a request carries no `x-mock-*` override.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Delay before response headers (`x-mock-delay-ms` overrides it).
    pub latency: Duration,
    /// Content chunks in a streamed reply (`x-mock-chunks`).
    pub chunks: usize,
    /// Delay before each streamed chunk (`x-mock-chunk-delay-ms`).
    pub chunk_delay: Duration,
    /// Keep a copy of the last request for assertions; off for load tests.
    pub record_requests: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            latency: Duration::ZERO,
            chunks: 5,
            chunk_delay: Duration::ZERO,
            record_requests: true,
        }
    }
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// What the mock has seen; shared with tests.
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    pub(crate) streams_finished: AtomicU64,
    /// When non-zero, every request without its own `x-mock-status` gets this status.
    fail_status: std::sync::atomic::AtomicU16,
    last_request: Mutex<Option<RecordedRequest>>,
    /// Ids `POST /v1/responses` returned (with `store` on), so a later
    /// `previous_response_id` can be checked against them.
    response_ids: Mutex<HashSet<String>>,
}

impl MockStats {
    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened.load(Ordering::SeqCst)
    }

    /// TCP connections that have ended so far.
    pub fn connections_closed(&self) -> u64 {
        self.connections_closed.load(Ordering::SeqCst)
    }

    /// Streamed replies whose last event (`[DONE]`) has been handed to the
    /// server: a client that holds an early chunk while this is still 0 proves
    /// nothing between it and the mock buffered the stream.
    pub fn streams_finished(&self) -> u64 {
        self.streams_finished.load(Ordering::SeqCst)
    }

    /// Makes every later request (without its own `x-mock-status`) fail with
    /// `status`, or succeed again with `None`: an upstream going down and up.
    pub fn set_fail_status(&self, status: Option<u16>) {
        self.fail_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Whether the mock returned Responses id `id` earlier (stored).
    pub fn knows_response(&self, id: &str) -> bool {
        self.response_ids.lock().is_ok_and(|ids| ids.contains(id))
    }

    /// Keeps a Responses id the mock returned.
    pub(crate) fn remember_response(&self, id: &str) {
        if let Ok(mut ids) = self.response_ids.lock() {
            ids.insert(id.to_string());
        }
    }

    /// The most recent request, when recording is on.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.last_request.lock().ok().and_then(|r| r.clone())
    }
}

/// A running mock upstream, stopped when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    stats: Arc<MockStats>,
    stop: watch::Sender<bool>,
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and serves in the current tokio runtime.
    pub async fn start(options: MockOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(MockStats::default());
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::spawn(serve(listener, options, stats.clone(), shutdown));
        Ok(MockUpstream { addr, stats, stop })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, ready for an upstream's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// What it has seen.
    pub fn stats(&self) -> &MockStats {
        &self.stats
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves the mock on `listener` until `shutdown` completes; the caller binds,
/// so tests and the binary choose their own address.
pub async fn serve(
    listener: TcpListener,
    options: MockOptions,
    stats: Arc<MockStats>,
    shutdown: impl Future<Output = ()>,
) {
    let options = Arc::new(options);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        stats.connections_opened.fetch_add(1, Ordering::SeqCst);
        let options = options.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| handle(req, options.clone(), stats.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            stats.connections_closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

type MockBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn header_num(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn handle(
    req: Request<Incoming>,
    options: Arc<MockOptions>,
    stats: Arc<MockStats>,
) -> Result<Response<MockBody>, std::convert::Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let mut status = header_num(&req, "x-mock-status").or_else(|| {
        let fail = stats.fail_status.load(Ordering::SeqCst);
        (fail != 0).then_some(u64::from(fail))
    });
    let delay = header_num(&req, "x-mock-delay-ms").map_or(options.latency, Duration::from_millis);
    let plan = mock_body::StreamPlan {
        chunks: header_num(&req, "x-mock-chunks").map_or(options.chunks, |n| n as usize),
        chunk_delay: header_num(&req, "x-mock-chunk-delay-ms")
            .map_or(options.chunk_delay, Duration::from_millis),
        abort_after: header_num(&req, "x-mock-abort-after").map(|n| n as usize),
        no_usage: req.headers().contains_key("x-mock-no-usage"),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut hints = mock_providers::Hints::from_headers(req.headers());
    let query = req.uri().query().map(str::to_string);
    let headers: Vec<(String, String)> = if options.record_requests {
        req.headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "body read failed")),
    };
    // Translated providers never see the client's `x-mock-*` headers; the
    // same hints may ride in the request text, which every format carries.
    hints.read_body_markers(&body);
    status = status.or_else(|| mock_providers::marker_status(&body));
    let provider_route =
        mock_providers::ProviderRoute::parse(method.as_str(), &path, query.as_deref(), &hints);
    if options.record_requests {
        if let Ok(mut last) = stats.last_request.lock() {
            *last = Some(RecordedRequest {
                method: method.to_string(),
                path: path.clone(),
                headers,
                body: body.clone(),
            });
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = status.and_then(|s| StatusCode::from_u16(s as u16).ok()) {
        if let Some(route) = &provider_route {
            return Ok(mock_providers::error(route, code));
        }
        return Ok(json(code, mock_body::error_body(code)));
    }
    if let Some(route) = provider_route {
        return Ok(mock_providers::reply(
            route,
            &body,
            plan,
            &hints,
            stats.clone(),
        ));
    }
    let reply = match (method.as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions") => mock_body::chat(&body, plan, stats.clone()),
        ("POST", "/v1/completions") => mock_body::completion(&body, plan, stats.clone()),
        ("POST", "/v1/embeddings") => mock_body::embeddings(&body),
        ("POST", "/v1/responses") => responses::reply(&body, plan, &hints, stats.clone()),
        ("GET", "/v1/models") => Reply::Json(mock_body::models()),
        _ => return Ok(plain(StatusCode::NOT_FOUND, "mock: no such route")),
    };
    Ok(match reply {
        Reply::Json(bytes) => json(StatusCode::OK, bytes),
        Reply::BadRequest(bytes) => json(StatusCode::BAD_REQUEST, bytes),
        Reply::Sse(stream) => {
            let mut response = Response::new(BodyExt::boxed_unsync(
                http_body_util::StreamBody::new(stream),
            ));
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            headers.insert("cache-control", http::HeaderValue::from_static("no-cache"));
            response
        }
    })
}

fn json(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

fn full(body: Bytes) -> MockBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}
