//! The answer seam: where an answer comes from. [`AnswerSource::Http`] is an
//! exchange with an upstream over pingora, response headers read;
//! [`AnswerSource::Local`] is an in-process stream of body pieces from a
//! [`LocalBackend`] (the built-in engine). The relay and the ledger treat
//! both alike; failover too: a backend at capacity moves the chain on as a
//! 503 would. To add an answer source, add a variant here and its reads.

use super::attempt_error::{AttemptError, AttemptErrorKind};
use crate::ops::engine_metrics::BackendLoad;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use sluice_config::Priority;
use sluice_providers::{Endpoint, RoutingFields};
use std::time::Duration;

/// What an in-process backend is asked to answer.
pub struct LocalRequest<'a> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The body as the target's adapter built it, in the OpenAI shape (with
    /// `stream_options.include_usage` set when sluice asked for usage on the
    /// client's behalf; the usage chunk is removed on the way back).
    pub body: &'a Bytes,
    /// Its routing fields, parsed once at intake.
    pub fields: &'a RoutingFields,
    /// The model name the route sends to this target.
    pub model: &'a str,
    /// The caller's effective priority.
    pub priority: Priority,
}

/// An in-process backend's answer: a status, a content type, and the body
/// as pieces in the OpenAI wire format (a JSON document, or SSE events).
pub struct LocalReply {
    /// The HTTP status of the answer (a 400 for a request the model cannot
    /// take is an answer, not a failure).
    pub status: u16,
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
    /// The body. Dropping it cancels the work behind it at once.
    pub body: BoxStream<'static, Result<Bytes, LocalFailure>>,
    /// Parks and resumes the work behind the body (a paused stream), when
    /// the backend can; without them a paused answer simply is not read.
    pub controls: Option<Box<dyn LocalControls>>,
}

/// Pausing the work behind a local answer: the engine parks the sequence
/// (keeping its cache) instead of generating into a buffer nobody reads.
#[async_trait]
pub trait LocalControls: Send + Sync {
    /// Parks the work.
    async fn pause(&self);
    /// Carries on where it was parked.
    async fn resume(&self);
}

/// Why an in-process backend could not answer (or stopped answering).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalFailure {
    /// At capacity now: fail over, as after a 503.
    #[error("engine at capacity")]
    Overloaded,
    /// It failed; the text is for logs only.
    #[error("engine failed: {0}")]
    Failed(String),
}

/// A backend that answers in-process (TGI's `Backend::schedule`).
#[async_trait]
pub trait LocalBackend: Send + Sync {
    /// Starts answering `request`. The work runs elsewhere; this returns
    /// once the first piece is known (so a failure before it can fail
    /// over), and the returned body yields the rest as it is produced.
    async fn schedule(&self, request: LocalRequest<'_>) -> Result<LocalReply, LocalFailure>;

    /// How loaded the backend is now, for `/metrics`.
    async fn load(&self) -> Option<BackendLoad>;
}

/// Where the chosen answer comes from.
// The HTTP exchange is the common case and stays inline: boxing it would
// add an allocation to every forwarded request for the rare local one.
#[allow(clippy::large_enum_variant)]
pub enum AnswerSource {
    /// An upstream's HTTP exchange, response headers read.
    Http(HttpSession),
    /// An in-process stream.
    Local(LocalReply),
}

impl AnswerSource {
    /// The status the source answered with.
    pub fn status(&self) -> u16 {
        match self {
            AnswerSource::Http(session) => {
                session.response_header().map_or(502, |h| h.status.as_u16())
            }
            AnswerSource::Local(reply) => reply.status,
        }
    }

    /// The upstream's response header (HTTP only).
    pub fn http_header(&self) -> Option<&ResponseHeader> {
        match self {
            AnswerSource::Http(session) => session.response_header(),
            AnswerSource::Local(_) => None,
        }
    }

    /// The content type of a local answer.
    pub fn local_content_type(&self) -> Option<&'static str> {
        match self {
            AnswerSource::Http(_) => None,
            AnswerSource::Local(reply) => Some(reply.content_type),
        }
    }

    /// Parks the work behind a local answer (HTTP answers are paused by not
    /// reading them: the upstream's socket fills and it waits).
    pub async fn pause(&mut self) {
        if let AnswerSource::Local(LocalReply {
            controls: Some(controls),
            ..
        }) = self
        {
            controls.pause().await;
        }
    }

    /// Resumes what [`AnswerSource::pause`] parked.
    pub async fn resume(&mut self) {
        if let AnswerSource::Local(LocalReply {
            controls: Some(controls),
            ..
        }) = self
        {
            controls.resume().await;
        }
    }

    /// Limits the wait for each further piece of the body.
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        if let AnswerSource::Http(session) = self {
            session.set_read_timeout(Some(idle));
        }
    }

    /// The next piece of the body; `Ok(None)` at its end. A failure names
    /// `upstream` and says what broke.
    pub async fn read(&mut self, upstream: &str) -> Result<Option<Bytes>, AttemptError> {
        match self {
            AnswerSource::Http(session) => session
                .read_response_body()
                .await
                .map_err(|e| AttemptError::from_pingora(upstream, &e, true)),
            AnswerSource::Local(reply) => match reply.body.next().await {
                None => Ok(None),
                Some(Ok(piece)) => Ok(Some(piece)),
                Some(Err(failure)) => {
                    tracing::warn!(error = %failure, "local backend broke off mid-answer");
                    Err(AttemptError::new(
                        upstream,
                        AttemptErrorKind::Broken("the engine failed mid-response"),
                    ))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_source_yields_its_pieces_then_ends() {
        let pieces = vec![Ok(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))];
        let mut source = AnswerSource::Local(LocalReply {
            status: 200,
            content_type: "text/event-stream",
            body: futures_util::stream::iter(pieces).boxed(),
            controls: None,
        });
        assert_eq!(source.status(), 200);
        assert_eq!(source.local_content_type(), Some("text/event-stream"));
        assert_eq!(
            source.read("local").await,
            Ok(Some(Bytes::from_static(b"a")))
        );
        assert_eq!(
            source.read("local").await,
            Ok(Some(Bytes::from_static(b"b")))
        );
        assert_eq!(source.read("local").await, Ok(None));
    }

    #[tokio::test]
    async fn a_local_failure_mid_answer_is_a_broken_attempt() {
        let pieces = vec![
            Ok(Bytes::from_static(b"a")),
            Err(LocalFailure::Failed("x".into())),
        ];
        let mut source = AnswerSource::Local(LocalReply {
            status: 200,
            content_type: "text/event-stream",
            body: futures_util::stream::iter(pieces).boxed(),
            controls: None,
        });
        assert!(source.read("local").await.is_ok());
        let error = source.read("local").await.unwrap_err();
        assert_eq!(
            error.kind,
            AttemptErrorKind::Broken("the engine failed mid-response")
        );
    }
}
