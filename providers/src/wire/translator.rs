//! The way back: one upstream reply rewritten for the client as its bytes
//! arrive. OpenAI-format replies pass through untouched (only usage is
//! read); the others are rewritten into OpenAI JSON or
//! `chat.completion.chunk` SSE by their provider's [`ReplyFormat`].

use super::stream::{StreamFormat, StreamTranslation};
use super::ReplyContext;
use crate::chunk::ChunkWriter;
use crate::dialects::responses::ResponsesUsage;
use crate::dialects::DialectWriter;
use crate::{Endpoint, UpstreamError, UpstreamErrorKind, Usage, UsageTracker};
use bytes::{Bytes, BytesMut};

/// Largest non-stream body buffered for translation.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest error body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A provider's code for a whole 2xx body: the OpenAI reply and the
/// provider's usage, if it reported one.
pub(crate) type WholeReply =
    fn(&ReplyContext, &[u8]) -> Result<(Bytes, Option<Usage>), UpstreamError>;

/// Whether `body` is OpenAI's error shape: `{"error": {"message": "..."}}`.
fn is_openai_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"]["message"].is_string())
}

/// A provider's code for an error body (`status` not 2xx).
pub(crate) type ErrorReply = fn(u16, &[u8]) -> UpstreamError;

/// How a translated wire format's replies are read: plain functions, so
/// one [`ResponseTranslator`] type serves every provider (the proxy holds
/// it across awaits) without a second enum over providers or a trait object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyFormat {
    /// A whole 2xx body.
    pub whole: WholeReply,
    /// An error body.
    pub error: ErrorReply,
    /// A 2xx stream: its framing and its code for one event.
    pub stream: StreamFormat,
}

/// Rewrites one response on its way to the client. Feed every piece of the
/// upstream body to [`ResponseTranslator::relay`] and send what it returns;
/// call [`ResponseTranslator::finish`] at the end of the upstream body.
#[derive(Debug)]
pub struct ResponseTranslator {
    status: u16,
    mode: Mode,
    /// A translated request's client dialect, when not OpenAI chat: what
    /// `mode` writes in chat shape is rewritten into it.
    rewrite: Option<Rewrite>,
}

#[derive(Debug)]
struct Rewrite {
    writer: Box<DialectWriter>,
    /// The content type of the rewritten body.
    content_type: &'static str,
}

#[derive(Debug)]
enum Mode {
    /// OpenAI format both sides: bytes relayed as they come, usage read.
    Passthrough(UsageTracker),
    /// A whole translated reply, written at the end.
    Body {
        translate: WholeReply,
        reply: ReplyContext,
        buf: BytesMut,
        usage: Option<Usage>,
    },
    /// A non-2xx reply, re-worded at the end.
    Error {
        translate: ErrorReply,
        upstream_status: u16,
        buf: BytesMut,
        error: Option<UpstreamError>,
        /// Pass-through: a body already in OpenAI's error shape goes out as
        /// sent (its `code` and `param` intact); only an empty or foreign
        /// one is re-worded.
        keep_openai_body: bool,
    },
    /// A translated stream, rewritten event by event.
    Stream(Box<StreamMode>),
    /// A reply already in the client's dialect (an upstream that speaks
    /// it): relayed untouched, read on the side by the provider's own
    /// translator for usage, delivered text and errors.
    Observed(Box<ResponseTranslator>),
    /// A Responses API reply from an OpenAI upstream: relayed untouched,
    /// its usage read.
    ResponsesReader(Box<ResponsesUsage>),
}

#[derive(Debug)]
struct StreamMode {
    writer: ChunkWriter,
    translation: StreamTranslation,
    out: BytesMut,
}

impl ResponseTranslator {
    /// The translator for a reply in OpenAI's format (OpenAI-compatible and
    /// Azure upstreams), with status `status`.
    pub(crate) fn passthrough(reply: &ReplyContext, status: u16) -> Self {
        // OpenAI's own 401 names part of the key: reword credential
        // failures; pass every other reply through untouched.
        if matches!(status, 401 | 403) {
            return ResponseTranslator::error(UpstreamError::from_openai_body, status);
        }
        // Any other error keeps its status; its body is checked at the end,
        // so an empty or non-JSON one (a proxy's 431, a load balancer's
        // HTML 502) still reaches the client in OpenAI's shape.
        if status >= 400 {
            return ResponseTranslator {
                status,
                mode: Mode::Error {
                    translate: UpstreamError::from_openai_body,
                    upstream_status: status,
                    buf: BytesMut::new(),
                    error: None,
                    keep_openai_body: true,
                },
                rewrite: None,
            };
        }
        let sse = (200..300).contains(&status) && reply.stream;
        ResponseTranslator {
            status,
            mode: Mode::Passthrough(UsageTracker::new(sse, reply.strip_usage_chunk)),
            rewrite: None,
        }
    }

    /// The translator for a reply in a provider's own `format`, with status
    /// `status`: an error, a chat stream, or a whole body.
    pub(crate) fn translated(reply: &ReplyContext, status: u16, format: ReplyFormat) -> Self {
        if !(200..300).contains(&status) {
            return ResponseTranslator::error(format.error, status);
        }
        let mode = if reply.stream && reply.endpoint == Endpoint::ChatCompletions {
            Mode::Stream(Box::new(StreamMode {
                writer: ChunkWriter::new(&reply.model, reply.include_usage),
                translation: StreamTranslation::new(format.stream),
                out: BytesMut::new(),
            }))
        } else {
            Mode::Body {
                translate: format.whole,
                reply: reply.clone(),
                buf: BytesMut::new(),
                usage: None,
            }
        };
        ResponseTranslator {
            status,
            mode,
            rewrite: None,
        }
    }

    /// A reply in the client's own dialect, relayed untouched with the
    /// upstream's status while `reader` (the provider's translator for
    /// it) reads usage, text and errors on the side.
    pub(crate) fn observed(reader: ResponseTranslator, status: u16) -> Self {
        ResponseTranslator {
            status,
            mode: Mode::Observed(Box::new(reader)),
            rewrite: None,
        }
    }

    /// Reads a Responses API reply passing through, for its usage.
    pub(crate) fn responses_reader(reply: &ReplyContext, status: u16) -> Self {
        let sse = (200..300).contains(&status) && reply.stream;
        ResponseTranslator {
            status,
            mode: Mode::ResponsesReader(Box::new(ResponsesUsage::new(sse))),
            rewrite: None,
        }
    }

    /// The same translator with what it writes (OpenAI chat JSON or SSE)
    /// rewritten by `writer` into the client's dialect; `stream`: the
    /// client asked for SSE.
    pub fn rewritten(mut self, writer: DialectWriter, stream: bool) -> Self {
        let sse = stream && (200..300).contains(&self.status);
        self.rewrite = Some(Rewrite {
            writer: Box::new(writer),
            content_type: if sse {
                "text/event-stream"
            } else {
                "application/json"
            },
        });
        self
    }

    /// Ends a rewritten stream sluice stops itself, in the client's
    /// dialect (`cut`: by its budget); `None` when nothing is rewritten.
    pub fn close_rewritten(&mut self, cut: bool) -> Option<Bytes> {
        self.rewrite.as_mut().map(|r| r.writer.close(cut))
    }

    /// The client dialect's writer, when the reply is rewritten.
    pub fn dialect_writer(&self) -> Option<&DialectWriter> {
        self.rewrite.as_ref().map(|r| &*r.writer)
    }

    fn error(translate: ErrorReply, upstream_status: u16) -> Self {
        ResponseTranslator {
            status: UpstreamErrorKind::from_status(upstream_status).status(),
            mode: Mode::Error {
                translate,
                upstream_status,
                buf: BytesMut::new(),
                error: None,
                keep_openai_body: false,
            },
            rewrite: None,
        }
    }

    /// The status to send the client (an upstream error's status is mapped
    /// from the status alone; the body only refines the message).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `content-type` to send, when the body is rewritten (then also
    /// drop the upstream's `content-length`); `None`: keep the upstream's.
    pub fn content_type(&self) -> Option<&'static str> {
        if let Some(r) = &self.rewrite {
            return Some(r.content_type);
        }
        match self.mode {
            Mode::Passthrough(_) | Mode::Observed(_) | Mode::ResponsesReader(_) => None,
            Mode::Stream(_) => Some("text/event-stream"),
            Mode::Body { .. } | Mode::Error { .. } => Some("application/json"),
        }
    }

    /// Takes a piece of the upstream body; returns what to send the client
    /// now (possibly nothing).
    pub fn relay(&mut self, chunk: Bytes) -> Bytes {
        let out = self.relay_chat(chunk);
        match &mut self.rewrite {
            Some(r) if !out.is_empty() => r.writer.feed(&out),
            _ => out,
        }
    }

    /// Call when the upstream body has ended; returns the rest to send.
    pub fn finish(&mut self) -> Bytes {
        let out = self.finish_chat();
        match &mut self.rewrite {
            Some(r) => {
                let mut rest = BytesMut::from(&r.writer.feed(&out)[..]);
                rest.extend_from_slice(&r.writer.finish());
                rest.freeze()
            }
            None => out,
        }
    }

    fn relay_chat(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.mode {
            Mode::Passthrough(t) => t.relay(chunk),
            Mode::Body { buf, .. } => {
                if buf.len() + chunk.len() <= MAX_BODY {
                    buf.extend_from_slice(&chunk);
                }
                Bytes::new()
            }
            Mode::Error { buf, .. } => {
                let room = MAX_ERROR_BODY.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                Bytes::new()
            }
            Mode::Stream(s) => {
                let StreamMode {
                    writer,
                    translation,
                    out,
                } = &mut **s;
                translation.feed(&chunk, writer, out);
                out.split().freeze()
            }
            Mode::Observed(reader) => {
                reader.relay(chunk.clone());
                chunk
            }
            Mode::ResponsesReader(reader) => {
                reader.observe(&chunk);
                chunk
            }
        }
    }

    fn finish_chat(&mut self) -> Bytes {
        match &mut self.mode {
            Mode::Passthrough(t) => t.finish(),
            Mode::Body {
                translate,
                reply,
                buf,
                usage,
            } => {
                let body = std::mem::take(buf);
                match translate(reply, &body) {
                    Ok((out, u)) => {
                        *usage = u;
                        out
                    }
                    Err(e) => {
                        self.status = e.status();
                        e.openai_body()
                    }
                }
            }
            Mode::Error {
                translate,
                upstream_status,
                buf,
                error,
                keep_openai_body,
            } => {
                let e = translate(*upstream_status, buf);
                let body = if *keep_openai_body && is_openai_error(buf) {
                    std::mem::take(buf).freeze()
                } else {
                    e.openai_body()
                };
                *error = Some(e);
                body
            }
            Mode::Stream(s) => {
                let StreamMode {
                    writer,
                    translation,
                    out,
                } = &mut **s;
                translation.finish(writer, out);
                out.split().freeze()
            }
            Mode::Observed(reader) => {
                reader.finish();
                Bytes::new()
            }
            Mode::ResponsesReader(_) => Bytes::new(),
        }
    }

    /// The provider's own usage, if it reported one (complete after [`ResponseTranslator::finish`]).
    pub fn usage(&self) -> Option<Usage> {
        match &self.mode {
            Mode::Passthrough(t) => t.reported(),
            Mode::Body { usage, .. } => *usage,
            Mode::Error { .. } => None,
            Mode::Stream(s) => s.writer.usage(),
            Mode::Observed(reader) => reader.usage(),
            Mode::ResponsesReader(reader) => reader.usage(),
        }
    }

    /// Text delivered in stream deltas, for counting when no usage came.
    pub fn delivered_text(&self) -> &str {
        match &self.mode {
            Mode::Passthrough(t) => t.delivered_text(),
            Mode::Stream(s) => s.writer.delivered_text(),
            Mode::Observed(reader) => reader.delivered_text(),
            Mode::ResponsesReader(reader) => reader.delivered_text(),
            Mode::Body { .. } | Mode::Error { .. } => "",
        }
    }

    /// Whether the stream ended properly (`[DONE]` went by).
    pub fn saw_done(&self) -> bool {
        match &self.mode {
            Mode::Passthrough(t) => t.saw_done(),
            Mode::Stream(s) => s.writer.done(),
            Mode::Observed(reader) => reader.saw_done(),
            Mode::ResponsesReader(reader) => reader.completed(),
            Mode::Body { .. } | Mode::Error { .. } => false,
        }
    }

    /// The upstream error this reply carried: a non-2xx reply (after
    /// [`ResponseTranslator::finish`]) or an error event in a translated stream.
    pub fn upstream_error(&self) -> Option<&UpstreamError> {
        match &self.mode {
            Mode::Error { error, .. } => error.as_ref(),
            Mode::Stream(s) => s.translation.error(),
            Mode::Observed(reader) => reader.upstream_error(),
            Mode::Passthrough(_) | Mode::Body { .. } | Mode::ResponsesReader(_) => None,
        }
    }
}
