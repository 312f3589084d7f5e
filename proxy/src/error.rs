//! The one mapping from a failed request to what the client sees.
//!
//! Every error becomes OpenAI's body `{"error": {"message", "type", "param",
//! "code"}}` with the status OpenAI would use. A stream that already sent its
//! headers gets the same body as an SSE `data:` event ([`GatewayError::sse_event`]),
//! so streamed and plain failures look alike to an SDK. Messages never carry
//! upstream text, addresses or credentials; the detail is logged once, by the
//! caller, at the boundary.

use bytes::Bytes;
use sluice_filters::{
    AccessError, AuthError, BudgetRejection, EndCause, LimitKind, QueueError, QuotaError,
    QuotaRejection, RateLimitStatus,
};
use sluice_providers::ProviderError;
use std::time::Duration;

/// Why sluice answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request body was refused while routing (bad JSON, unknown model...).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The body exceeds `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client's body could not be read (it hung up or sent bad framing).
    #[error("could not read the request body")]
    BodyRead,
    /// No such endpoint.
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The upstream could not be reached, refused, or broke the exchange.
    #[error("upstream {upstream} failed: {cause}")]
    UpstreamUnavailable {
        /// Configured upstream name (safe to show: it is the operator's label).
        upstream: String,
        /// Short, fixed description of the failure class.
        cause: &'static str,
    },
    /// The caller's key is missing, wrong, expired, disabled, or may not use the model.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A rate limit (requests, tokens, concurrency) refused the request.
    #[error(transparent)]
    Quota(#[from] QuotaRejection),
    /// Redis is down and quotas fail closed.
    #[error("The rate-limit store is unavailable; please retry shortly.")]
    QuotaStoreUnavailable,
    /// A hard budget refused the request.
    #[error(transparent)]
    Budget(#[from] BudgetRejection),
    /// A usage query that does not parse.
    #[error("{message}")]
    BadQuery {
        /// What is wrong with it.
        message: String,
    },
    /// Usage reports and key management need the ledger database, which is
    /// not reachable.
    #[error("The ledger database could not be reached; please retry shortly.")]
    LedgerUnavailable,
    /// Every planned upstream attempt failed before answering.
    #[error("{message}")]
    AllAttemptsFailed {
        /// 429 (all rate-limited), 503 (overloaded / none tried), 504 (all timed out) or 502.
        status: u16,
        /// OpenAI-style error code.
        code: &'static str,
        /// Each attempt, named by upstream (config names only, never addresses).
        message: String,
        /// The shortest `retry-after` an upstream sent, if any.
        retry_after: Option<Duration>,
        /// The last upstream tried or skipped (for the ledger record).
        upstream: Option<String>,
    },
    /// No live stream with this id that the caller may see (another
    /// tenant's stream reads exactly the same).
    #[error("No stream with id '{id}'.")]
    StreamNotFound {
        /// The id asked for.
        id: String,
    },
    /// The node is at capacity: its queue is full, or the wait timed out.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The stream was cancelled, preempted or paused too long before its
    /// answer started.
    #[error("{}", ended_message(*cause, reason.as_deref()))]
    Ended {
        /// Who ended it.
        cause: EndCause,
        /// The reason given with a preemption.
        reason: Option<String>,
    },
    /// A key or tenant row in the database does not parse (the detail is
    /// logged where it was read).
    #[error("A stored {what} record could not be read; see the gateway's log.")]
    StoredRecordInvalid {
        /// What kind of record.
        what: &'static str,
    },
    /// A Responses request continues a response nobody here knows (never
    /// stored, another tenant's, or expired), and no upstream that keeps
    /// its own state is in its chain.
    #[error("Previous response with id '{id}' not found.")]
    PreviousResponseNotFound {
        /// The `previous_response_id` sent.
        id: String,
    },
    /// The client did not send its request in time.
    #[error("The request was not received in time (waiting for its {phase}).")]
    RequestTimeout {
        /// What was awaited: `preface`, `header` or `body`.
        phase: &'static str,
    },
    /// The request header has more fields or bytes than the edge accepts.
    #[error("The request header is too large: at most {max_headers} fields and {max_bytes} bytes are accepted.")]
    HeaderTooLarge {
        /// `server.max_headers`.
        max_headers: usize,
        /// `server.max_header_bytes`.
        max_bytes: usize,
    },
    /// The request header could not be parsed, or its framing is ambiguous
    /// (conflicting `Content-Length`s, an unknown `Transfer-Encoding`).
    #[error("The request could not be parsed: {reason}.")]
    BadFraming {
        /// A fixed description (never the client's bytes).
        reason: &'static str,
    },
    /// The node has as many client connections open as it accepts.
    #[error("Too many open connections{}; please retry shortly.", if *per_client { " from this address" } else { "" })]
    TooManyConnections {
        /// The per-address cap, not the total, was reached.
        per_client: bool,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} timed out: {phase}")]
    UpstreamTimeout {
        /// Configured upstream name.
        upstream: String,
        /// Which timeout fired.
        phase: &'static str,
    },
}

impl From<AccessError> for GatewayError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Auth(e) => GatewayError::Auth(e),
            AccessError::Quota(e) => GatewayError::Quota(e),
            AccessError::QuotaStoreUnavailable => GatewayError::QuotaStoreUnavailable,
            AccessError::Budget(e) => GatewayError::Budget(e),
        }
    }
}

impl From<QuotaError> for GatewayError {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Rejected(r) => GatewayError::Quota(r),
            QuotaError::StoreUnavailable => GatewayError::QuotaStoreUnavailable,
        }
    }
}

impl GatewayError {
    /// The HTTP status OpenAI would use for this failure.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Provider(ProviderError::UnknownModel { .. })
            | GatewayError::Provider(ProviderError::MissingModel) => 404,
            GatewayError::Provider(ProviderError::Signing { .. }) => 500,
            GatewayError::Provider(_) | GatewayError::BodyRead => 400,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::UnknownRoute { .. } => 404,
            GatewayError::Auth(AuthError::ModelNotAllowed { .. }) => 403,
            GatewayError::Auth(AuthError::StoreUnavailable) => 503,
            GatewayError::Auth(_) => 401,
            GatewayError::Quota(_) | GatewayError::Budget(_) => 429,
            GatewayError::QuotaStoreUnavailable => 503,
            GatewayError::UpstreamUnavailable { .. } => 502,
            GatewayError::BadQuery { .. } => 400,
            GatewayError::LedgerUnavailable => 503,
            GatewayError::AllAttemptsFailed { status, .. } => *status,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::RequestTimeout { .. } => 408,
            GatewayError::HeaderTooLarge { .. } => 431,
            GatewayError::BadFraming { .. } => 400,
            GatewayError::TooManyConnections { .. } => 503,
            GatewayError::StoredRecordInvalid { .. } => 500,
            GatewayError::PreviousResponseNotFound { .. } => 400,
            GatewayError::StreamNotFound { .. } => 404,
            GatewayError::Queue(_) => 429,
            GatewayError::Ended {
                cause: EndCause::Preempt,
                ..
            } => 503,
            GatewayError::Ended { .. } => 409,
        }
    }

    /// A low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Provider(e) => e.kind(),
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::BodyRead => "body_read",
            GatewayError::UnknownRoute { .. } => "unknown_route",
            GatewayError::Auth(e) => e.kind(),
            GatewayError::Quota(q) => match q.limit {
                LimitKind::Requests => "rate_limit_requests",
                LimitKind::Tokens => "rate_limit_tokens",
                LimitKind::Concurrency => "rate_limit_concurrency",
            },
            GatewayError::Budget(_) => "budget_exceeded",
            GatewayError::QuotaStoreUnavailable => "quota_store_unavailable",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::BadQuery { .. } => "bad_query",
            GatewayError::LedgerUnavailable => "ledger_unavailable",
            GatewayError::AllAttemptsFailed { .. } => "all_attempts_failed",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::RequestTimeout { .. } => "request_timeout",
            GatewayError::HeaderTooLarge { .. } => "header_too_large",
            GatewayError::BadFraming { .. } => "bad_framing",
            GatewayError::TooManyConnections { .. } => "too_many_connections",
            GatewayError::StoredRecordInvalid { .. } => "stored_record_invalid",
            GatewayError::PreviousResponseNotFound { .. } => "previous_response_not_found",
            GatewayError::StreamNotFound { .. } => "stream_not_found",
            GatewayError::Queue(QueueError::Full) => "queue_full",
            GatewayError::Queue(QueueError::TimedOut(_)) => "queue_timeout",
            GatewayError::Ended { cause, .. } => match cause {
                EndCause::Preempt => "stream_preempted",
                _ => "stream_cancelled",
            },
        }
    }

    fn openai_type(&self) -> &'static str {
        match self {
            GatewayError::Quota(q) => match q.limit {
                LimitKind::Tokens => "tokens",
                LimitKind::Requests | LimitKind::Concurrency => "requests",
            },
            GatewayError::Budget(_) => "insufficient_quota",
            GatewayError::AllAttemptsFailed { status: 429, .. } | GatewayError::Queue(_) => {
                "requests"
            }
            _ if self.status() >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's `code` for this failure.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            GatewayError::Provider(ProviderError::UnknownModel { .. })
            | GatewayError::Provider(ProviderError::MissingModel) => Some("model_not_found"),
            GatewayError::Provider(ProviderError::MalformedJson { .. }) => Some("invalid_json"),
            GatewayError::Provider(ProviderError::InvalidField { .. }) => Some("invalid_type"),
            GatewayError::Provider(_) => None,
            GatewayError::BodyTooLarge { .. } => Some("request_too_large"),
            GatewayError::BodyRead => None,
            GatewayError::UnknownRoute { .. } => Some("unknown_url"),
            GatewayError::Auth(AuthError::ModelNotAllowed { .. }) => Some("model_not_allowed"),
            GatewayError::Auth(AuthError::StoreUnavailable) => Some("service_unavailable"),
            GatewayError::Auth(_) => Some("invalid_api_key"),
            GatewayError::Quota(_) => Some("rate_limit_exceeded"),
            GatewayError::Budget(_) => Some("insufficient_quota"),
            GatewayError::QuotaStoreUnavailable => Some("service_unavailable"),
            GatewayError::UpstreamUnavailable { .. } => Some("upstream_unavailable"),
            GatewayError::BadQuery { .. } => Some("invalid_query"),
            GatewayError::LedgerUnavailable => Some("service_unavailable"),
            GatewayError::AllAttemptsFailed { code, .. } => Some(code),
            GatewayError::UpstreamTimeout { .. } => Some("upstream_timeout"),
            GatewayError::RequestTimeout { .. }
            | GatewayError::HeaderTooLarge { .. }
            | GatewayError::BadFraming { .. }
            | GatewayError::TooManyConnections { .. } => Some(self.kind()),
            GatewayError::StoredRecordInvalid { .. } => Some("internal_error"),
            GatewayError::PreviousResponseNotFound { .. } => Some(self.kind()),
            GatewayError::StreamNotFound { .. }
            | GatewayError::Queue(_)
            | GatewayError::Ended { .. } => Some(self.kind()),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            GatewayError::Provider(ProviderError::UnknownModel { .. })
            | GatewayError::Provider(ProviderError::MissingModel) => Some("model"),
            GatewayError::Provider(ProviderError::InvalidField { field, .. }) => Some(field),
            GatewayError::PreviousResponseNotFound { .. } => Some("previous_response_id"),
            _ => None,
        }
    }

    /// Headers that go with the error: `retry-after` and OpenAI's
    /// `x-ratelimit-*` on rate-limit refusals.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            GatewayError::Quota(q) if q.never => {
                // No `retry-after`: waiting cannot make it fit. OpenAI's
                // SDKs honour `x-should-retry` over their retry-on-429 rule.
                let mut h = rate_limit_headers(&q.status);
                h.push(("x-should-retry", "false".to_string()));
                h
            }
            GatewayError::Quota(q) => {
                let mut h = rate_limit_headers(&q.status);
                let secs = q.retry_after.as_secs() + u64::from(q.retry_after.subsec_nanos() > 0);
                h.push(("retry-after", secs.max(1).to_string()));
                h
            }
            GatewayError::AllAttemptsFailed {
                retry_after: Some(after),
                ..
            } => vec![("retry-after", after.as_secs().max(1).to_string())],
            GatewayError::Queue(_)
            | GatewayError::TooManyConnections { .. }
            | GatewayError::Ended {
                cause: EndCause::Preempt,
                ..
            } => vec![("retry-after", "1".to_string())],
            // Cancelled on purpose: an SDK must not send it again.
            GatewayError::Ended { .. } => vec![("x-should-retry", "false".to_string())],
            _ => Vec::new(),
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.openai_type(),
                "param": self.param(),
                "code": self.code(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The same body as an SSE event followed by `[DONE]`, for a stream whose
    /// headers are already sent; OpenAI's SDKs raise it as an `APIError`.
    pub fn sse_event(&self) -> Bytes {
        let body = self.body();
        let mut event = Vec::with_capacity(body.len() + 32);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        Bytes::from(event)
    }
}

fn ended_message(cause: EndCause, reason: Option<&str>) -> String {
    let why = match cause {
        EndCause::Preempt => "The request was preempted by higher-priority work",
        EndCause::PauseTimeout => "The request stayed paused longer than allowed and was cancelled",
        EndCause::Budget => "The request was stopped at its budget",
        EndCause::Client => "The client closed the request",
        EndCause::Api => "The request was cancelled through the stream control API",
    };
    match reason {
        Some(reason) => format!("{why}: {reason}"),
        None => format!("{why}."),
    }
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
pub fn rate_limit_headers(status: &RateLimitStatus) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    if let Some((limit, remaining, reset)) = status.requests {
        h.push(("x-ratelimit-limit-requests", limit.to_string()));
        h.push(("x-ratelimit-remaining-requests", remaining.to_string()));
        h.push(("x-ratelimit-reset-requests", openai_duration(reset)));
    }
    if let Some((limit, remaining, reset)) = status.tokens {
        h.push(("x-ratelimit-limit-tokens", limit.to_string()));
        h.push(("x-ratelimit-remaining-tokens", remaining.to_string()));
        h.push(("x-ratelimit-reset-tokens", openai_duration(reset)));
    }
    h
}

/// A duration the way OpenAI writes reset times: `20ms`, `1s`, `6m0s`.
fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        if s.fract() < 0.001 {
            format!("{}s", s as u64)
        } else {
            format!("{s:.3}s")
        }
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_openai_shape() {
        let e = GatewayError::Provider(ProviderError::UnknownModel { model: "x".into() });
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(e.status(), 404);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        let e = GatewayError::UpstreamTimeout {
            upstream: "u".into(),
            phase: "first byte",
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            (e.status(), v["error"]["type"].as_str()),
            (504, Some("server_error"))
        );
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(openai_duration(Duration::from_secs(1)), "1s");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn sse_event_carries_the_same_body() {
        let e = GatewayError::UpstreamUnavailable {
            upstream: "u".into(),
            cause: "reset",
        };
        let event = e.sse_event();
        let text = std::str::from_utf8(&event).unwrap();
        let data = text
            .strip_prefix("data: ")
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        assert_eq!(data.as_bytes(), &e.body()[..]);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
