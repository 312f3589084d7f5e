//! Trying a request's planned candidates until one answers.
//!
//! A candidate fails over — the next one is tried — on a connect error, a
//! TLS error, a timeout before the response headers, or a 429/5xx status;
//! nothing has reached the client yet, so it sees only the answer that
//! worked. Other statuses (a 400, say) are the answer. Retries of the same
//! upstream wait an exponential backoff with jitter; a `retry-after` puts the
//! upstream in cool-down. Attempts stop at `routing.max_attempts` or when
//! `routing.attempt_budget` is spent, and then one error sums them all up.

use crate::error::GatewayError;
use crate::gateway::{Gateway, RequestCtx};
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::ErrorType;
use rand::Rng;
use sluice_providers::openai::CLIENT_HEADERS_NOT_FORWARDED;
use sluice_providers::{
    Candidate, Endpoint, ReplyContext, RoutingFields, UpstreamRequest, UpstreamTarget,
};
use std::time::{Duration, Instant};

/// Longest `retry-after` honoured as a cool-down.
const MAX_COOL_DOWN: Duration = Duration::from_secs(60);

/// What is being sent, the same for every attempt.
pub(crate) struct Outbound<'a> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// Routing fields of the body.
    pub fields: &'a RoutingFields,
    /// The client's body.
    pub body: &'a Bytes,
    /// The caller's tenant, for tenant prices.
    pub tenant: Option<&'a str>,
}

/// The attempt that answered.
pub(crate) struct Answer<'r> {
    /// What the response translator needs to know about the request.
    pub reply: ReplyContext,
    /// The model name it was called with.
    pub upstream_model: &'r str,
    /// The live upstream exchange, response headers read.
    pub upstream: HttpSession,
    /// Index of the target that answered.
    pub target: usize,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// Why one attempt failed, for the summary and the final status.
#[derive(Debug)]
struct Failure {
    upstream: String,
    reason: String,
    class: FailureClass,
    retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureClass {
    RateLimited,
    Overloaded,
    Timeout,
    Unavailable,
    Skipped,
}

impl Gateway {
    /// Tries `plan` in order; returns the first answer, or one error that
    /// sums up every attempt.
    pub(crate) async fn try_candidates<'r>(
        &self,
        client: &RequestHeader,
        ctx: &RequestCtx,
        outbound: &Outbound<'_>,
        plan: &[Candidate<'r>],
    ) -> Result<Answer<'r>, GatewayError> {
        let Outbound {
            endpoint,
            fields,
            body,
            tenant,
        } = *outbound;
        let settings = self.router.settings();
        let deadline = Instant::now() + settings.attempt_budget;
        let mut failures: Vec<Failure> = Vec::new();
        let mut attempts = 0u32;
        let mut last_target = None;
        for candidate in plan {
            let target = &self.router.targets()[candidate.target];
            let name = target.settings.name.as_str();
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if !self.accounting.allow_unpriced
                && !self.accounting.is_priced(tenant, candidate.upstream_model)
            {
                failures.push(Failure::new(
                    name,
                    "model has no price and ledger.allow_unpriced is off",
                    FailureClass::Skipped,
                    None,
                ));
                continue;
            }
            let guard = match target.health.begin() {
                Ok(guard) => guard,
                Err(reason) => {
                    failures.push(Failure::new(name, reason, FailureClass::Skipped, None));
                    continue;
                }
            };
            if last_target == Some(candidate.target) {
                let pause = backoff(settings.backoff_base, settings.backoff_max, attempts);
                tokio::time::sleep(pause.min(deadline - now)).await;
            }
            attempts += 1;
            last_target = Some(candidate.target);
            self.metrics
                .upstream_attempts
                .with_label_values(&[name])
                .inc();

            let provider = target.provider();
            let outgoing =
                provider.build_request(endpoint, body, fields, candidate.upstream_model)?;
            let build_request = || upstream_request(client, target, ctx, &outgoing);
            let request = build_request().map_err(|_| GatewayError::UpstreamUnavailable {
                upstream: name.to_string(),
                cause: "could not build the upstream request",
            })?;
            let upstream_body = &outgoing.body;
            let peer = match self.upstreams.peer(candidate.target).await {
                Ok(peer) => peer,
                Err(e) => {
                    guard.failed();
                    failures.push(Failure::new(
                        name,
                        &e.to_string(),
                        FailureClass::Unavailable,
                        None,
                    ));
                    continue;
                }
            };
            let sent = Instant::now();
            let remaining = deadline.saturating_duration_since(sent);
            match self
                .exchange(
                    peer,
                    target,
                    request,
                    &build_request,
                    upstream_body,
                    remaining,
                )
                .await
            {
                Ok(mut upstream) => {
                    self.metrics
                        .upstream_first_byte
                        .with_label_values(&[name])
                        .observe(sent.elapsed().as_secs_f64());
                    let status = upstream
                        .response_header()
                        .map_or(502, |h| h.status.as_u16());
                    if status == 429 || status >= 500 {
                        let retry_after = upstream
                            .response_header()
                            .and_then(|h| h.headers.get("retry-after"))
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .map(|s| {
                                Duration::from_secs_f64(s.clamp(0.0, MAX_COOL_DOWN.as_secs_f64()))
                            });
                        if let Some(pause) = retry_after {
                            target.health.cool_down(pause);
                        }
                        guard.failed();
                        upstream.shutdown().await;
                        let class = match status {
                            429 => FailureClass::RateLimited,
                            503 | 529 => FailureClass::Overloaded,
                            _ => FailureClass::Unavailable,
                        };
                        self.count_failure(name, class);
                        failures.push(Failure::new(
                            name,
                            &format!("HTTP {status}"),
                            class,
                            retry_after,
                        ));
                        continue;
                    }
                    guard.succeeded();
                    return Ok(Answer {
                        reply: outgoing.reply,
                        upstream_model: candidate.upstream_model,
                        upstream,
                        target: candidate.target,
                        attempts,
                    });
                }
                Err(failure) => {
                    guard.failed();
                    let class = match &failure {
                        GatewayError::UpstreamTimeout { .. } => FailureClass::Timeout,
                        _ => FailureClass::Unavailable,
                    };
                    self.count_failure(name, class);
                    let reason = match &failure {
                        GatewayError::UpstreamTimeout { phase, .. } => {
                            format!("timed out ({phase})")
                        }
                        GatewayError::UpstreamUnavailable { cause, .. } => cause.to_string(),
                        other => other.kind().to_string(),
                    };
                    failures.push(Failure::new(name, &reason, class, None));
                }
            }
        }
        Err(summarise(&failures, attempts))
    }

    fn count_failure(&self, upstream: &str, class: FailureClass) {
        let kind = match class {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Overloaded => "overloaded",
            FailureClass::Timeout => "upstream_timeout",
            FailureClass::Unavailable => "upstream_unavailable",
            FailureClass::Skipped => "skipped",
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[upstream, kind])
            .inc();
    }

    /// Sends the request and reads the response header within `budget`. A
    /// pooled connection the upstream has quietly closed is retried once on a
    /// fresh one, with the request built anew by `rebuild` (pingora keeps the
    /// header it sent, so building again beats copying every time); any
    /// other failure is returned.
    async fn exchange(
        &self,
        peer: &pingora::upstreams::peer::HttpPeer,
        target: &UpstreamTarget,
        request: RequestHeader,
        rebuild: &(dyn Fn() -> pingora::Result<RequestHeader> + Sync),
        body: &Bytes,
        budget: Duration,
    ) -> Result<HttpSession, GatewayError> {
        let first_byte = target.settings.first_byte_timeout.min(budget);
        let mut attempt = 0;
        let mut request = Some(request);
        loop {
            attempt += 1;
            let header = match request.take() {
                Some(header) => header,
                None => rebuild().map_err(|_| GatewayError::UpstreamUnavailable {
                    upstream: target.settings.name.clone(),
                    cause: "could not build the upstream request",
                })?,
            };
            let (mut upstream, reused) = self
                .upstreams
                .session(peer)
                .await
                .map_err(|e| upstream_failure(target, &e, "connecting"))?;
            upstream.set_read_timeout(Some(first_byte));
            upstream.set_write_timeout(Some(first_byte));
            let sent = async {
                upstream.write_request_header(Box::new(header)).await?;
                upstream.write_request_body(body.clone(), true).await?;
                upstream.finish_request_body().await?;
                upstream.read_response_header().await
            }
            .await;
            match sent {
                Ok(()) => return Ok(upstream),
                Err(e) if reused && attempt == 1 && !is_timeout(e.etype()) => {
                    tracing::debug!(error = %e, "pooled upstream connection was stale; retrying on a new one");
                    upstream.shutdown().await;
                }
                Err(e) => {
                    upstream.shutdown().await;
                    return Err(upstream_failure(
                        target,
                        &e,
                        "waiting for the response header",
                    ));
                }
            }
        }
    }
}

impl Failure {
    fn new(
        upstream: &str,
        reason: &str,
        class: FailureClass,
        retry_after: Option<Duration>,
    ) -> Self {
        Failure {
            upstream: upstream.to_string(),
            reason: reason.to_string(),
            class,
            retry_after,
        }
    }
}

/// One error for a request whose every attempt failed: 429 when every
/// upstream rate-limited it, 503 when they were overloaded, 504 when they all
/// timed out, else 502; the message lists each attempt.
fn summarise(failures: &[Failure], attempts: u32) -> GatewayError {
    let tried: Vec<&Failure> = failures
        .iter()
        .filter(|f| f.class != FailureClass::Skipped)
        .collect();
    let all = |pred: &dyn Fn(FailureClass) -> bool| {
        !tried.is_empty() && tried.iter().all(|f| pred(f.class))
    };
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
        .map(|f| format!("{} ({})", f.upstream, f.reason))
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
    }
}

/// `base * 2^attempt`, capped, with full jitter in its upper half.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    exp.mul_f64(rand::rng().random_range(0.5..=1.0))
}

fn is_timeout(kind: &ErrorType) -> bool {
    matches!(
        kind,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// Classifies a pingora error into what the client sees.
pub(crate) fn upstream_failure(
    target: &UpstreamTarget,
    error: &pingora::Error,
    phase: &'static str,
) -> GatewayError {
    let upstream = target.settings.name.clone();
    tracing::debug!(error = %error, phase, upstream = %upstream, "upstream failure");
    if is_timeout(error.etype()) {
        return GatewayError::UpstreamTimeout {
            upstream,
            phase: match error.etype() {
                ErrorType::ConnectTimedout => "connect",
                _ if phase == "reading the response body" => "idle between response chunks",
                _ => "first byte",
            },
        };
    }
    GatewayError::UpstreamUnavailable {
        upstream,
        cause: match error.etype() {
            ErrorType::ConnectRefused => "connection refused",
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert => "TLS handshake failed",
            ErrorType::ConnectError | ErrorType::ConnectNoRoute => "could not connect",
            _ if phase == "reading the response body" => "connection broke mid-response",
            _ => "connection failed before a response",
        },
    }
}

/// The request header sent upstream: for OpenAI-compatible upstreams the
/// client's headers minus hop-by-hop and credential headers; then the
/// adapter's own (credentials, version, signature).
fn upstream_request(
    client: &RequestHeader,
    target: &UpstreamTarget,
    ctx: &RequestCtx,
    outgoing: &UpstreamRequest,
) -> pingora::Result<RequestHeader> {
    let mut request = RequestHeader::build_no_case(
        outgoing.method.clone(),
        outgoing.path_and_query.as_bytes(),
        Some(client.headers.len() + outgoing.headers.len() + 3),
    )?;
    if outgoing.forward_client_headers {
        for (name, value) in client.headers.iter() {
            if CLIENT_HEADERS_NOT_FORWARDED.contains(&name.as_str()) || name == "x-request-id" {
                continue;
            }
            request.append_header(name.clone(), value.clone())?;
        }
    }
    request.insert_header("host", target.provider().host_header())?;
    request.insert_header("content-length", outgoing.body.len())?;
    request.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (name, value) in &outgoing.headers {
        request.insert_header(name.clone(), value.clone())?;
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(class: FailureClass) -> Failure {
        Failure::new("u", "r", class, Some(Duration::from_secs(3)))
    }

    #[test]
    fn summaries_pick_the_status_a_client_can_act_on() {
        let status = |fs: &[Failure]| match summarise(fs, fs.len() as u32) {
            GatewayError::AllAttemptsFailed { status, .. } => status,
            _ => 0,
        };
        assert_eq!(
            status(&[f(FailureClass::RateLimited), f(FailureClass::RateLimited)]),
            429
        );
        assert_eq!(
            status(&[f(FailureClass::RateLimited), f(FailureClass::Overloaded)]),
            503
        );
        assert_eq!(status(&[f(FailureClass::Timeout)]), 504);
        assert_eq!(
            status(&[f(FailureClass::Timeout), f(FailureClass::Unavailable)]),
            502
        );
        assert_eq!(status(&[f(FailureClass::Skipped)]), 503);
        match summarise(&[f(FailureClass::RateLimited)], 1) {
            GatewayError::AllAttemptsFailed {
                message,
                retry_after,
                ..
            } => {
                assert_eq!(message, "All 1 upstream attempts failed: u (r).");
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..10 {
            let d = backoff(base, max, attempt);
            let ceiling = base.saturating_mul(1 << attempt).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }
}
