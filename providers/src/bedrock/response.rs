//! Replies read whole: a 2xx Converse response in OpenAI's shape, and an
//! error body classified. The usage and finish-reason readings here, and
//! the exception names, serve the stream too.

use crate::chunk::{Completion, FinishReason, ToolCallOut};
use crate::wire::ReplyContext;
use crate::{UpstreamError, UpstreamErrorKind, Usage};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<OutToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// Bedrock's usage report.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens,
            completion_tokens: u.output_tokens,
            cached_prompt_tokens: u.cache_read_input_tokens,
            cache_write_tokens: u.cache_write_input_tokens,
        }
    }
}

/// OpenAI's finish reason for a `stopReason`.
pub(super) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A whole 2xx reply, in OpenAI's shape, with its usage.
pub(super) fn response(
    reply: &ReplyContext,
    body: &[u8],
) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    let r: ConverseResponse = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::new(UpstreamErrorKind::Server, None))?;
    let usage = r.usage.map(Usage::from);
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let blocks = r
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .unwrap_or_default();
    for block in blocks {
        if let Some(text) = block.text {
            content.push_str(&text);
        }
        if let Some(t) = block.tool_use {
            tool_calls.push(ToolCallOut {
                id: t.tool_use_id,
                name: t.name,
                arguments: t.input.map_or_else(|| "{}".into(), |i| i.get().to_string()),
            });
        }
    }
    let completion = Completion {
        id: None,
        model: None,
        content,
        tool_calls,
        finish: finish_reason(r.stop_reason.as_deref().unwrap_or("end_turn")),
        usage: usage.unwrap_or_default(),
    };
    Ok((Bytes::from(completion.to_openai(&reply.model)), usage))
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, alias = "Message")]
    message: String,
}

/// The error kind for an error reply's status.
fn kind_of_status(status: u16) -> UpstreamErrorKind {
    match status {
        // ModelErrorException: the model failed, not the request.
        424 => UpstreamErrorKind::Server,
        s => UpstreamErrorKind::from_status(s),
    }
}

/// An error reply (`{"message": ...}`, the class in a header sluice does
/// not need: the status says enough).
pub(super) fn error(status: u16, body: &[u8]) -> UpstreamError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.message);
    UpstreamError::new(kind_of_status(status), message.as_deref())
}

/// The error kind for a stream exception's `:exception-type`.
pub(super) fn exception_kind(name: &str) -> UpstreamErrorKind {
    match name {
        "throttlingException" => UpstreamErrorKind::RateLimited,
        "validationException" => UpstreamErrorKind::BadRequest,
        "serviceUnavailableException" => UpstreamErrorKind::Overloaded,
        "modelTimeoutException" => UpstreamErrorKind::Timeout,
        "accessDeniedException" => UpstreamErrorKind::Auth,
        _ => UpstreamErrorKind::Server,
    }
}
