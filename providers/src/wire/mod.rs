//! What every wire format shares, and the trait each one implements.
//!
//! This is the leaf of the crate's provider code: provider modules import
//! from here, and nothing here imports a provider. [`WireFormat`] is the
//! trait a provider implements once; [`crate::Provider`] dispatches to the
//! implementations with a `match`. Beside it: the request and reply types
//! every format builds ([`UpstreamRequest`], [`ReplyContext`]), header
//! building ([`Base`]), turn merging ([`push_turn`]), stream framing
//! (`sse`, `stream`) and the [`ResponseTranslator`] a reply is fed through.

mod headers;
mod sse;
mod stream;
mod translator;
mod turns;

pub(crate) use headers::{encode_segment, Base};
pub(crate) use sse::{SseDecoder, SseEvent};
#[cfg(test)]
pub(crate) use stream::StreamTranslation;
pub(crate) use stream::{StreamFormat, ToolCalls};
pub(crate) use translator::ReplyFormat;
pub use translator::ResponseTranslator;
pub(crate) use turns::{push_turn, ContentTurn, Turn};

use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// One upstream wire format: how sluice talks to one kind of upstream.
///
/// Each provider module implements it once, on the type that holds that
/// upstream's settings; [`crate::Provider`] has one variant per
/// implementation and forwards each of its methods with a `match`.
pub(crate) trait WireFormat {
    /// A label for metrics and logs (`openai`, `anthropic`, ...).
    fn label(&self) -> &'static str;

    /// Whether replies come back in OpenAI's format and pass through
    /// untouched (only usage is read). Default: no, they are translated.
    fn is_passthrough(&self) -> bool {
        false
    }

    /// The `Host` header value.
    fn host_header(&self) -> &str;

    /// Called once per attempt: turns the client's OpenAI request (`body`,
    /// its parsed routing `fields`) into this format's request for
    /// `upstream_model` (a model name, Azure deployment or Bedrock model id).
    fn build_request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Result<UpstreamRequest, ProviderError>;

    /// Called when a reply's status is known: the translator its body is
    /// fed through (a whole body, a stream, or an error).
    fn response_translator(&self, reply: &ReplyContext, status: u16) -> ResponseTranslator;

    /// Classifies a complete error reply (`status` not 2xx) read whole.
    fn translate_error(&self, status: u16, body: &[u8]) -> UpstreamError;
}

/// What the response translator needs to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Whether the client asked for a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Pass-through only: sluice asked for usage on the client's behalf, so
    /// the usage-only chunk is dropped on the way back.
    pub strip_usage_chunk: bool,
    /// The model named in translated replies when the provider names none.
    pub model: String,
}

impl ReplyContext {
    /// The context of a request to `endpoint` with routing `fields`, sent
    /// to `upstream_model` (usage not asked for on the client's behalf).
    pub(crate) fn new(endpoint: Endpoint, fields: &RoutingFields, upstream_model: &str) -> Self {
        ReplyContext {
            endpoint,
            stream: fields.stream,
            include_usage: fields.include_usage,
            strip_usage_chunk: false,
            model: upstream_model.to_string(),
        }
    }
}

/// One request as it goes upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Always `POST` today.
    pub method: http::Method,
    /// Path and query, e.g. `/v1/messages` or `/v1beta/models/x:streamGenerateContent?alt=sse`.
    pub path_and_query: String,
    /// Headers to set (credentials, version, content type, signature); set
    /// after any forwarded client headers, replacing same-named ones.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the client's own headers (less [`crate::openai::CLIENT_HEADERS_NOT_FORWARDED`])
    /// may travel too: true for OpenAI-compatible upstreams, false for
    /// translated ones (an `accept-encoding` would make the reply unreadable
    /// to the translator, and SigV4 signs exact headers).
    pub forward_client_headers: bool,
    /// The body to send.
    pub body: Bytes,
    /// Keep this for [`crate::Provider::response_translator`].
    pub reply: ReplyContext,
}

impl UpstreamRequest {
    /// An OpenAI-format request: the client's `body` with the model renamed
    /// to `upstream_model` (and usage asked for when a stream needs it),
    /// sent to `path_and_query` with `headers`, the client's headers too.
    pub(crate) fn passthrough(
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
        path_and_query: String,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Self {
        let mut reply = ReplyContext::new(endpoint, fields, upstream_model);
        let (body, asked) = fields.body_for_upstream(body, upstream_model);
        reply.strip_usage_chunk = asked;
        UpstreamRequest {
            method: http::Method::POST,
            path_and_query,
            headers,
            forward_client_headers: true,
            body,
            reply,
        }
    }

    /// A translated request: `body` already in the provider's format, sent
    /// to `path_and_query` with exactly `headers` (no client headers).
    pub(crate) fn translated(
        endpoint: Endpoint,
        fields: &RoutingFields,
        upstream_model: &str,
        path_and_query: String,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Self {
        UpstreamRequest {
            method: http::Method::POST,
            path_and_query,
            headers,
            forward_client_headers: false,
            body: Bytes::from(body),
            reply: ReplyContext::new(endpoint, fields, upstream_model),
        }
    }
}
