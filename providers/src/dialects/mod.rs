//! Client dialects other than OpenAI's chat completions, converted to and
//! from the chat-completions shape every provider adapter reads (the hub):
//! [`messages`] is Anthropic's Messages API, [`responses`] OpenAI's
//! Responses API. Each module turns a client request into a chat request
//! and rewrites chat replies (whole or streamed) into the client's shape.
//!
//! An upstream that speaks the client's dialect itself (Anthropic for
//! Messages, OpenAI for Responses) gets the client's body untouched but
//! for the model name ([`crate::Provider::native_request`]), and its reply
//! goes back untouched, read on the side for usage
//! ([`crate::Provider::native_translator`]).

pub mod messages;
pub mod responses;

/// A client dialect other than OpenAI's chat completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientDialect {
    /// Anthropic's `POST /v1/messages`.
    Messages,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI's `POST /v1/responses`.
    Responses,
}

impl ClientDialect {
    /// A low-cardinality label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ClientDialect::Messages => "messages",
            ClientDialect::CountTokens => "count_tokens",
            ClientDialect::Responses => "responses",
        }
    }
}

/// Rewrites the chat-shaped reply of a translated request into the
/// client's dialect: one of the dialect modules' writers.
#[derive(Debug)]
pub enum DialectWriter {
    /// Anthropic Messages.
    Messages(messages::MessagesWriter),
    /// The Responses API.
    Responses(responses::ResponsesWriter),
}

impl DialectWriter {
    /// Takes a piece of the chat reply; returns what to send now.
    pub fn feed(&mut self, chat: &[u8]) -> bytes::Bytes {
        match self {
            DialectWriter::Messages(w) => w.feed(chat),
            DialectWriter::Responses(w) => w.feed(chat),
        }
    }

    /// The chat reply ended: the rest.
    pub fn finish(&mut self) -> bytes::Bytes {
        match self {
            DialectWriter::Messages(w) => w.finish(),
            DialectWriter::Responses(w) => w.finish(),
        }
    }

    /// Ends a stream sluice stops itself: `cut` when a budget cut it
    /// (Messages: `max_tokens`; Responses: incomplete), else a plain stop.
    pub fn close(&mut self, cut: bool) -> bytes::Bytes {
        match (self, cut) {
            (DialectWriter::Messages(w), true) => w.close("max_tokens"),
            (DialectWriter::Messages(w), false) => w.close("end_turn"),
            (DialectWriter::Responses(w), true) => w.close("incomplete", Some("max_output_tokens")),
            (DialectWriter::Responses(w), false) => w.close("completed", None),
        }
    }

    /// The Responses writer, for the items to store.
    pub fn responses(&self) -> Option<&responses::ResponsesWriter> {
        match self {
            DialectWriter::Responses(w) => Some(w),
            DialectWriter::Messages(_) => None,
        }
    }
}
