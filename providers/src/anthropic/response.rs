//! Replies read whole: a 2xx Messages response in OpenAI's shape, and an
//! error body classified. The usage and finish-reason readings here serve
//! the stream too.

use crate::chunk::{Completion, FinishReason, ToolCallOut};
use crate::wire::ReplyContext;
use crate::{UpstreamError, UpstreamErrorKind, Usage};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<RespBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// A content block of a reply. A struct, not a tagged enum: serde cannot
/// hand a `RawValue` through an internally tagged enum. Types other than
/// `text` and `tool_use` (`thinking`, `redacted_thinking`, server tools) are dropped.
#[derive(Deserialize)]
struct RespBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// Anthropic's usage report, whole or in a stream event's parts.
#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Folds this report into `u` (fields absent from it are left alone).
    pub(super) fn apply(self, u: &mut Usage) {
        if let Some(input) = self.input_tokens {
            let read = self.cache_read_input_tokens.unwrap_or(0);
            let written = self.cache_creation_input_tokens.unwrap_or(0);
            u.prompt_tokens = input + read + written;
            u.cached_prompt_tokens = read;
            u.cache_write_tokens = written;
        }
        if let Some(out) = self.output_tokens {
            u.completion_tokens = out;
        }
    }
}

/// OpenAI's finish reason for a `stop_reason`.
pub(super) fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A whole 2xx reply, in OpenAI's shape, with its usage.
pub(super) fn response(
    reply: &ReplyContext,
    body: &[u8],
) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    let r: MessagesResponse = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::new(UpstreamErrorKind::Server, None))?;
    let mut usage = Usage::default();
    if let Some(u) = r.usage {
        u.apply(&mut usage);
    }
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in r.content {
        match block.kind.as_str() {
            "text" => content.push_str(&block.text),
            "tool_use" => tool_calls.push(ToolCallOut {
                id: block.id,
                name: block.name,
                arguments: block
                    .input
                    .map_or_else(|| "{}".to_string(), |i| i.get().to_string()),
            }),
            _ => {}
        }
    }
    let completion = Completion {
        id: r.id,
        model: r.model,
        content,
        tool_calls,
        finish: finish_reason(r.stop_reason.as_deref().unwrap_or("end_turn")),
        usage,
    };
    Ok((
        Bytes::from(completion.to_openai(&reply.model)),
        r.usage.map(|_| usage),
    ))
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorDetail<'a>,
}

/// An error's `type` and `message`, in an error body or a stream's `error` event.
#[derive(Deserialize)]
pub(super) struct ErrorDetail<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
}

/// The error kind for an Anthropic error `type` (else by `status`).
pub(super) fn error_kind(kind: &str, status: u16) -> UpstreamErrorKind {
    match kind {
        "invalid_request_error" => UpstreamErrorKind::BadRequest,
        "authentication_error" | "permission_error" => UpstreamErrorKind::Auth,
        "not_found_error" => UpstreamErrorKind::NotFound,
        "request_too_large" => UpstreamErrorKind::TooLarge,
        "rate_limit_error" => UpstreamErrorKind::RateLimited,
        "overloaded_error" => UpstreamErrorKind::Overloaded,
        "timeout_error" => UpstreamErrorKind::Timeout,
        "api_error" => UpstreamErrorKind::Server,
        _ => UpstreamErrorKind::from_status(status),
    }
}

/// An error reply (`{"type":"error","error":{"type","message"}}`).
pub(super) fn error(status: u16, body: &[u8]) -> UpstreamError {
    match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(b) => UpstreamError::new(error_kind(&b.error.kind, status), Some(&b.error.message)),
        Err(_) => UpstreamError::new(UpstreamErrorKind::from_status(status), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors_by_type() {
        let e = error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status(), 503);
        let e = error(
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!(e.status(), 502);
        assert!(!e.message.contains("x-api-key"));
        assert_eq!(error(500, b"<html>").status(), 502);
    }
}
