//! Phase 5, relay: runs once an answer was chosen. Sends the client its
//! status and headers, then the body piece by piece as the source produces
//! it (SSE events are never buffered to the end), through the provider's
//! translator, under the stream's controls (pause, resume, cancel,
//! preempt), its hard budget and the upstream's timeouts. Watches the
//! client meanwhile: when it leaves, the answer's source is dropped at once.
//! A broken source ends an SSE stream with an error event and closes a
//! plain body's connection (a truncated JSON body must not look complete).

use super::attempt::Answer;
use super::attempt_error::{AttemptError, AttemptErrorKind, TimeoutPhase};
use super::intake::estimate_tokens;
use super::AnswerSource;
use super::{Dialect, ForwardCtx, Services};
use crate::downstream::dialect::StreamEnd;
use crate::downstream::respond::{response_header, UnknownLength};
use crate::downstream::watch::{client_event, ClientEvent};
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use sluice_filters::{Control, EndCause};
use sluice_providers::dialects::messages::MessagesWriter;
use sluice_providers::dialects::responses::ResponsesWriter;
use sluice_providers::dialects::DialectWriter;
use sluice_providers::{ResponseTranslator, UpstreamTarget};
use std::time::Instant;

/// How relaying a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutcome {
    /// Every byte reached the client.
    Completed,
    /// The source failed part-way (or ran past its total time).
    SourceBroke,
    /// Ended early: the client left, the control API cancelled or preempted
    /// it, a pause ran out, or the budget did. The source is dropped.
    Ended(EndCause),
}

/// What the relay leaves for settling.
pub struct Relayed<'r> {
    /// The target that answered.
    pub target: &'r UpstreamTarget,
    /// The model name it was called with.
    pub upstream_model: String,
    /// The translator, holding usage and the delivered text.
    pub translator: ResponseTranslator,
    /// How it ended.
    pub outcome: RelayOutcome,
    /// When the first body byte went to the client.
    pub first_byte_at: Option<Instant>,
    /// Whether the answer is an SSE stream.
    pub is_sse: bool,
    /// Under strict durability, the end of a completed answer, held back
    /// until its record is durable ([`end_after_record`] sends it).
    pub tail: Option<Bytes>,
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

/// What woke the relay up.
enum RelayEvent {
    /// The source sent more (or ended, or failed).
    Read(Result<Option<Bytes>, AttemptError>),
    /// The stream's controls changed.
    Control(Control),
    /// The client left, or sent more bytes.
    Client(ClientEvent),
}

/// Relays `answer` to the client. `Ok(None)`: the client left before the
/// headers could be written (the source is closed; nothing to settle).
pub async fn relay<'r>(
    services: &Services,
    session: &mut ServerSession,
    ctx: &mut ForwardCtx<'r>,
    mut answer: Answer<'r>,
    rctx: &mut RequestCtx,
) -> Result<Option<Relayed<'r>>, GatewayError> {
    let target = answer.target;
    let name = target.settings.name.as_str();
    ctx.stream.set_target(name);
    let mut translator = translator_for(ctx, &answer);
    let framing = UnknownLength::choose(session);
    let header =
        client_response_header(ctx, &answer, &translator, rctx, framing).map_err(|_| {
            GatewayError::UpstreamUnavailable {
                upstream: name.to_string(),
                cause: "invalid response header",
            }
        })?;
    rctx.status = header.status.as_u16();
    let is_sse = header
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let written = rctx
        .waiting(session.write_response_header(Box::new(header)))
        .await;
    if written.is_err() {
        // The client left before the answer: drop the source too.
        close_source(services, answer.source, answer.target_index, false).await;
        return Ok(None);
    }
    answer.source.set_idle_timeout(target.settings.idle_timeout);
    let body = relay_body(
        services,
        session,
        &mut *ctx,
        &mut answer,
        &mut translator,
        is_sse,
    );
    let (outcome, first_byte_at, tail, waited) = match target.settings.total_timeout {
        None => body.await,
        Some(total) => {
            let left = total.saturating_sub(rctx.started.elapsed());
            match tokio::time::timeout(left, body).await {
                Ok(done) => done,
                Err(_) => {
                    tracing::warn!(upstream = name, "upstream exceeded its total timeout");
                    let error =
                        AttemptError::new(name, AttemptErrorKind::Timeout(TimeoutPhase::Total));
                    broken_end(ctx.dialect, session, error.into_gateway_error(), is_sse).await;
                    (RelayOutcome::SourceBroke, None, None, left)
                }
            }
        }
    };
    rctx.waited += waited;
    if let (Some(at), true) = (first_byte_at, is_sse) {
        services
            .metrics
            .upstream_first_token(name, at.duration_since(rctx.started));
    }
    let completed = outcome == RelayOutcome::Completed;
    close_source(services, answer.source, answer.target_index, completed).await;
    Ok(Some(Relayed {
        target,
        upstream_model: answer.upstream_model,
        translator,
        outcome,
        first_byte_at,
        is_sse,
        tail: tail.filter(|_| completed),
    }))
}

/// The reply's translator: OpenAI's shape as the provider's adapter writes
/// it; for another client dialect, rewritten into it, or (from an upstream
/// that speaks it) relayed untouched and read on the side.
fn translator_for(ctx: &ForwardCtx<'_>, answer: &Answer<'_>) -> ResponseTranslator {
    let status = answer.source.status();
    let Some(dialect) = ctx.dialect.client() else {
        return answer.provider.response_translator(&answer.reply, status);
    };
    if answer.native {
        return answer
            .provider
            .native_translator(dialect, &answer.reply, status);
    }
    let stream = ctx.fields.stream;
    let model = answer.upstream_model.as_str();
    let writer = match &ctx.turn {
        Some(turn) => {
            DialectWriter::Responses(ResponsesWriter::new(stream, &turn.id, model, &turn.request))
        }
        None => DialectWriter::Messages(MessagesWriter::new(stream, model)),
    };
    answer
        .provider
        .response_translator(&answer.reply, status)
        .rewritten(writer, stream)
}

/// Sends a strict answer's held tail once its record is durable; when the
/// ledger could take it nowhere, the answer ends in an error instead (an
/// SSE error event, or a closed connection short of its body), so no
/// client holds a complete answer the ledger does not.
pub async fn end_after_record(
    session: &mut ServerSession,
    dialect: Dialect,
    tail: Bytes,
    is_sse: bool,
    recorded: bool,
) {
    if recorded {
        let _ = session.write_response_body(tail, true).await;
    } else {
        tracing::error!("usage record not durable: ending the answer with an error");
        broken_end(dialect, session, GatewayError::LedgerUnavailable, is_sse).await;
    }
}

/// Returns a finished HTTP exchange's connection to the pool, or closes a
/// source that did not finish (which stops the upstream's work).
async fn close_source(
    services: &Services,
    source: AnswerSource,
    target_index: usize,
    completed: bool,
) {
    match source {
        AnswerSource::Http(mut session) => {
            if completed && session.response_done() {
                if let Ok(peer) = services.upstreams.peer(target_index).await {
                    services.upstreams.release(session, peer).await;
                }
            } else {
                session.shutdown().await;
            }
        }
        // Dropping a local answer cancels the work behind it.
        AnswerSource::Local(reply) => drop(reply),
    }
}

/// Ends a response whose source broke: an error event for SSE, a closed
/// connection for a plain body.
async fn broken_end(
    dialect: Dialect,
    session: &mut ServerSession,
    error: GatewayError,
    is_sse: bool,
) {
    if is_sse {
        let _ = session
            .write_response_body(dialect.error_event(&error), true)
            .await;
    } else {
        session.set_keepalive(None);
        session.shutdown().await;
    }
}

/// The body loop's state: what it reads, writes and obeys.
struct BodyLoop<'a, 's> {
    services: &'a Services,
    session: &'a mut ServerSession,
    stream: &'a mut sluice_filters::StreamHandle,
    answer: &'a mut Answer<'s>,
    translator: &'a mut ResponseTranslator,
    dialect: Dialect,
    /// The caller's tenant (prices) and the prompt estimate (running cost).
    tenant: Option<&'a str>,
    prompt_estimate: u64,
    /// The budget hold a stream is cut at, for SSE answers under a budget.
    budget: Option<&'a sluice_filters::SpendHold>,
    is_sse: bool,
    first_byte_at: Option<Instant>,
    /// Strict durability: what is held back from the client until the
    /// record is durable (the SSE `[DONE]` and after; a plain body whole).
    held: Option<BytesMut>,
    /// Time spent waiting on the source or the client.
    waited: std::time::Duration,
}

/// The body loop: reads the source, writes the client, obeys the controls.
/// Returns how it ended, when the first byte went out, the held tail, and
/// the time spent waiting on the source or the client.
async fn relay_body(
    services: &Services,
    session: &mut ServerSession,
    ctx: &mut ForwardCtx<'_>,
    answer: &mut Answer<'_>,
    translator: &mut ResponseTranslator,
    is_sse: bool,
) -> (
    RelayOutcome,
    Option<Instant>,
    Option<Bytes>,
    std::time::Duration,
) {
    let mut body = BodyLoop {
        services,
        session,
        tenant: ctx.caller.key.as_deref().map(|k| k.tenant.as_str()),
        budget: ctx.spend.as_ref().filter(|_| is_sse),
        stream: &mut ctx.stream,
        answer,
        translator,
        dialect: ctx.dialect,
        prompt_estimate: ctx.prompt_estimate,
        is_sse,
        first_byte_at: None,
        // Held back under strict durability, and while a Responses turn
        // is stored (its id must work once the client has the answer).
        held: (services.accounting.strict() || ctx.turn.as_ref().is_some_and(|t| t.request.store))
            .then(BytesMut::new),
        waited: std::time::Duration::ZERO,
    };
    let outcome = body.run().await;
    (
        outcome,
        body.first_byte_at,
        body.held.map(BytesMut::freeze),
        body.waited,
    )
}

impl BodyLoop<'_, '_> {
    async fn run(&mut self) -> RelayOutcome {
        // Watch the client while waiting on the source: when it leaves, the
        // source is dropped at once (the provider stops generating and
        // billing), not at the next write.
        let mut watch_client = true;
        let mut paused_at: Option<Instant> = None;
        loop {
            let waiting = Instant::now();
            let event = self.next_event(paused_at, watch_client).await;
            self.waited += waiting.elapsed();
            match event {
                RelayEvent::Read(Ok(Some(chunk))) => {
                    if let Some(ended) = self.forward_ready(chunk).await {
                        return ended;
                    }
                }
                RelayEvent::Read(Ok(None)) => return self.complete().await,
                RelayEvent::Read(Err(failure)) => return self.source_broke(failure).await,
                RelayEvent::Client(ClientEvent::Gone) => {
                    self.services.metrics.stream_paused(paused_at.take());
                    return self.client_left();
                }
                // Bytes from a pipelining client: stop watching, carry on.
                RelayEvent::Client(ClientEvent::SentMore) => watch_client = false,
                RelayEvent::Control(Control::Pause) => {
                    if paused_at.is_none() {
                        paused_at = Some(Instant::now());
                        self.answer.source.pause().await;
                    }
                }
                RelayEvent::Control(Control::Run) => {
                    if paused_at.is_some() {
                        self.answer.source.resume().await;
                    }
                    self.services.metrics.stream_paused(paused_at.take())
                }
                RelayEvent::Control(Control::End { cause, reason }) => {
                    self.services.metrics.stream_paused(paused_at.take());
                    return self.stopped(cause, reason.as_deref()).await;
                }
            }
        }
    }

    /// Waits for the next thing to act on. Paused: read nothing (the
    /// source's buffer fills and it waits), write nothing, keep everything;
    /// watch the client, the controls and the pause limit.
    async fn next_event(&mut self, paused_at: Option<Instant>, watch_client: bool) -> RelayEvent {
        let name = self.answer.target.settings.name.as_str();
        match paused_at {
            Some(since) => {
                let limit = since + self.services.streams.settings.max_pause;
                tokio::select! {
                    control = self.stream.changed() => RelayEvent::Control(control),
                    event = client_event(self.session), if watch_client => RelayEvent::Client(event),
                    () = tokio::time::sleep_until(limit.into()) => {
                        RelayEvent::Control(Control::End { cause: EndCause::PauseTimeout, reason: None })
                    }
                }
            }
            // Biased: a control (cancel, pause) always wins; then the
            // source, so that an answer whose end is already here completes
            // (and is recorded so) even if the client, having read it all,
            // has hung up meanwhile. A client gone mid-stream is still seen
            // at once: here when the source waits, else by the failed write.
            None => tokio::select! {
                biased;
                control = self.stream.changed() => RelayEvent::Control(control),
                read = self.answer.source.read(name) => RelayEvent::Read(read),
                event = client_event(self.session), if watch_client => RelayEvent::Client(event),
            },
        }
    }

    /// Sends `chunk` on, together with every further piece the source
    /// already holds (read without waiting), in one write; `Some` when the
    /// stream ended here (the source's end or failure was among them, the
    /// client left, or a piece took it past its hard budget).
    ///
    /// Pingora flushes (one `sendto`) per `write_response_body`, and an
    /// upstream's burst of SSE events arrives in one `recv` but is handed
    /// out one chunk per read: written one by one, ten events cost ten
    /// syscalls where pingora's own proxy writes them as one
    /// (`response_duplex_vec`). A source read is cancel-safe (pingora's
    /// proxy polls it inside `select!` too), so a read that is not ready at
    /// once is dropped and waited for by the next turn of the loop. The
    /// budget is checked after each piece, as before: the piece that passes
    /// it still goes out, then the cut, so the client sees the same bytes.
    async fn forward_ready(&mut self, chunk: Bytes) -> Option<RelayOutcome> {
        let name = self.answer.target.settings.name.as_str();
        let mut out = Gathered::new(self.translator.relay(chunk));
        let mut cut = self.passed_budget();
        let mut ended = None;
        while cut.is_none() && out.len() < COALESCE_LIMIT {
            match self.answer.source.read(name).now_or_never() {
                None => break,
                Some(Ok(Some(more))) => {
                    out.push(self.translator.relay(more));
                    cut = self.passed_budget();
                }
                Some(end) => {
                    ended = Some(end);
                    break;
                }
            }
        }
        let out = out.into_bytes();
        if self.first_byte_at.is_none() && !out.is_empty() {
            self.first_byte_at = Some(Instant::now());
        }
        let out = self.hold_back(out);
        if !out.is_empty() {
            let writing = Instant::now();
            let written = self.session.write_response_body(out, false).await;
            self.waited += writing.elapsed();
            if written.is_err() {
                return Some(self.client_left());
            }
        }
        if let Some(running) = cut {
            return Some(self.cut_for_budget(running).await);
        }
        match ended? {
            Ok(Some(_)) => unreachable!("a read with more body stays in the gathering loop"),
            Ok(None) => Some(self.complete().await),
            Err(failure) => Some(self.source_broke(failure).await),
        }
    }

    /// Counts what was delivered so far and, for a stream under a hard
    /// budget, returns its running cost once that is past the budget.
    fn passed_budget(&mut self) -> Option<i64> {
        let delivered = estimate_tokens(self.translator.delivered_text().len());
        self.stream.set_tokens(delivered);
        let budget = self.budget?;
        let running = self
            .services
            .accounting
            .cost_micros(
                self.tenant,
                &self.answer.upstream_model,
                self.prompt_estimate,
                delivered,
            )
            .unwrap_or(0);
        budget.reservation.would_exceed(running).then_some(running)
    }

    /// Ends a stream that went past its hard budget with the dialect's
    /// closing events.
    async fn cut_for_budget(&mut self, running: i64) -> RelayOutcome {
        self.services.metrics.budget_event("stream_cut");
        self.services
            .streams
            .end_stream(self.stream, EndCause::Budget);
        let end = StreamEnd::BudgetCut {
            spent_micros: running,
        };
        let closing = self.dialect.closing_events(
            &end,
            "chatcmpl-sluice-budget-cut",
            &self.answer.upstream_model,
            self.translator,
        );
        let _ = self.session.write_response_body(closing, true).await;
        RelayOutcome::Ended(EndCause::Budget)
    }

    /// The source failed mid-answer: what the translator holds, then the
    /// dialect's error event (SSE) or a closed connection (a plain body).
    async fn source_broke(&mut self, failure: AttemptError) -> RelayOutcome {
        tracing::warn!(reason = %failure.reason(), "upstream broke off mid-response");
        let rest = self.translator.finish();
        if self.is_sse {
            let _ = self.session.write_response_body(rest, false).await;
        }
        let error = failure.into_gateway_error();
        broken_end(self.dialect, self.session, error, self.is_sse).await;
        RelayOutcome::SourceBroke
    }

    /// Under strict durability, keeps back what must wait for the record
    /// and returns what may go now: an SSE stream's deltas flow, its
    /// `data: [DONE]` and whatever follows wait; a plain body waits whole.
    fn hold_back(&mut self, out: Bytes) -> Bytes {
        let Some(held) = &mut self.held else {
            return out;
        };
        if !self.is_sse || !held.is_empty() {
            held.extend_from_slice(&out);
            return Bytes::new();
        }
        match memchr::memmem::find(&out, self.dialect.stream_end_marker()) {
            Some(at) => {
                held.extend_from_slice(&out[at..]);
                out.slice(..at)
            }
            None => out,
        }
    }

    /// The source ended: send what the translator still holds (under strict
    /// durability, hold it with the rest for after the record).
    async fn complete(&mut self) -> RelayOutcome {
        let rest = self.translator.finish();
        if self.first_byte_at.is_none() && !rest.is_empty() {
            self.first_byte_at = Some(Instant::now());
        }
        if let Some(held) = &mut self.held {
            held.extend_from_slice(&rest);
            return RelayOutcome::Completed;
        }
        if self.session.write_response_body(rest, true).await.is_err() {
            return self.client_left();
        }
        RelayOutcome::Completed
    }

    /// Ends a stream its controls stopped: closing events for SSE, a
    /// closed connection for a plain body.
    async fn stopped(&mut self, cause: EndCause, reason: Option<&str>) -> RelayOutcome {
        self.services.streams.end_stream(self.stream, cause);
        tracing::info!(cause = cause.label(), "stream ended by its controls");
        if self.is_sse {
            let end = StreamEnd::Stopped {
                stream_id: self.stream.id(),
                cause,
                reason,
            };
            let id = format!("chatcmpl-{}", self.stream.id());
            let closing = self.dialect.closing_events(
                &end,
                &id,
                &self.answer.upstream_model,
                self.translator,
            );
            let _ = self.session.write_response_body(closing, true).await;
        } else {
            self.session.set_keepalive(None);
            self.session.shutdown().await;
        }
        RelayOutcome::Ended(cause)
    }

    fn client_left(&self) -> RelayOutcome {
        self.services
            .streams
            .end_stream(self.stream, EndCause::Client);
        RelayOutcome::Ended(EndCause::Client)
    }
}

/// Most bytes gathered from the source into one client write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Pieces for one client write: the first kept as it is (no copy for the
/// common single piece), later ones appended.
struct Gathered {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Gathered {
    fn new(first: Bytes) -> Self {
        Gathered { first, more: None }
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let more = self.more.get_or_insert_with(|| {
            let mut all = BytesMut::with_capacity(self.first.len() + piece.len() * 4);
            all.extend_from_slice(&self.first);
            all
        });
        more.extend_from_slice(&piece);
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, BytesMut::freeze)
    }
}

/// The client's response header: the upstream's status and headers, less
/// hop-by-hop ones, plus sluice's own; a translated reply (and a local one)
/// gets the translator's status and content type and no upstream length.
fn client_response_header(
    ctx: &ForwardCtx<'_>,
    answer: &Answer<'_>,
    translator: &ResponseTranslator,
    rctx: &RequestCtx,
    framing: UnknownLength,
) -> pingora::Result<ResponseHeader> {
    let mut header = response_header(rctx, translator.status())?;
    let translated = translator
        .content_type()
        .or_else(|| answer.source.local_content_type());
    if let Some(content_type) = translated {
        header.insert_header("content-type", content_type)?;
    }
    let mut has_length = false;
    if let Some(upstream) = answer.source.http_header() {
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
    }
    if !has_length {
        framing.apply(&mut header)?;
    }
    header.insert_header("x-sluice-target", answer.target.settings.name.as_str())?;
    header.insert_header("x-sluice-attempts", answer.attempts)?;
    if let Some(model) = &ctx.downgraded_to {
        header.insert_header("x-sluice-downgraded-to", model.as_str())?;
    }
    if let Some(admission) = &ctx.caller.admission {
        for (name, value) in crate::error::rate_limit_headers(admission.status()) {
            header.insert_header(name, value)?;
        }
    }
    Ok(header)
}
