//! The way back for a whole reply: an OpenAI `chat.completion` body (or
//! OpenAI error body) rewritten as one Anthropic Message (or Anthropic
//! error body); and what the stream writer shares with it (ids, stop
//! reasons, usage).

use super::{error_json, status_of_openai_error};
use crate::usage::WireUsage;
use crate::Usage;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter for ids made up when the upstream gave none.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A Message id from a chat id: `chatcmpl-msg_X` (an Anthropic id sluice
/// wrapped) gives back `msg_X`, any other `chatcmpl-X` gives `msg_X`, and
/// no id gives a locally unique `msg_sluice…`.
pub(super) fn message_id(chat_id: Option<&str>) -> String {
    let bare = chat_id.map(|id| id.strip_prefix("chatcmpl-").unwrap_or(id));
    match bare {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!(
            "msg_sluice{:x}{:x}",
            crate::chunk::now_s(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

/// A tool-use id for a tool call the upstream sent without one.
pub(super) fn tool_use_id() -> String {
    format!("toolu_sluice{:x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`. A stop
/// sequence cannot be told apart from a natural stop in chat replies, so
/// `stop` is always `end_turn`.
pub(super) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage object. `input_tokens` counts only uncached input:
/// Anthropic's three input counts add up to what OpenAI calls
/// `prompt_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        UsageOut {
            input_tokens: u
                .prompt_tokens
                .saturating_sub(u.cached_prompt_tokens)
                .saturating_sub(u.cache_write_tokens),
            output_tokens: u.completion_tokens,
            cache_read_input_tokens: u.cached_prompt_tokens,
            cache_creation_input_tokens: u.cache_write_tokens,
        }
    }
}

/// An OpenAI error body or event: `{"error":{"message","type","code"}}`.
#[derive(Deserialize)]
pub(super) struct OpenAiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// A string for OpenAI and sluice, a number for some servers.
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl OpenAiError {
    /// The status it stands for and its message.
    pub(super) fn status_and_message(&self) -> (u16, &str) {
        let status = status_of_openai_error(
            self.kind.as_deref(),
            self.code.as_ref().and_then(|c| c.as_str()),
        );
        let message = self
            .message
            .as_deref()
            .unwrap_or("The upstream provider returned an error.");
        (status, message)
    }
}

/// A `chat.completion` body, or an error body.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<OpenAiError>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChoiceMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: Option<String>,
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    name: String,
    #[serde(default)]
    arguments: Option<String>,
}

/// A whole Message.
#[derive(Serialize)]
struct MessageOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockOut>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Box<RawValue>,
    },
}

/// A tool call's arguments as the `input` object (`{}` when they are not
/// a JSON object).
pub(super) fn input_object(arguments: &str) -> Box<RawValue> {
    match serde_json::from_str::<Box<RawValue>>(arguments) {
        Ok(raw) if raw.get().starts_with('{') => raw,
        // `{}` always parses; the default (`null`) is never reached.
        _ => RawValue::from_string("{}".to_string()).unwrap_or_default(),
    }
}

/// The Messages body for a whole OpenAI reply: the Message, or Anthropic's
/// error body when the reply is an OpenAI error or does not parse (the
/// caller has already chosen the HTTP status). Returns whether it is a
/// Message.
pub(super) fn whole_reply(openai: &[u8], model: &str) -> (Vec<u8>, bool) {
    let parsed: Completion = match serde_json::from_slice(openai) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "chat reply did not parse");
            return (
                error_json(502, "The upstream provider returned an unreadable reply."),
                false,
            );
        }
    };
    if let Some(error) = &parsed.error {
        let (status, message) = error.status_and_message();
        return (error_json(status, message), false);
    }
    let Some(choice) = parsed.choices.and_then(|c| c.into_iter().next()) else {
        return (
            error_json(502, "The upstream provider returned no choices."),
            false,
        );
    };
    let mut content = Vec::new();
    let message = choice.message;
    let text = message
        .as_ref()
        .and_then(|m| m.content.clone().filter(|t| !t.is_empty()))
        .or_else(|| message.as_ref().and_then(|m| m.refusal.clone()));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        content.push(BlockOut::Text { text });
    }
    for call in message.and_then(|m| m.tool_calls).unwrap_or_default() {
        content.push(BlockOut::ToolUse {
            id: call
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(tool_use_id),
            input: input_object(call.function.arguments.as_deref().unwrap_or("{}")),
            name: call.function.name,
        });
    }
    let usage: Usage = parsed.usage.map(Usage::from).unwrap_or_default();
    let out = MessageOut {
        id: message_id(parsed.id.as_deref()),
        kind: "message",
        role: "assistant",
        model,
        content,
        stop_reason: stop_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
        stop_sequence: None,
        usage: usage.into(),
    };
    (serde_json::to_vec(&out).unwrap_or_default(), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn convert(body: Value) -> (Value, bool) {
        let (out, ok) = whole_reply(&serde_json::to_vec(&body).unwrap(), "claude-x");
        (serde_json::from_slice(&out).unwrap(), ok)
    }

    #[test]
    fn rewrites_a_completion_with_text_and_tool_calls() {
        let (v, ok) = convert(json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":\"x\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get", "arguments": "not json"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                      "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}
        }));
        assert!(ok);
        assert_eq!(
            v,
            json!({
                "id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_1", "name": "get", "input": {"q": "x"}},
                    {"type": "tool_use", "id": "call_2", "name": "get", "input": {}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 7,
                          "cache_read_input_tokens": 60, "cache_creation_input_tokens": 30}
            })
        );
    }

    #[test]
    fn maps_finish_reasons_and_keeps_anthropic_ids() {
        assert_eq!(stop_reason("stop"), "end_turn");
        assert_eq!(stop_reason("length"), "max_tokens");
        assert_eq!(stop_reason("tool_calls"), "tool_use");
        assert_eq!(stop_reason("content_filter"), "refusal");
        assert_eq!(message_id(Some("chatcmpl-msg_01X")), "msg_01X");
        assert_eq!(message_id(Some("resp-9")), "msg_resp-9");
        assert!(message_id(None).starts_with("msg_sluice"));
        let (v, _) = convert(json!({"choices": [{"finish_reason": "length",
            "message": {"role": "assistant", "content": "cut"}}]}));
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["usage"]["input_tokens"], 0);
    }

    #[test]
    fn errors_and_garbage_become_anthropic_errors() {
        let (v, ok) = convert(json!({"error": {"message": "slow down", "type": "requests",
            "code": "rate_limit_exceeded"}}));
        assert!(!ok);
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        let (out, ok) = whole_reply(b"<html>", "m");
        assert!(!ok);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["type"], "api_error");
    }
}
