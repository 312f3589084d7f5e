//! Phase 4, attempt: runs after planning. Waits for a node slot, then tries
//! the planned candidates in order until one answers. A candidate fails over
//! — the next one is tried — when [`AttemptError::fails_over`] says so:
//! connect, TLS, timeouts before the response headers, 429 and 5xx, an
//! engine at capacity. Nothing has reached the client yet, so it sees only
//! the answer that worked. Retries of the same upstream wait an exponential
//! backoff with jitter; a `retry-after` puts the upstream in cool-down.
//! Attempts stop at `routing.max_attempts` or when `routing.attempt_budget`
//! is spent, and then one error sums them all up. Both waits watch the
//! client and the stream's controls: either may end them.

use super::answer::{AnswerSource, LocalFailure, LocalRequest};
use super::attempt_error::{
    summarise, AttemptError, AttemptErrorKind, TimeoutPhase, MAX_COOL_DOWN,
};
use super::{exchange, ForwardCtx, Services};
use crate::downstream::watch::{client_event, ClientEvent};
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use rand::Rng;
use sluice_filters::{EndCause, StreamHandle};
use sluice_providers::{Provider, ReplyContext, UpstreamTarget};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The attempt that answered: the target with its provider, fetched once.
pub struct Answer<'r> {
    /// The target that answered.
    pub target: &'r UpstreamTarget,
    /// Its index among the router's targets (for the connection pool).
    pub target_index: usize,
    /// The adapter that built the request; the same one translates the answer.
    pub provider: Arc<Provider>,
    /// What the response translator needs to know about the request.
    pub reply: ReplyContext,
    /// The model name it was called with.
    pub upstream_model: String,
    /// Whether it was sent the client's own body (an upstream that speaks
    /// the client's dialect): its reply then goes back untouched.
    pub native: bool,
    /// Where the answer's body comes from.
    pub source: AnswerSource,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// What stopped a wait before the answer started.
enum Interrupted {
    /// The client left.
    ClientGone,
    /// The stream was told to end.
    Ended(EndCause, Option<String>),
}

/// Waits for a node slot and an answer. `Ok(None)`: the client left (the
/// stream is marked and counted, the connection will close; there is
/// nothing to send). `Err` is the client's answer.
pub async fn wait_for_answer<'r>(
    services: &'r Services,
    session: &mut ServerSession,
    ctx: &mut ForwardCtx<'r>,
    rctx: &mut RequestCtx,
) -> Result<Option<Answer<'r>>, GatewayError> {
    // Watching the client needs the session itself: the request header
    // moves out of it meanwhile (the attempts copy from it).
    let placeholder = RequestHeader::build_no_case(http::Method::GET, b"/", Some(0))
        .map_err(|_| GatewayError::BodyRead)?;
    let client_header = std::mem::replace(session.req_header_mut(), placeholder);
    let waited = {
        let shared: &ForwardCtx<'r> = ctx;
        let work = async {
            let tenant = shared.tenant();
            let slot = services
                .streams
                .node_slot(tenant, shared.caller.priority)
                .await?;
            shared.stream.admitted();
            let asked = Instant::now();
            let answer = try_candidates(services, &client_header, shared, rctx).await;
            Ok::<_, GatewayError>((slot, answer, asked.elapsed()))
        };
        tokio::select! {
            done = work => Ok(done),
            why = interrupted(session, &shared.stream) => Err(why),
        }
    };
    *session.req_header_mut() = client_header;
    match waited {
        Ok(done) => {
            let (slot, answer, upstream_time) = done?;
            // Attempts are the upstream's time, not sluice's overhead.
            rctx.waited += upstream_time;
            ctx.slot = slot;
            Ok(Some(answer?))
        }
        Err(Interrupted::ClientGone) => {
            services.streams.end_stream(&ctx.stream, EndCause::Client);
            // nginx's "client closed request", for logs and metrics only.
            rctx.status = 499;
            session.set_keepalive(None);
            Ok(None)
        }
        Err(Interrupted::Ended(cause, reason)) => {
            services.streams.end_stream(&ctx.stream, cause);
            Err(GatewayError::Ended { cause, reason })
        }
    }
}

/// Resolves when the client leaves or `stream` is told to end, whichever
/// comes first.
async fn interrupted(session: &mut ServerSession, stream: &StreamHandle) -> Interrupted {
    tokio::select! {
        ClientEvent::Gone = client_event(session) => Interrupted::ClientGone,
        (cause, reason) = stream.ended() => Interrupted::Ended(cause, reason),
    }
}

/// Tries the planned candidates in order; returns the first answer, or one
/// error that sums up every attempt.
async fn try_candidates<'r>(
    services: &'r Services,
    client: &RequestHeader,
    ctx: &ForwardCtx<'r>,
    rctx: &RequestCtx,
) -> Result<Answer<'r>, GatewayError> {
    let settings = services.router.settings();
    let deadline = Instant::now() + settings.attempt_budget;
    let mut failures: Vec<AttemptError> = Vec::new();
    let mut attempts = 0u32;
    let mut last_target = None;
    for candidate in &ctx.candidates {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let target = &services.router.targets()[candidate.target];
        let name = target.settings.name.as_str();
        let upstream_model = candidate.upstream_model(ctx.routed_model());
        let unpriced = !services.accounting.allow_unpriced
            && !services.accounting.is_priced(ctx.tenant(), upstream_model);
        let begun = if unpriced {
            Err("model has no price and ledger.allow_unpriced is off")
        } else {
            target.health.begin()
        };
        let guard = match begun {
            Ok(guard) => guard,
            Err(why) => {
                failures.push(AttemptError::new(name, AttemptErrorKind::Skipped(why)));
                continue;
            }
        };
        if last_target == Some(candidate.target) {
            let pause = backoff(settings.backoff_base, settings.backoff_max, attempts);
            tokio::time::sleep(pause.min(deadline - now)).await;
        }
        attempts += 1;
        last_target = Some(candidate.target);
        services.metrics.upstream_attempt(name);
        let provider = target.provider();
        let native = match (&ctx.native, &services.local[candidate.target]) {
            (Some(n), None) => {
                provider.native_request(n.dialect, &n.body, &n.fields, upstream_model)
            }
            _ => None,
        };
        let is_native = native.is_some();
        let outgoing = match native {
            Some(request) => request,
            None => provider.build_request(ctx.endpoint, &ctx.body, &ctx.fields, upstream_model)?,
        };
        let sent = Instant::now();
        let remaining = deadline.saturating_duration_since(sent);
        let attempt = exchange::HttpAttempt {
            candidate,
            target,
            provider: &provider,
            client,
            rctx,
            outgoing: &outgoing,
        };
        let tried = ask(services, ctx, &attempt, upstream_model, remaining).await;
        let failure = match tried {
            Ok(source) => match judge(services, target, source, sent).await {
                Ok(source) => {
                    guard.succeeded();
                    return Ok(Answer {
                        target,
                        target_index: candidate.target,
                        provider,
                        reply: outgoing.reply,
                        upstream_model: upstream_model.to_string(),
                        native: is_native,
                        source,
                        attempts,
                    });
                }
                Err(failure) => failure,
            },
            Err(failure) => failure,
        };
        guard.failed();
        services
            .metrics
            .upstream_error(name, failure.class().label());
        failures.push(failure);
    }
    Err(summarise(&failures, attempts))
}

/// Sends one attempt to its target: in-process when the target has a
/// backend, else over HTTP.
async fn ask(
    services: &Services,
    ctx: &ForwardCtx<'_>,
    attempt: &exchange::HttpAttempt<'_>,
    upstream_model: &str,
    remaining: Duration,
) -> Result<AnswerSource, AttemptError> {
    match &services.local[attempt.candidate.target] {
        Some(backend) => {
            let request = LocalRequest {
                endpoint: ctx.endpoint,
                body: &attempt.outgoing.body,
                fields: &ctx.fields,
                model: upstream_model,
                priority: ctx.caller.priority,
            };
            ask_local(backend.as_ref(), request, attempt.target, remaining).await
        }
        None => exchange::send(services, attempt, remaining)
            .await
            .map(AnswerSource::Http),
    }
}

/// Asks an in-process backend, within the target's first-byte timeout (and
/// what is left of the attempt budget).
async fn ask_local(
    backend: &dyn super::LocalBackend,
    request: LocalRequest<'_>,
    target: &UpstreamTarget,
    remaining: Duration,
) -> Result<AnswerSource, AttemptError> {
    let name = target.settings.name.as_str();
    let wait = target.settings.first_byte_timeout.min(remaining);
    let kind = match tokio::time::timeout(wait, backend.schedule(request)).await {
        Ok(Ok(reply)) => return Ok(AnswerSource::Local(reply)),
        Err(_elapsed) => AttemptErrorKind::Timeout(TimeoutPhase::FirstByte),
        Ok(Err(LocalFailure::Overloaded)) => AttemptErrorKind::Overloaded,
        Ok(Err(LocalFailure::Failed(why))) => {
            tracing::warn!(upstream = name, error = %why, "local backend failed");
            AttemptErrorKind::Broken("the engine failed before a response")
        }
    };
    Err(AttemptError::new(name, kind))
}

/// Decides whether an answer's status is the answer or a failed attempt
/// (429, 5xx: the exchange is closed and a `retry-after` cools the
/// upstream down).
async fn judge(
    services: &Services,
    target: &UpstreamTarget,
    source: AnswerSource,
    sent: Instant,
) -> Result<AnswerSource, AttemptError> {
    let name = target.settings.name.as_str();
    services.metrics.upstream_first_byte(name, sent.elapsed());
    let Some(failure) = failed_status(name, &source) else {
        return Ok(source);
    };
    if let Some(pause) = failure.retry_after {
        target.health.cool_down(pause);
    }
    if let AnswerSource::Http(mut session) = source {
        session.shutdown().await;
    }
    Err(failure)
}

/// The failed attempt an answer's status makes (429, 5xx), with the
/// upstream's `retry-after`; `None` when the status is the answer.
fn failed_status(upstream: &str, source: &AnswerSource) -> Option<AttemptError> {
    let retry_after = source
        .http_header()
        .and_then(|h| h.headers.get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, MAX_COOL_DOWN.as_secs_f64())));
    AttemptError::from_status(upstream, source.status(), retry_after)
}

/// `base * 2^attempt`, capped, with full jitter in its upper half.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    exp.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

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
