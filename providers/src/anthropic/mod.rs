//! Anthropic's Messages API (`POST {base}/messages`, base defaulting to
//! `https://api.anthropic.com/v1`), translated to and from OpenAI chat.
//!
//! Requests (`request.rs`): `system`/`developer` messages (anywhere) become
//! the `system` blocks; `tool` messages become `tool_result` blocks of a
//! user turn; consecutive turns of one role are merged (Anthropic wants
//! alternation); images go as `base64` or `url` sources; `stop` becomes
//! `stop_sequences`; `max_tokens` defaults to the upstream's
//! `default_max_tokens`; `temperature` is capped at [`MAX_TEMPERATURE`].
//!
//! Replies (`response.rs`, `stream.rs`): text and `tool_use` blocks become
//! `content` and `tool_calls`; `thinking`/`redacted_thinking` blocks are
//! dropped, whole and streamed alike, since OpenAI chat has no place for
//! them (their tokens still count in `output_tokens`). Usage:
//! `prompt_tokens` = input + cache read + cache creation tokens (OpenAI
//! counts cached input inside the prompt), cached = `cache_read_input_tokens`.

mod request;
mod response;
mod stream;

use crate::chat::{to_json, ChatRequest};
use crate::dialects::ClientDialect;
use crate::wire::{
    Base, ReplyContext, ReplyFormat, ResponseTranslator, StreamFormat, UpstreamRequest, WireFormat,
};
use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::Bytes;
use sluice_config::UpstreamSettings;

// Anthropic's defaults and fixed names, all in one place. The two that
// config can override are written in config (which fills them in) and
// re-exported here.

/// The `anthropic-version` sent unless configured otherwise.
pub const DEFAULT_VERSION: &str = sluice_config::ANTHROPIC_DEFAULT_VERSION;
/// `max_tokens` sent when neither client nor config gives one.
pub const DEFAULT_MAX_TOKENS: u64 = sluice_config::ANTHROPIC_DEFAULT_MAX_TOKENS;
/// The highest `temperature` Anthropic accepts; higher ones are capped.
pub const MAX_TEMPERATURE: f64 = 1.0;
/// The header carrying the API key.
const KEY_HEADER: &str = "x-api-key";
/// The header carrying the API version.
const VERSION_HEADER: &str = "anthropic-version";
/// The Messages endpoint, below the base URL.
const MESSAGES_PATH: &str = "/messages";
/// The token-counting endpoint, below the base URL.
const COUNT_TOKENS_PATH: &str = "/messages/count_tokens";

/// How Anthropic replies are read.
const REPLY: ReplyFormat = ReplyFormat {
    whole: response::response,
    error: response::error,
    stream: StreamFormat::Sse(stream::on_event),
};

/// An Anthropic upstream.
#[derive(Debug, Clone)]
pub struct Anthropic {
    base: Base,
    default_max_tokens: u64,
}

impl Anthropic {
    /// Builds the adapter: `x-api-key` from `api_key`, `anthropic-version`.
    pub fn new(settings: &UpstreamSettings, version: &str, default_max_tokens: u64) -> Self {
        let mut base = Base::new(settings, Some((KEY_HEADER, "")));
        base.push_static(VERSION_HEADER, version);
        base.push_static("content-type", "application/json");
        Anthropic {
            base,
            default_max_tokens,
        }
    }

    /// The path and body for one request.
    fn request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        stream: bool,
        model: &str,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        if endpoint != Endpoint::ChatCompletions {
            return Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint.label(),
            });
        }
        let chat = ChatRequest::parse(body)?;
        let out = request::to_messages(&chat, model, stream, self.default_max_tokens)?;
        Ok((
            format!("{}{MESSAGES_PATH}", self.base.path_prefix),
            to_json(&out)?,
        ))
    }
}

impl Anthropic {
    /// A Messages (or `count_tokens`) request from a client that speaks
    /// Anthropic's API: its body untouched but for the model, so cache
    /// markers, thinking blocks and tools arrive exactly as sent. The
    /// client's own headers travel too (`anthropic-beta` among them), less
    /// credentials; ours set the key and version. `identity` encoding keeps
    /// the reply readable for usage.
    pub(crate) fn native(
        &self,
        dialect: ClientDialect,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> UpstreamRequest {
        let path = match dialect {
            ClientDialect::CountTokens => COUNT_TOKENS_PATH,
            _ => MESSAGES_PATH,
        };
        let mut headers = self.base.headers.clone();
        headers.push((
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        ));
        UpstreamRequest {
            method: http::Method::POST,
            path_and_query: format!("{}{path}", self.base.path_prefix),
            headers,
            forward_client_headers: true,
            body: fields.with_model(body, upstream_model),
            reply: ReplyContext::new(Endpoint::ChatCompletions, fields, upstream_model),
        }
    }
}

impl WireFormat for Anthropic {
    fn label(&self) -> &'static str {
        "anthropic"
    }

    fn host_header(&self) -> &str {
        &self.base.host_header
    }

    fn build_request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (path, out) = self.request(endpoint, body, fields.stream, upstream_model)?;
        Ok(UpstreamRequest::translated(
            endpoint,
            fields,
            upstream_model,
            path,
            self.base.headers.clone(),
            out,
        ))
    }

    fn response_translator(&self, reply: &ReplyContext, status: u16) -> ResponseTranslator {
        ResponseTranslator::translated(reply, status, REPLY)
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> UpstreamError {
        response::error(status, body)
    }
}
