//! What goes into the engine ([`GenerateRequest`]) and what comes out
//! ([`Event`]s on a [`TokenStream`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::sampling::SamplingParams;
use crate::scheduler::SeqId;

/// The prompt, as text (tokenized by the engine) or as token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text; needs a model loaded with a tokenizer.
    Text(String),
    /// Token ids, used as given.
    Tokens(Vec<u32>),
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling and stopping.
    pub sampling: SamplingParams,
    /// Higher is admitted first and preempted last; FIFO within one priority.
    pub priority: i32,
    /// The caller's request span; the engine logs this request's events in it.
    pub span: tracing::Span,
}

impl GenerateRequest {
    /// A request for `prompt` token ids with `sampling`, priority 0.
    pub fn from_tokens(prompt: Vec<u32>, sampling: SamplingParams) -> Self {
        Self {
            prompt: Prompt::Tokens(prompt),
            sampling,
            priority: 0,
            span: tracing::Span::current(),
        }
    }

    /// A request for a text prompt with `sampling`, priority 0.
    pub fn from_text(prompt: impl Into<String>, sampling: SamplingParams) -> Self {
        Self {
            prompt: Prompt::Text(prompt.into()),
            sampling,
            priority: 0,
            span: tracing::Span::current(),
        }
    }

    /// The same request at `priority`.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    EndOfSequence,
    /// A stop token id was sampled.
    StopToken,
    /// A stop string appeared in the output.
    StopString,
    /// `max_tokens` were generated (or the context is full).
    Length,
    /// Cancelled by the caller.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason` for this ending.
    pub fn as_openai(&self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::EndOfSequence | Self::StopToken | Self::StopString | Self::Cancelled => "stop",
        }
    }
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    /// 0-based index among the generated tokens.
    pub index: usize,
    /// The token id.
    pub token: u32,
    /// Text released with this token (may be empty: a partial character, or
    /// text held back while it could still become a stop string).
    pub text: String,
    /// Log-probability of the token, when requested.
    pub logprob: Option<f32>,
    /// Most likely alternatives `(token, logprob)`, when requested.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// How a sequence ended, with its usage and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Why it ended.
    pub reason: FinishReason,
    /// Text held back until the end (released now), if any.
    pub trailing_text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (stop tokens excluded).
    pub completion_tokens: usize,
    /// Times this sequence was preempted and recomputed.
    pub preemptions: u32,
    /// From submission to the first token.
    pub time_to_first_token: Option<Duration>,
    /// From submission to the end.
    pub total_time: Duration,
}

/// What a [`TokenStream`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new token.
    Token(TokenEvent),
    /// The sequence ended; nothing follows.
    Finished(Finished),
    /// The sequence failed; nothing follows. The message is safe to log,
    /// not necessarily to show a client.
    Error(String),
}

/// The events of one request. Dropping it cancels the request (its KV
/// blocks are freed before the engine's next step).
#[derive(Debug)]
pub struct TokenStream {
    /// The engine's id for this sequence (for cancel/pause/resume).
    id: SeqId,
    /// Events from the engine thread.
    receiver: mpsc::Receiver<Event>,
}

impl TokenStream {
    pub(crate) fn new(id: SeqId, receiver: mpsc::Receiver<Event>) -> Self {
        Self { id, receiver }
    }

    /// The sequence id, for [`crate::EngineHandle::cancel`] and friends.
    pub fn id(&self) -> SeqId {
        self.id
    }

    /// The next event, or `None` after the last one.
    pub async fn recv(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.receiver.blocking_recv()
    }

    /// Blocks until the end; returns the generated tokens and how it finished.
    pub fn collect_blocking(mut self) -> (Vec<u32>, Option<Finished>, Option<String>) {
        let mut tokens = Vec::new();
        while let Some(event) = self.blocking_recv() {
            match event {
                Event::Token(t) => tokens.push(t.token),
                Event::Finished(f) => return (tokens, Some(f), None),
                Event::Error(e) => return (tokens, None, Some(e)),
            }
        }
        (tokens, None, None)
    }
}

impl futures_util::Stream for TokenStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.receiver.poll_recv(cx)
    }
}
