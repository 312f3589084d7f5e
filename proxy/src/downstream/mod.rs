//! The client's side of one connection: what a request carries from the
//! moment its header is read ([`RequestCtx`]), reading its body ([`body`]),
//! writing answers ([`respond`]) in the client's [`Dialect`], and noticing
//! when the client leaves ([`watch`]). A leaf: every route handler uses it,
//! it uses none of them.

pub mod body;
pub mod dialect;
pub mod respond;
pub mod watch;

pub use dialect::Dialect;

use sluice_filters::{KeyEntry, RequestId};
use sluice_providers::Usage;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every request carries from the moment its header is read, whatever
/// its route: identity, timing, and what was answered (for logs and metrics).
pub struct RequestCtx {
    /// The id echoed to the client and sent upstream.
    pub request_id: RequestId,
    /// When the request headers were read.
    pub started: Instant,
    /// The same moment as unix microseconds, for the ledger.
    pub started_unix_us: i64,
    /// Model label for metrics: a configured name, `*`, or `-` when unknown.
    pub model_label: String,
    /// The status sent to the client.
    pub status: u16,
    /// The stream id of a forwarded request, sent as `x-sluice-stream-id`.
    pub stream_id: Option<String>,
    /// Longest wait for the next byte of the request body.
    pub body_timeout: Duration,
    /// The shape the client speaks, known from its route: errors go back in it.
    pub dialect: Dialect,
    /// Time spent waiting on the client (its body, its reading) or the
    /// upstream (attempts, the answer's pieces): the rest of the request's
    /// time is sluice's own overhead.
    pub waited: Duration,
    /// The caller's key once authenticated: tenant and key id for the access log.
    pub key: Option<Arc<KeyEntry>>,
    /// The caller's effective priority label, once admitted.
    pub priority: Option<&'static str>,
    /// The upstream that answered, by its config name.
    pub upstream: Option<String>,
    /// Token usage as the upstream reported it, once settled.
    pub usage: Option<Usage>,
    /// The request's cost in micro-USD, once settled and priced.
    pub cost_micros: Option<i64>,
}

impl RequestCtx {
    /// Runs `wait` (a wait on the client or the upstream), counting its
    /// time as waited rather than as sluice's overhead.
    pub async fn waiting<T>(&mut self, wait: impl std::future::Future<Output = T>) -> T {
        let from = Instant::now();
        let out = wait.await;
        self.waited += from.elapsed();
        out
    }

    /// A context for a request whose header has just been read, honouring
    /// the client's `x-request-id` when it sent a usable one; its body must
    /// keep arriving within `body_timeout`.
    pub fn new(client_request_id: Option<&[u8]>, body_timeout: Duration) -> Self {
        RequestCtx {
            request_id: RequestId::accept_or_mint(client_request_id),
            started: Instant::now(),
            started_unix_us: sluice_ledger::unix_micros_now(),
            model_label: "-".to_string(),
            status: 0,
            stream_id: None,
            body_timeout,
            dialect: Dialect::OpenAi,
            waited: Duration::ZERO,
            key: None,
            priority: None,
            upstream: None,
            usage: None,
            cost_micros: None,
        }
    }
}
