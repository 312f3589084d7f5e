//! The engine's cloneable handle: every call becomes a command on a bounded
//! channel to the engine thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::request::{GenerateRequest, TokenStream};
use super::worker::{Command, Submission};
use super::EngineStats;
use crate::error::{BatcherError, Result};
use crate::scheduler::SeqId;

/// Upper bound on a stream's buffered events (tokio caps channel sizes).
const MAX_EVENTS: usize = 1 << 24;

/// Talks to a running engine; cheap to clone. The engine thread stops once
/// every handle is dropped and its in-flight requests are done.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    /// Commands to the engine thread (bounded: back-pressure on submit).
    commands: mpsc::Sender<Command>,
    /// Source of sequence ids, shared by all clones.
    next_id: Arc<AtomicU64>,
}

impl EngineHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>) -> Self {
        Self {
            commands,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn submission(&self, request: GenerateRequest) -> (Submission, TokenStream) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Sized so the engine never blocks on a slow reader: at most one event
        // per token, plus the final one. (The engine refuses max_tokens beyond
        // the model's context, far below the clamp.)
        let capacity = request.sampling.max_tokens.min(MAX_EVENTS) + 2;
        let (sender, receiver) = mpsc::channel(capacity);
        let submission = Submission::new(id, request, sender);
        (submission, TokenStream::new(id, receiver))
    }

    /// Queues `request`; waits while the engine's queue is full. Validation
    /// errors arrive as an [`crate::Event::Error`] on the stream.
    pub async fn submit(&self, request: GenerateRequest) -> Result<TokenStream> {
        let (submission, stream) = self.submission(request);
        self.commands
            .send(Command::Submit(Box::new(submission)))
            .await
            .map_err(|_| BatcherError::EngineStopped)?;
        Ok(stream)
    }

    /// Queues `request` without waiting; [`BatcherError::QueueFull`] when the queue is full.
    pub fn try_submit(&self, request: GenerateRequest) -> Result<TokenStream> {
        let (submission, stream) = self.submission(request);
        self.commands
            .try_send(Command::Submit(Box::new(submission)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BatcherError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => BatcherError::EngineStopped,
            })?;
        Ok(stream)
    }

    /// Like [`Self::submit`], blocking the thread (for use outside async code).
    pub fn submit_blocking(&self, request: GenerateRequest) -> Result<TokenStream> {
        let (submission, stream) = self.submission(request);
        self.commands
            .blocking_send(Command::Submit(Box::new(submission)))
            .map_err(|_| BatcherError::EngineStopped)?;
        Ok(stream)
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| BatcherError::EngineStopped)?;
        answer.await.map_err(|_| BatcherError::EngineStopped)
    }

    fn call_blocking<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .blocking_send(make(reply))
            .map_err(|_| BatcherError::EngineStopped)?;
        answer
            .blocking_recv()
            .map_err(|_| BatcherError::EngineStopped)
    }

    /// Cancels `id`: its blocks are freed before the next step and its
    /// stream ends with `FinishReason::Cancelled`.
    pub async fn cancel(&self, id: SeqId) -> Result<()> {
        self.call(|reply| Command::Cancel(id, reply)).await?
    }

    /// Stops scheduling `id`, keeping its KV blocks unless memory runs short.
    pub async fn pause(&self, id: SeqId) -> Result<()> {
        self.call(|reply| Command::Pause(id, reply)).await?
    }

    /// Schedules a paused `id` again.
    pub async fn resume(&self, id: SeqId) -> Result<()> {
        self.call(|reply| Command::Resume(id, reply)).await?
    }

    /// A snapshot of the engine's counters.
    pub async fn stats(&self) -> Result<EngineStats> {
        self.call(Command::Stats).await
    }

    /// [`Self::cancel`], blocking the thread.
    pub fn cancel_blocking(&self, id: SeqId) -> Result<()> {
        self.call_blocking(|reply| Command::Cancel(id, reply))?
    }

    /// [`Self::pause`], blocking the thread.
    pub fn pause_blocking(&self, id: SeqId) -> Result<()> {
        self.call_blocking(|reply| Command::Pause(id, reply))?
    }

    /// [`Self::resume`], blocking the thread.
    pub fn resume_blocking(&self, id: SeqId) -> Result<()> {
        self.call_blocking(|reply| Command::Resume(id, reply))?
    }

    /// [`Self::stats`], blocking the thread.
    pub fn stats_blocking(&self) -> Result<EngineStats> {
        self.call_blocking(Command::Stats)
    }
}
