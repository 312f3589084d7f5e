//! Forwarding an OpenAI request upstream and streaming the answer back.
//!
//! The body is read whole (bounded by `server.max_body_bytes`), parsed for
//! routing only, and sent on unchanged but for the model name. The response
//! is relayed piece by piece as the upstream produces it — SSE events reach
//! the client as they arrive, never buffered to the end.

use crate::accounting::Finished;
use crate::error::GatewayError;
use crate::failover::{upstream_failure, Outbound};
use crate::gateway::{Gateway, RequestCtx};
use crate::streams::{client_event, closing_events, interrupted, ClientEvent, Interrupted};
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession;
use sluice_filters::{BudgetHold, Control, EndCause, StreamHandle, StreamOwner, StreamRegistry};
use sluice_ledger::EndState;
use sluice_providers::{Endpoint, ResponseTranslator, RoutingFields, UpstreamTarget};
use std::time::Instant;

/// How relaying a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayOutcome {
    /// Every byte reached the client.
    Completed,
    /// The upstream failed part-way.
    UpstreamBroke,
    /// Ended early: the client left, the control API cancelled or preempted
    /// it, a pause ran out, or the budget did. The upstream call is dropped.
    Ended(EndCause),
}

/// What woke the relay up.
enum RelayEvent {
    /// The upstream sent more (or ended, or failed).
    Read(pingora::Result<Option<Bytes>>),
    /// The stream's controls changed.
    Control(Control),
    /// The client left, or sent more bytes.
    Client(ClientEvent),
}

/// How to tell that a running stream has crossed its hard budget.
struct Cutoff<'a> {
    reservation: &'a BudgetHold,
    /// Cost so far, from the text delivered so far.
    running_cost: &'a (dyn Fn(&str) -> i64 + Sync),
    model: &'a str,
}

impl Cutoff<'_> {
    /// The end of a cut stream: a final chunk with `finish_reason: "length"`,
    /// then OpenAI's `insufficient_quota` error event, then `[DONE]`.
    fn closing_events(&self, spent_micros: i64) -> Bytes {
        let last = serde_json::json!({
            "id": "chatcmpl-sluice-budget-cut",
            "object": "chat.completion.chunk",
            "created": jiff::Timestamp::now().as_second(),
            "model": self.model,
            "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}],
        });
        let error = GatewayError::Budget(sluice_filters::BudgetRejection {
            scope_kind: sluice_filters::ScopeKind::Request,
            limit_micros: spent_micros,
            spent_micros,
        });
        let mut out = format!("data: {last}\n\n").into_bytes();
        out.extend_from_slice(&error.sse_event());
        Bytes::from(out)
    }
}

/// Admission tries after preempting a stream for its slot, 10 ms apart.
const PREEMPT_ADMIT_TRIES: usize = 20;

/// One response body being relayed, and what governs it.
struct Relay<'a, 'c> {
    upstream: &'a mut HttpSession,
    tracker: &'a mut ResponseTranslator,
    target: &'a UpstreamTarget,
    is_sse: bool,
    cutoff: Option<Cutoff<'c>>,
    stream: &'a mut StreamHandle,
    /// Model named in closing chunks.
    model: &'a str,
}

/// Response headers that describe one hop, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "te",
];

impl Gateway {
    /// Serves one forwarded endpoint. On `Err` nothing has been written to the
    /// client unless `session.response_written()` says so.
    pub(crate) async fn forward(
        &self,
        session: &mut ServerSession,
        endpoint: Endpoint,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        ctx.stream_id = Some(StreamRegistry::mint_id());
        let key = self.access.identify(session).await?;
        let body = read_body(session, self.max_body_bytes).await?;
        let fields = RoutingFields::parse(&body)?;
        let requested_route = self.router.resolve(&fields.model)?;
        // A rough prompt-token estimate (4 bytes a token) for the reservation;
        // it is settled on the real usage.
        let prompt_estimate = body.len() as u64 / 4;
        let admit = || {
            self.access.admit(
                session,
                key.clone(),
                &fields.model,
                prompt_estimate,
                fields.max_tokens,
            )
        };
        let mut caller = match (admit().await, key.as_deref()) {
            (Ok(caller), _) => caller,
            // At a concurrency limit, a higher priority may take the place
            // of the lowest-priority stream in the same scope.
            (Err(refusal), Some(k))
                if self
                    .preempt_for(&refusal, k, self.access.priority(session, Some(k)))
                    .await =>
            {
                // The preempted request lets go of its quota slot as it
                // ends (through Redis, a moment later): try a few times.
                let mut again = Err(refusal);
                for _ in 0..PREEMPT_ADMIT_TRIES {
                    again = admit().await;
                    if again.is_ok() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                again?
            }
            (Err(refusal), _) => return Err(refusal),
        };
        let tenant = caller.key.as_deref().map(|k| k.tenant.as_str());
        let max_tokens = fields
            .max_tokens
            .unwrap_or(self.access.default_max_tokens());
        let mut plan = self.router.plan(&requested_route);
        let mut budget = None;
        if let Some(key) = caller.key.as_deref().filter(|k| self.access.has_budget(k)) {
            // Worst case at the price of the first planned target.
            let priced_as = plan
                .first()
                .map_or(fields.model.as_str(), |c| c.upstream_model);
            let worst = self
                .accounting
                .cost_micros(tenant, priced_as, prompt_estimate, max_tokens)
                .unwrap_or(0);
            let hold = self
                .access
                .reserve_budget(key, worst)
                .await
                .inspect_err(|_| {
                    self.metrics
                        .budget_events
                        .with_label_values(&["hard_limit_refused"])
                        .inc();
                })?;
            if let Some(hold) = &hold {
                for (scope, spent) in &hold.newly_alerted {
                    self.alert_soft_limit(scope, *spent);
                }
            }
            budget = hold;
        }
        let downgrade = budget.as_ref().and_then(|b| b.downgrade_to.clone());
        let route = match downgrade.as_deref().map(|m| self.router.resolve(m)) {
            Some(Ok(cheaper)) => {
                plan = self.router.plan(&cheaper);
                cheaper
            }
            _ => requested_route,
        };
        ctx.model_label = route.model_label.to_string();
        let span = tracing::Span::current();
        if let Some(key) = &caller.key {
            span.record("tenant", key.tenant.as_str());
            span.record("key", key.key_id.as_str());
        }
        span.record("priority", caller.priority.as_str());
        span.record("model", route.model_label);

        let mut stream = self.streams.registry.register(
            ctx.stream_id.clone().unwrap_or_default(),
            StreamOwner {
                tenant: tenant.map(str::to_string),
                key_id: caller.key.as_ref().map(|k| k.key_id.clone()),
                model: fields.model.clone(),
                priority: caller.priority,
            },
            self.streams.queue.is_some(),
        );
        // Waiting for a node slot and for the upstream's answer, watch the
        // client and the stream's controls: either may end the wait. The
        // request header moves out of the session meanwhile, since watching
        // the client needs the session itself.
        let placeholder = RequestHeader::build_no_case(http::Method::GET, b"/", Some(0))
            .map_err(|_| GatewayError::BodyRead)?;
        let client_header = std::mem::replace(session.req_header_mut(), placeholder);
        let waited = {
            let outbound = Outbound {
                endpoint,
                fields: &fields,
                body: &body,
                tenant,
            };
            let work = async {
                let slot = self.node_slot(tenant, caller.priority).await?;
                stream.admitted();
                let answer = self
                    .try_candidates(&client_header, ctx, &outbound, &plan)
                    .await?;
                Ok::<_, GatewayError>((slot, answer))
            };
            tokio::select! {
                done = work => Ok(done),
                why = interrupted(session, &stream) => Err(why),
            }
        };
        *session.req_header_mut() = client_header;
        let (_slot, answer) = match waited {
            Ok(done) => done?,
            Err(Interrupted::ClientGone) => {
                self.end_stream(&stream, EndCause::Client);
                // nginx's "client closed request", for logs and metrics only.
                ctx.status = 499;
                session.set_keepalive(None);
                return Ok(());
            }
            Err(Interrupted::Ended(cause, reason)) => {
                self.end_stream(&stream, cause);
                return Err(GatewayError::Ended { cause, reason });
            }
        };
        let mut upstream = answer.upstream;
        let target = &self.router.targets()[answer.target];
        span.record("upstream", target.settings.name.as_str());
        stream.set_target(&target.settings.name);

        let Some(upstream_header) = upstream.response_header() else {
            return Err(GatewayError::UpstreamUnavailable {
                upstream: target.settings.name.clone(),
                cause: "no response header",
            });
        };
        let mut translator = target
            .provider()
            .response_translator(&answer.reply, upstream_header.status.as_u16());
        let mut header = self
            .client_response_header(upstream_header, &translator, ctx, session.is_http2())
            .map_err(|_| GatewayError::UpstreamUnavailable {
                upstream: target.settings.name.clone(),
                cause: "invalid response header",
            })?;
        let _ = header.insert_header("x-sluice-target", target.settings.name.as_str());
        let _ = header.insert_header("x-sluice-attempts", answer.attempts);
        if let Some(model) = &downgrade {
            let _ = header.insert_header("x-sluice-downgraded-to", model.as_str());
        }
        if let Some(admission) = &caller.admission {
            for (name, value) in crate::error::rate_limit_headers(admission.status()) {
                let _ = header.insert_header(name, value);
            }
        }
        ctx.status = header.status.as_u16();
        let is_sse = header
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if session
            .write_response_header(Box::new(header))
            .await
            .is_err()
        {
            // The client left before the answer: drop the upstream call too.
            upstream.shutdown().await;
            return Ok(());
        }

        upstream.set_read_timeout(Some(target.settings.idle_timeout));
        let running_cost = |delivered: &str| {
            // About four characters a token; the record counts exactly later.
            let completion = delivered.len() as u64 / 4;
            self.accounting
                .cost_micros(tenant, answer.upstream_model, prompt_estimate, completion)
                .unwrap_or(0)
        };
        let cutoff = budget.as_ref().filter(|_| is_sse).map(|b| Cutoff {
            reservation: &b.reservation,
            running_cost: &running_cost,
            model: answer.upstream_model,
        });
        let relay = self.relay_body(
            session,
            Relay {
                upstream: &mut upstream,
                tracker: &mut translator,
                target,
                is_sse,
                cutoff,
                stream: &mut stream,
                model: answer.upstream_model,
            },
        );
        let (outcome, first_byte_at) = match target.settings.total_timeout {
            None => relay.await,
            Some(total) => {
                let left = total.saturating_sub(ctx.started.elapsed());
                match tokio::time::timeout(left, relay).await {
                    Ok(done) => done,
                    Err(_) => {
                        // Past the upstream's total time: end the answer as a broken one.
                        let error = GatewayError::UpstreamTimeout {
                            upstream: target.settings.name.clone(),
                            phase: "total",
                        };
                        tracing::warn!(upstream = %target.settings.name, "upstream exceeded its total timeout");
                        if is_sse {
                            let _ = session.write_response_body(error.sse_event(), true).await;
                        } else {
                            session.set_keepalive(None);
                            session.shutdown().await;
                        }
                        (RelayOutcome::UpstreamBroke, None)
                    }
                }
            }
        };
        if let (Some(at), true) = (first_byte_at, is_sse) {
            self.metrics
                .upstream_first_token
                .with_label_values(&[target.settings.name.as_str()])
                .observe(at.duration_since(ctx.started).as_secs_f64());
        }
        if outcome == RelayOutcome::Completed && upstream.response_done() {
            if let Ok(peer) = self.upstreams.peer(answer.target).await {
                self.upstreams.release(upstream, peer).await;
            }
        } else {
            upstream.shutdown().await;
        }
        let reported = translator.usage();
        if let (Some(admission), Some(u)) = (caller.admission.as_mut(), reported) {
            admission.settle(u.prompt_tokens + u.completion_tokens);
        }
        let key = caller.key.as_deref();
        let cost = self.accounting.record(Finished {
            time_us: ctx.started_unix_us,
            request_id: ctx.request_id.as_str(),
            tenant: key.map(|k| k.tenant.as_str()),
            key_id: key.map(|k| k.key_id.as_str()),
            model: &fields.model,
            provider: &target.settings.name,
            upstream_model: answer.upstream_model,
            reported,
            request_body: &body,
            delivered_text: translator.delivered_text(),
            latency_ms: ctx.started.elapsed().as_millis() as u64,
            ttft_ms: first_byte_at.map(|t| t.duration_since(ctx.started).as_millis() as u64),
            status: ctx.status,
            stream: fields.stream,
            end_state: match outcome {
                RelayOutcome::Completed => EndState::Completed,
                RelayOutcome::Ended(_) => EndState::Cancelled,
                RelayOutcome::UpstreamBroke => EndState::Broken,
            },
        });
        if let Some(hold) = budget {
            hold.reservation.settle(cost.unwrap_or(0));
        }
        Ok(())
    }

    /// Relays the response body to the client piece by piece, through the
    /// usage tracker, obeying the stream's controls. A broken upstream ends
    /// an SSE stream with an OpenAI error event; a broken plain body closes
    /// the client connection.
    async fn relay_body(
        &self,
        session: &mut ServerSession,
        relay: Relay<'_, '_>,
    ) -> (RelayOutcome, Option<Instant>) {
        let Relay {
            upstream,
            tracker,
            target,
            is_sse,
            cutoff,
            stream,
            model,
        } = relay;
        let mut first_byte_at = None;
        // Watch the client while waiting on the upstream: when it leaves, the
        // upstream call is dropped at once (the provider stops generating
        // and billing), not at the next write.
        let mut watch_client = true;
        let mut paused_at: Option<Instant> = None;
        let max_pause = self.streams.settings.max_pause;
        loop {
            let event = match paused_at {
                // Paused: read nothing (the upstream's socket fills and it
                // waits), write nothing, keep everything; watch the client,
                // the controls and the clock.
                Some(since) => tokio::select! {
                    control = stream.changed() => RelayEvent::Control(control),
                    event = client_event(session), if watch_client => RelayEvent::Client(event),
                    () = tokio::time::sleep_until((since + max_pause).into()) => {
                        RelayEvent::Control(Control::End { cause: EndCause::PauseTimeout, reason: None })
                    }
                },
                None => tokio::select! {
                    read = upstream.read_response_body() => RelayEvent::Read(read),
                    control = stream.changed() => RelayEvent::Control(control),
                    event = client_event(session), if watch_client => RelayEvent::Client(event),
                },
            };
            match event {
                RelayEvent::Read(Ok(Some(chunk))) => {
                    let out = tracker.relay(chunk);
                    if first_byte_at.is_none() && !out.is_empty() {
                        first_byte_at = Some(Instant::now());
                    }
                    if session.write_response_body(out, false).await.is_err() {
                        return self.ended_by_client(stream, first_byte_at);
                    }
                    stream.set_tokens(tracker.delivered_text().len() as u64 / 4);
                    if let Some(cut) = &cutoff {
                        let running = (cut.running_cost)(tracker.delivered_text());
                        if cut.reservation.would_exceed(running) {
                            self.metrics
                                .budget_events
                                .with_label_values(&["stream_cut"])
                                .inc();
                            self.end_stream(stream, EndCause::Budget);
                            let _ = session
                                .write_response_body(cut.closing_events(running), true)
                                .await;
                            return (RelayOutcome::Ended(EndCause::Budget), first_byte_at);
                        }
                    }
                }
                RelayEvent::Read(Ok(None)) => break,
                RelayEvent::Read(Err(e)) => {
                    let error = upstream_failure(target, &e, "reading the response body");
                    tracing::warn!(error = %e, "upstream broke off mid-response");
                    let rest = tracker.finish();
                    if is_sse {
                        // Headers are gone already: end the stream with an
                        // OpenAI error event the SDK raises, then [DONE].
                        let _ = session.write_response_body(rest, false).await;
                        let _ = session.write_response_body(error.sse_event(), true).await;
                    } else {
                        // A truncated JSON body must not look complete: drop
                        // the connection so the client sees the failure.
                        session.set_keepalive(None);
                        session.shutdown().await;
                    }
                    return (RelayOutcome::UpstreamBroke, first_byte_at);
                }
                RelayEvent::Client(ClientEvent::Gone) => {
                    self.observe_pause(paused_at.take());
                    return self.ended_by_client(stream, first_byte_at);
                }
                // Bytes from a pipelining client: stop watching, carry on.
                RelayEvent::Client(ClientEvent::SentMore) => watch_client = false,
                RelayEvent::Control(Control::Pause) => {
                    paused_at = paused_at.or_else(|| Some(Instant::now()));
                }
                RelayEvent::Control(Control::Run) => self.observe_pause(paused_at.take()),
                RelayEvent::Control(Control::End { cause, reason }) => {
                    self.observe_pause(paused_at.take());
                    stream.end(cause);
                    self.end_stream(stream, cause);
                    tracing::info!(cause = cause.label(), "stream ended by its controls");
                    if is_sse {
                        let closing = closing_events(stream.id(), model, cause, reason.as_deref());
                        let _ = session.write_response_body(closing, true).await;
                    } else {
                        session.set_keepalive(None);
                        session.shutdown().await;
                    }
                    return (RelayOutcome::Ended(cause), first_byte_at);
                }
            }
        }
        let rest = tracker.finish();
        if first_byte_at.is_none() && !rest.is_empty() {
            first_byte_at = Some(Instant::now());
        }
        if session.write_response_body(rest, true).await.is_err() {
            return self.ended_by_client(stream, first_byte_at);
        }
        (RelayOutcome::Completed, first_byte_at)
    }

    fn ended_by_client(
        &self,
        stream: &StreamHandle,
        first_byte_at: Option<Instant>,
    ) -> (RelayOutcome, Option<Instant>) {
        self.end_stream(stream, EndCause::Client);
        (RelayOutcome::Ended(EndCause::Client), first_byte_at)
    }

    fn observe_pause(&self, paused_at: Option<Instant>) {
        if let Some(since) = paused_at {
            self.metrics
                .stream_pause
                .observe(since.elapsed().as_secs_f64());
        }
    }

    /// The client's response header: the upstream's status and headers, less
    /// hop-by-hop ones, plus sluice's own; a translated reply gets the
    /// translator's status and content type (and no upstream length).
    fn client_response_header(
        &self,
        upstream: &ResponseHeader,
        translator: &ResponseTranslator,
        ctx: &RequestCtx,
        downstream_h2: bool,
    ) -> pingora::Result<ResponseHeader> {
        let mut header = self.response_header(ctx, translator.status())?;
        let translated = translator.content_type();
        if let Some(content_type) = translated {
            header.insert_header("content-type", content_type)?;
        }
        let mut has_length = false;
        for (name, value) in upstream.headers.iter() {
            if HOP_BY_HOP.contains(&name.as_str()) || name == "x-request-id" {
                continue;
            }
            if translated.is_some()
                && matches!(
                    name.as_str(),
                    "content-type" | "content-length" | "content-encoding"
                )
            {
                continue;
            }
            has_length |= name == "content-length";
            header.append_header(name.clone(), value.clone())?;
        }
        if !has_length && !downstream_h2 {
            header.insert_header("transfer-encoding", "chunked")?;
        }
        Ok(header)
    }
}

/// Most of an oversized body read and discarded before answering 413.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Longest time spent discarding it.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards what is left of a refused body (bounded in bytes and
/// time), so that a client still uploading reads the 413 instead of a
/// broken pipe; nginx calls this a lingering close.
async fn drain_body(session: &mut ServerSession) {
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_MAX_TIME;
    while drained < DRAIN_MAX_BYTES {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => drained += chunk.len(),
            _ => break,
        }
    }
}

/// Reads the whole request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    session: &mut ServerSession,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = session
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // Unread body bytes would be taken for the next request: close after answering.
        session.set_keepalive(None);
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::BodyRead);
            }
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.as_ref().map_or(0, BytesMut::len);
        if so_far + chunk.len() > limit {
            drain_body(session).await;
            session.set_keepalive(None);
            return Err(GatewayError::BodyTooLarge { limit });
        }
        // The common case is one chunk: keep it without copying.
        match (&first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(f.len() + chunk.len()));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&chunk);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match rest {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}
