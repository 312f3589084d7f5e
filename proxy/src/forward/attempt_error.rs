//! Why one upstream attempt failed, as a type: pingora's
//! `Error { etype, esource, retry }` shape for sluice's attempts. One
//! decision ([`AttemptError::fails_over`]) says whether the chain moves on;
//! a [`GatewayError`] is made only where attempts are summarised (or where a
//! stream breaks after its first byte).

use crate::error::GatewayError;
use pingora::ErrorType;
use std::time::Duration;

/// Longest `retry-after` honoured as a cool-down.
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(60);

/// Which deadline ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Opening the connection.
    Connect,
    /// Waiting for the response headers.
    FirstByte,
    /// Waiting between two pieces of the response body.
    Idle,
    /// The whole exchange (`total_timeout_ms`).
    Total,
}

impl TimeoutPhase {
    /// The words the client's error message uses.
    pub fn describe(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Idle => "idle between response chunks",
            TimeoutPhase::Total => "total",
        }
    }
}

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptErrorKind {
    /// The connection could not be opened (refused, no route, DNS), with a
    /// fixed description.
    Connect(&'static str),
    /// The TLS handshake failed.
    Tls,
    /// A deadline ran out.
    Timeout(TimeoutPhase),
    /// The exchange broke after it started, with a fixed description.
    Broken(&'static str),
    /// The upstream answered with this status (429 or 5xx: an attempt that
    /// failed; other statuses are answers, not errors).
    Status(u16),
    /// The built-in engine is at capacity (treated as a 503).
    Overloaded,
    /// Not tried: breaker open, cooling down, or unpriced.
    Skipped(&'static str),
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// The upstream's configured name.
    pub upstream: String,
    /// What went wrong.
    pub kind: AttemptErrorKind,
    /// A `retry-after` the upstream sent with it.
    pub retry_after: Option<Duration>,
}

/// How a summary counts an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// 429.
    RateLimited,
    /// 503, 529, or an engine at capacity.
    Overloaded,
    /// A deadline.
    Timeout,
    /// Anything else that was tried.
    Unavailable,
    /// Not tried.
    Skipped,
}

impl FailureClass {
    /// The `kind` label of `sluice_upstream_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Overloaded => "overloaded",
            FailureClass::Timeout => "upstream_timeout",
            FailureClass::Unavailable => "upstream_unavailable",
            FailureClass::Skipped => "skipped",
        }
    }
}

impl AttemptError {
    /// An attempt failed for `kind`.
    pub fn new(upstream: &str, kind: AttemptErrorKind) -> Self {
        AttemptError {
            upstream: upstream.to_string(),
            kind,
            retry_after: None,
        }
    }

    /// The error an upstream's status makes, when that status is a failed
    /// attempt (429, 5xx) rather than an answer; `retry_after` is capped at
    /// [`MAX_COOL_DOWN`].
    pub fn from_status(upstream: &str, status: u16, retry_after: Option<Duration>) -> Option<Self> {
        let error = AttemptError {
            upstream: upstream.to_string(),
            kind: AttemptErrorKind::Status(status),
            retry_after: retry_after.map(|d| d.min(MAX_COOL_DOWN)),
        };
        error.fails_over().then_some(error)
    }

    /// Classifies a pingora error met `while_reading_body` (or before it).
    pub fn from_pingora(upstream: &str, error: &pingora::Error, while_reading_body: bool) -> Self {
        tracing::debug!(error = %error, upstream, while_reading_body, "upstream failure");
        let kind = match error.etype() {
            ErrorType::ConnectTimedout => AttemptErrorKind::Timeout(TimeoutPhase::Connect),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout if while_reading_body => {
                AttemptErrorKind::Timeout(TimeoutPhase::Idle)
            }
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                AttemptErrorKind::Timeout(TimeoutPhase::FirstByte)
            }
            ErrorType::ConnectRefused => AttemptErrorKind::Connect("connection refused"),
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert => AttemptErrorKind::Tls,
            ErrorType::ConnectError | ErrorType::ConnectNoRoute => {
                AttemptErrorKind::Connect("could not connect")
            }
            _ if while_reading_body => AttemptErrorKind::Broken("connection broke mid-response"),
            _ => AttemptErrorKind::Broken("connection failed before a response"),
        };
        AttemptError::new(upstream, kind)
    }

    /// Whether the chain moves on to its next candidate. Every failure
    /// before the first byte reached the client does, except a status that
    /// is an answer (a 400 is the client's problem on any upstream).
    pub fn fails_over(&self) -> bool {
        match self.kind {
            AttemptErrorKind::Status(status) => status == 429 || status >= 500,
            _ => true,
        }
    }

    /// Whether the attempt counts against the upstream's breaker.
    pub fn counts_against_upstream(&self) -> bool {
        !matches!(self.kind, AttemptErrorKind::Skipped(_))
    }

    /// How a summary counts it.
    pub fn class(&self) -> FailureClass {
        match self.kind {
            AttemptErrorKind::Status(429) => FailureClass::RateLimited,
            AttemptErrorKind::Status(503 | 529) | AttemptErrorKind::Overloaded => {
                FailureClass::Overloaded
            }
            AttemptErrorKind::Timeout(_) => FailureClass::Timeout,
            AttemptErrorKind::Skipped(_) => FailureClass::Skipped,
            _ => FailureClass::Unavailable,
        }
    }

    /// The short reason listed in a summary.
    pub fn reason(&self) -> String {
        match self.kind {
            AttemptErrorKind::Connect(why) | AttemptErrorKind::Broken(why) => why.to_string(),
            AttemptErrorKind::Tls => "TLS handshake failed".to_string(),
            AttemptErrorKind::Timeout(phase) => format!("timed out ({})", phase.describe()),
            AttemptErrorKind::Status(status) => format!("HTTP {status}"),
            AttemptErrorKind::Overloaded => "engine at capacity".to_string(),
            AttemptErrorKind::Skipped(why) => why.to_string(),
        }
    }

    /// The client's error for a failure after the answer started (a stream
    /// that broke or stalled), or for a single failure on its own.
    pub fn into_gateway_error(self) -> GatewayError {
        let upstream = self.upstream;
        match self.kind {
            AttemptErrorKind::Timeout(phase) => GatewayError::UpstreamTimeout {
                upstream,
                phase: phase.describe(),
            },
            AttemptErrorKind::Connect(cause) | AttemptErrorKind::Broken(cause) => {
                GatewayError::UpstreamUnavailable { upstream, cause }
            }
            AttemptErrorKind::Tls => GatewayError::UpstreamUnavailable {
                upstream,
                cause: "TLS handshake failed",
            },
            AttemptErrorKind::Overloaded => GatewayError::UpstreamUnavailable {
                upstream,
                cause: "engine at capacity",
            },
            AttemptErrorKind::Status(_) | AttemptErrorKind::Skipped(_) => {
                GatewayError::UpstreamUnavailable {
                    upstream,
                    cause: "connection failed before a response",
                }
            }
        }
    }
}

/// One error for a request whose every attempt failed: 429 when every
/// upstream rate-limited it, 503 when they were overloaded (or none could be
/// tried), 504 when they all timed out, else 502; the message lists each
/// attempt, by configured name only.
pub fn summarise(failures: &[AttemptError], attempts: u32) -> GatewayError {
    let tried: Vec<FailureClass> = failures
        .iter()
        .map(AttemptError::class)
        .filter(|c| *c != FailureClass::Skipped)
        .collect();
    let all =
        |pred: &dyn Fn(FailureClass) -> bool| !tried.is_empty() && tried.iter().all(|c| pred(*c));
    let (status, code) = if all(&|c| c == FailureClass::RateLimited) {
        (429, "rate_limit_exceeded")
    } else if all(&|c| matches!(c, FailureClass::RateLimited | FailureClass::Overloaded)) {
        (503, "upstreams_overloaded")
    } else if all(&|c| c == FailureClass::Timeout) {
        (504, "upstream_timeout")
    } else if tried.is_empty() && !failures.is_empty() {
        (503, "upstreams_unavailable")
    } else {
        (502, "upstream_unavailable")
    };
    let list: Vec<String> = failures
        .iter()
        .map(|f| format!("{} ({})", f.upstream, f.reason()))
        .collect();
    let message = if attempts == 0 {
        format!("No upstream could be tried: {}.", list.join(", "))
    } else {
        format!(
            "All {attempts} upstream attempts failed: {}.",
            list.join(", ")
        )
    };
    GatewayError::AllAttemptsFailed {
        status,
        code,
        message,
        retry_after: failures.iter().filter_map(|f| f.retry_after).min(),
        upstream: failures.last().map(|f| f.upstream.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: AttemptErrorKind) -> AttemptError {
        AttemptError {
            upstream: "u".into(),
            kind,
            retry_after: Some(Duration::from_secs(3)),
        }
    }

    #[test]
    fn summaries_pick_the_status_a_client_can_act_on() {
        use AttemptErrorKind::*;
        let status = |fs: &[AttemptError]| match summarise(fs, fs.len() as u32) {
            GatewayError::AllAttemptsFailed { status, .. } => status,
            _ => 0,
        };
        assert_eq!(status(&[f(Status(429)), f(Status(429))]), 429);
        assert_eq!(status(&[f(Status(429)), f(Status(503))]), 503);
        assert_eq!(status(&[f(Status(429)), f(Overloaded)]), 503);
        assert_eq!(status(&[f(Timeout(TimeoutPhase::FirstByte))]), 504);
        assert_eq!(
            status(&[f(Timeout(TimeoutPhase::Connect)), f(Connect("refused"))]),
            502
        );
        assert_eq!(status(&[f(Skipped("circuit open"))]), 503);
        match summarise(&[f(Status(429))], 1) {
            GatewayError::AllAttemptsFailed {
                message,
                retry_after,
                ..
            } => {
                assert_eq!(message, "All 1 upstream attempts failed: u (HTTP 429).");
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_429_and_5xx_statuses_fail_over() {
        assert!(AttemptError::from_status("u", 429, None).is_some());
        assert!(AttemptError::from_status("u", 500, None).is_some());
        assert!(AttemptError::from_status("u", 529, None).is_some());
        assert!(AttemptError::from_status("u", 400, None).is_none());
        assert!(AttemptError::from_status("u", 200, None).is_none());
        assert!(AttemptError::new("u", AttemptErrorKind::Tls).fails_over());
        let capped = AttemptError::from_status("u", 429, Some(Duration::from_secs(3600)));
        assert_eq!(capped.and_then(|e| e.retry_after), Some(MAX_COOL_DOWN));
    }

    #[test]
    fn pingora_errors_are_classified_by_phase() {
        let read_timeout = pingora::Error::new(ErrorType::ReadTimedout);
        assert_eq!(
            AttemptError::from_pingora("u", &read_timeout, false).kind,
            AttemptErrorKind::Timeout(TimeoutPhase::FirstByte)
        );
        assert_eq!(
            AttemptError::from_pingora("u", &read_timeout, true).kind,
            AttemptErrorKind::Timeout(TimeoutPhase::Idle)
        );
        let refused = pingora::Error::new(ErrorType::ConnectRefused);
        let error = AttemptError::from_pingora("u", &refused, false);
        assert_eq!(error.reason(), "connection refused");
        match error.into_gateway_error() {
            GatewayError::UpstreamUnavailable { cause, .. } => {
                assert_eq!(cause, "connection refused")
            }
            other => panic!("{other:?}"),
        }
    }
}
