//! In-process answer sources: the built-in engine (`sluice_batcher`) as a
//! [`LocalBackend`], so a `kind: local` upstream is a target like any other —
//! in chains, under quotas, budgets and stream control. [`request`] reads an
//! OpenAI request for the engine; [`reply`] writes its tokens back in
//! OpenAI's shape.

pub mod reply;
pub mod request;
pub mod start;

use crate::forward::{
    BackendLoad, LocalBackend, LocalControls, LocalFailure, LocalReply, LocalRequest,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::StreamExt;
use reply::{ReplyWriter, Step};
use sluice_batcher::serve::ServedModel;
use sluice_batcher::{BatcherError, EngineHandle, FinishReason, GenerateRequest, SeqId};
use sluice_config::Priority;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The built-in engine serving one model.
pub struct EngineBackend {
    /// The model with its engine running.
    model: ServedModel,
    /// One permit per request in the engine (running or waiting): the
    /// bound past which it answers overloaded at once, so a chain moves on
    /// instead of queueing behind it. A permit lives as long as its answer.
    admitted: Arc<Semaphore>,
}

impl EngineBackend {
    /// A backend over a started model taking at most `capacity` requests
    /// at once (`max_sequences` running plus `max_waiting` waiting).
    pub fn new(model: ServedModel, capacity: usize) -> Arc<Self> {
        Arc::new(EngineBackend {
            model,
            admitted: Arc::new(Semaphore::new(capacity)),
        })
    }
}

/// The engine's priority for a request's class: higher runs first and is
/// preempted last.
fn engine_priority(priority: Priority) -> i32 {
    match priority {
        Priority::Batch => 0,
        Priority::Standard => 1,
        Priority::Interactive => 2,
    }
}

#[async_trait]
impl LocalBackend for EngineBackend {
    async fn schedule(&self, request: LocalRequest<'_>) -> Result<LocalReply, LocalFailure> {
        let read = match request::read(request.endpoint, request.body, &self.model) {
            Ok(read) => read,
            Err(refusal) => {
                let body = Bytes::from(refusal.body().to_string());
                return Ok(LocalReply {
                    status: refusal.status,
                    content_type: "application/json",
                    body: futures_util::stream::iter([Ok(body)]).boxed(),
                    controls: None,
                });
            }
        };
        let n = read.n;
        let permits = self
            .admitted
            .clone()
            .try_acquire_many_owned(n as u32)
            .map_err(|_| LocalFailure::Overloaded)?;
        let engine = self.model.engine();
        let mut choices = Vec::with_capacity(n);
        for index in 0..n {
            // Choices differ by seed (seed, seed + 1, ...), so a seeded
            // request with n > 1 is reproducible too.
            let mut sampling = read.sampling.clone();
            sampling.seed = sampling.seed.wrapping_add(index as u64);
            let generate = GenerateRequest::from_tokens(read.prompt.clone(), sampling)
                .with_priority(engine_priority(request.priority));
            let tokens = engine.try_submit(generate).map_err(|e| match e {
                BatcherError::QueueFull => LocalFailure::Overloaded,
                other => LocalFailure::Failed(other.to_string()),
            })?;
            choices.push(tokens);
        }
        // Wait for each choice's first event: until then the engine may
        // still fail, and a failure before the first byte moves the chain on.
        let mut events = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for (index, mut tokens) in choices.into_iter().enumerate() {
            let first = match tokens.recv().await.map(Step::from) {
                Some(Step::Failed(why)) => return Err(LocalFailure::Failed(why)),
                None => return Err(LocalFailure::Failed("the engine stopped".into())),
                Some(step) => step,
            };
            ids.push(tokens.id());
            let rest = tokens.map(Step::from);
            events.push(
                futures_util::stream::iter([first])
                    .chain(rest)
                    .map(move |step| (index, step))
                    .boxed(),
            );
        }
        let writer = ReplyWriter::new(
            request.endpoint,
            request.model,
            &format!("{:016x}", rand::random::<u64>()),
            read.logprobs.then(|| self.model.clone()),
            n,
        );
        let answer = Answer {
            _permits: permits,
            events: futures_util::stream::select_all(events),
            writer,
            stream: read.stream,
            include_usage: read.include_usage,
            opened: vec![false; n],
            running: n,
        };
        Ok(LocalReply {
            status: 200,
            content_type: if read.stream {
                "text/event-stream"
            } else {
                "application/json"
            },
            body: futures_util::stream::unfold(answer, Answer::next_piece).boxed(),
            controls: Some(Box::new(EngineControls {
                engine: engine.clone(),
                ids,
            })),
        })
    }

    async fn load(&self) -> Option<BackendLoad> {
        let stats = self.model.engine().stats().await.ok()?;
        Some(BackendLoad {
            waiting: stats.waiting,
            running: stats.running,
            paused: stats.paused,
            kv_blocks_used: stats.blocks_used,
            kv_blocks_total: stats.blocks_total,
            kv_block_size: sluice_batcher::serve::BLOCK_SIZE,
            preemptions: stats.preemptions,
            generated_tokens: stats.generated_tokens,
            prefill_tokens: stats.prefill_tokens_computed,
            kv_blocks_cached: stats.blocks_cached,
            prefix_cache_queries: stats.prefix_cache_queries,
            prefix_cache_hits: stats.prefix_cache_hits,
            prefix_cache_evictions: stats.prefix_cache_evictions,
        })
    }
}

/// One answer being produced: the engine's events in (one stream per
/// choice), OpenAI pieces out. Dropping it drops the token streams, which
/// cancels the sequences and frees their KV blocks before the engine's next
/// step.
struct Answer {
    /// The answer's places in the engine, given back when it is dropped.
    _permits: OwnedSemaphorePermit,
    /// Every choice's steps, tagged with its index.
    events: SelectAll<BoxStream<'static, (usize, Step)>>,
    writer: ReplyWriter,
    stream: bool,
    include_usage: bool,
    /// Which chat choices' opening (the role) went out.
    opened: Vec<bool>,
    /// Choices still running.
    running: usize,
}

impl Answer {
    /// The next piece of the body; `None` after the last.
    async fn next_piece(mut self) -> Option<(Result<Bytes, LocalFailure>, Self)> {
        if self.running == 0 {
            return None;
        }
        loop {
            let Some((index, step)) = self.events.next().await else {
                self.running = 0;
                return Some((Err(LocalFailure::Failed("the engine stopped".into())), self));
            };
            match step {
                Step::Token(token) if self.stream => {
                    if let Some(delta) = self.writer.token_delta(index, &token) {
                        let piece = self.with_opening(index, delta);
                        return Some((Ok(piece), self));
                    }
                }
                Step::Token(token) => self.writer.push(index, &token),
                // Not the client's doing (that drops this answer): the
                // engine gave up on the sequence, which is no `stop`.
                Step::Done(done) if done.reason == FinishReason::Cancelled => {
                    self.running = 0;
                    let failure = LocalFailure::Failed("the engine cancelled the sequence".into());
                    return Some((Err(failure), self));
                }
                Step::Done(done) => {
                    self.running -= 1;
                    if self.stream {
                        let end = self.writer.choice_end(index, &done);
                        let mut piece = self.with_opening(index, end).to_vec();
                        if self.running == 0 {
                            piece.extend_from_slice(&self.writer.stream_end(self.include_usage));
                        }
                        return Some((Ok(piece.into()), self));
                    }
                    self.writer.push_end(index, &done);
                    if self.running == 0 {
                        let whole = self.writer.whole();
                        return Some((Ok(whole), self));
                    }
                }
                Step::Failed(why) => {
                    self.running = 0;
                    return Some((Err(LocalFailure::Failed(why)), self));
                }
            }
        }
    }

    /// `piece`, preceded by chat choice `index`'s opening the first time.
    fn with_opening(&mut self, index: usize, piece: Bytes) -> Bytes {
        if self.opened.get(index).copied().unwrap_or(true) {
            return piece;
        }
        self.opened[index] = true;
        match self.writer.opening(index) {
            Some(opening) => [opening, piece].concat().into(),
            None => piece,
        }
    }
}

/// Pause and resume through the engine: a paused sequence keeps its cache.
struct EngineControls {
    engine: EngineHandle,
    /// One sequence per choice.
    ids: Vec<SeqId>,
}

#[async_trait]
impl LocalControls for EngineControls {
    async fn pause(&self) {
        for id in &self.ids {
            if let Err(e) = self.engine.pause(*id).await {
                tracing::debug!(error = %e, "engine pause not applied");
            }
        }
    }

    async fn resume(&self) {
        for id in &self.ids {
            if let Err(e) = self.engine.resume(*id).await {
                tracing::debug!(error = %e, "engine resume not applied");
            }
        }
    }
}
