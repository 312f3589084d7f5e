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
use futures_util::StreamExt;
use reply::{ReplyWriter, Step};
use sluice_batcher::serve::ServedModel;
use sluice_batcher::{
    BatcherError, EngineHandle, FinishReason, GenerateRequest, SeqId, TokenStream,
};
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
        let permit = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| LocalFailure::Overloaded)?;
        let generate = GenerateRequest::from_tokens(read.prompt, read.sampling)
            .with_priority(engine_priority(request.priority));
        let engine = self.model.engine();
        let mut tokens = engine.try_submit(generate).map_err(|e| match e {
            BatcherError::QueueFull => LocalFailure::Overloaded,
            other => LocalFailure::Failed(other.to_string()),
        })?;
        // Wait for the first event: until then the engine may still fail,
        // and a failure before the first byte moves the chain on.
        let first = match tokens.recv().await.map(Step::from) {
            Some(Step::Failed(why)) => return Err(LocalFailure::Failed(why)),
            None => return Err(LocalFailure::Failed("the engine stopped".into())),
            Some(step) => step,
        };
        let id = tokens.id();
        let writer = ReplyWriter::new(
            request.endpoint,
            request.model,
            &format!("{:016x}", rand::random::<u64>()),
            read.logprobs.then(|| self.model.clone()),
        );
        let answer = Answer {
            _permit: permit,
            tokens,
            writer,
            pending: Some(first),
            stream: read.stream,
            include_usage: read.include_usage,
            opened: false,
            ended: false,
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
                id,
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
        })
    }
}

/// One answer being produced: the engine's events in, OpenAI pieces out.
/// Dropping it drops the token stream, which cancels the sequence and frees
/// its KV blocks before the engine's next step.
struct Answer {
    /// The request's place in the engine, given back when the answer is dropped.
    _permit: OwnedSemaphorePermit,
    tokens: TokenStream,
    writer: ReplyWriter,
    /// The event read before the answer started.
    pending: Option<Step>,
    stream: bool,
    include_usage: bool,
    /// The chat stream's opening (the role) went out.
    opened: bool,
    ended: bool,
}

impl Answer {
    async fn next_step(&mut self) -> Option<Step> {
        match self.pending.take() {
            Some(step) => Some(step),
            None => self.tokens.recv().await.map(Step::from),
        }
    }

    /// The next piece of the body; `None` after the last.
    async fn next_piece(mut self) -> Option<(Result<Bytes, LocalFailure>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let step = match self.next_step().await {
                Some(step) => step,
                None => {
                    self.ended = true;
                    return Some((Err(LocalFailure::Failed("the engine stopped".into())), self));
                }
            };
            match step {
                Step::Token(token) if self.stream => {
                    if let Some(delta) = self.writer.token_delta(&token) {
                        let piece = self.with_opening(delta);
                        return Some((Ok(piece), self));
                    }
                }
                Step::Token(token) => self.writer.push(&token),
                // Not the client's doing (that drops this answer): the
                // engine gave up on the sequence, which is no `stop`.
                Step::Done(done) if done.reason == FinishReason::Cancelled => {
                    self.ended = true;
                    let failure = LocalFailure::Failed("the engine cancelled the sequence".into());
                    return Some((Err(failure), self));
                }
                Step::Done(done) => {
                    self.ended = true;
                    let piece = if self.stream {
                        let closing = self.writer.closing(&done, self.include_usage);
                        self.with_opening(closing)
                    } else {
                        self.writer.whole(&done)
                    };
                    return Some((Ok(piece), self));
                }
                Step::Failed(why) => {
                    self.ended = true;
                    return Some((Err(LocalFailure::Failed(why)), self));
                }
            }
        }
    }

    /// `piece`, preceded by the chat stream's opening the first time.
    fn with_opening(&mut self, piece: Bytes) -> Bytes {
        if self.opened {
            return piece;
        }
        self.opened = true;
        match self.writer.opening() {
            Some(opening) => [opening, piece].concat().into(),
            None => piece,
        }
    }
}

/// Pause and resume through the engine: a paused sequence keeps its cache.
struct EngineControls {
    engine: EngineHandle,
    id: SeqId,
}

#[async_trait]
impl LocalControls for EngineControls {
    async fn pause(&self) {
        if let Err(e) = self.engine.pause(self.id).await {
            tracing::debug!(error = %e, "engine pause not applied");
        }
    }

    async fn resume(&self) {
        if let Err(e) = self.engine.resume(self.id).await {
            tracing::debug!(error = %e, "engine resume not applied");
        }
    }
}
