//! The Response object and its output items, shared by whole and streamed
//! replies, and the conversion of a whole `chat.completion` body.
//!
//! Shapes follow the OpenAI SDK's `openai/types/responses/response.py`: the
//! fields it requires (`id`, `created_at`, `model`, `object`, `output`,
//! `parallel_tool_calls`, `tool_choice`, `tools`) are always present, and the
//! request fields a Response echoes (`instructions`, `temperature`, `text`,
//! ...) are copied from the request with the API's defaults.

use crate::Usage;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Request fields a Response echoes, with the value the API reports when the
/// request left them out.
fn echo_defaults() -> [(&'static str, Value); 14] {
    [
        ("instructions", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("temperature", json!(1.0)),
        ("top_p", json!(1.0)),
        ("text", json!({"format": {"type": "text"}})),
        ("metadata", json!({})),
        ("max_output_tokens", Value::Null),
        ("previous_response_id", Value::Null),
        ("store", json!(true)),
        ("user", Value::Null),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("truncation", json!("disabled")),
    ]
}

/// The echoed fields of a request body.
pub(super) fn echoed_fields(object: &Map<String, Value>) -> Map<String, Value> {
    echo_defaults()
        .into_iter()
        .map(|(field, default)| {
            let value = object
                .get(field)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(default);
            (field.to_string(), value)
        })
        .collect()
}

/// What every Response object of one reply shares.
#[derive(Debug, Clone)]
pub(super) struct ResponseShell {
    /// The id the gateway chose (`resp_...`).
    pub id: String,
    /// The model reported to the client.
    pub model: String,
    /// Seconds since the epoch when the writer was made.
    pub created_at: u64,
    /// The request's echoed fields.
    pub echo: Map<String, Value>,
}

/// How a Response ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// Still streaming (`response.created`, `response.in_progress`).
    InProgress,
    /// `status: "completed"`.
    Completed,
    /// `status: "incomplete"` with `incomplete_details.reason`.
    Incomplete(String),
    /// `status: "failed"` with `error: {code, message}`.
    Failed { code: String, message: String },
}

impl ResponseShell {
    /// The id of output item `index` with `prefix` (`msg`, `fc`): derived
    /// from the response id, so ids are unique per response and stable.
    pub fn item_id(&self, prefix: &str, index: usize) -> String {
        let suffix = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{suffix}_{index}")
    }

    /// The Response object.
    pub fn object(&self, ending: &Ending, output: Vec<Value>, usage: Option<&Value>) -> Value {
        let (status, incomplete, error) = match ending {
            Ending::InProgress => ("in_progress", Value::Null, Value::Null),
            Ending::Completed => ("completed", Value::Null, Value::Null),
            Ending::Incomplete(reason) => ("incomplete", json!({"reason": reason}), Value::Null),
            Ending::Failed { code, message } => (
                "failed",
                Value::Null,
                json!({"code": code, "message": message}),
            ),
        };
        let mut object = self.echo.clone();
        object.insert("id".into(), json!(self.id));
        object.insert("object".into(), json!("response"));
        object.insert("created_at".into(), json!(self.created_at));
        object.insert("status".into(), json!(status));
        object.insert("error".into(), error);
        object.insert("incomplete_details".into(), incomplete);
        object.insert("model".into(), json!(self.model));
        object.insert("output".into(), Value::Array(output));
        object.insert("usage".into(), usage.cloned().unwrap_or(Value::Null));
        Value::Object(object)
    }
}

/// A `message` output item holding `text` as one `output_text` part.
pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [output_text_part(text)]})
}

/// An `output_text` content part.
pub(super) fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `function_call` output item.
pub(super) fn function_call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

/// Usage read from a chat reply's `usage` object, with the reasoning tokens
/// it reports (0 when it reports none).
pub(super) fn chat_usage(usage: &Value) -> Option<(Usage, u64)> {
    let object = usage.as_object()?;
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let details = object.get("prompt_tokens_details");
    let parsed = Usage {
        prompt_tokens: count(object.get("prompt_tokens")),
        completion_tokens: count(object.get("completion_tokens")),
        cached_prompt_tokens: count(details.and_then(|d| d.get("cached_tokens"))),
        cache_write_tokens: count(details.and_then(|d| d.get("cache_write_tokens"))),
    };
    let reasoning = count(
        object
            .get("completion_tokens_details")
            .and_then(|d| d.get("reasoning_tokens")),
    );
    Some((parsed, reasoning))
}

/// A Response's `usage` object.
pub(super) fn usage_json(usage: &Usage, reasoning_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_prompt_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

/// One Responses stream event: `event: <type>` and its JSON.
pub(super) fn sse_event(payload: &Value) -> String {
    let kind = payload.get("type").and_then(Value::as_str).unwrap_or("");
    format!("event: {kind}\ndata: {payload}\n\n")
}

/// The `error` event's payload, numbered `sequence_number`.
pub(super) fn error_payload(status: u16, code: &str, message: &str, sequence: u64) -> Value {
    let code = if code.is_empty() {
        match status {
            429 => "rate_limit_exceeded",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    } else {
        code
    };
    json!({"type": "error", "code": code, "message": message, "param": null,
           "sequence_number": sequence})
}

/// The Responses API's streamed error: one `error` event
/// (`{"type":"error","code","message","param","sequence_number"}`), the
/// shape the SDK parses as `ResponseErrorEvent`. The SDK's `stream=True`
/// iterator yields it as an event (it raises only for a top-level `error`
/// key, which this shape does not have). On its own it carries
/// `sequence_number` 0: use it when no event has been written yet (the
/// upstream refused before streaming). Once a [`super::ResponsesWriter`] has
/// written events, use [`super::ResponsesWriter::fail`], which numbers the
/// event in sequence and follows it with `response.failed`, so
/// `client.responses.stream()` ends with a terminal lifecycle event. `status`
/// picks the code when `code` is empty (429 `rate_limit_exceeded`, 5xx
/// `server_error`, else `invalid_request_error`).
pub fn error_event(status: u16, code: &str, message: &str) -> Bytes {
    Bytes::from(sse_event(&error_payload(status, code, message, 0)))
}

/// The Response object (and its output items, for storing) for a whole
/// `chat.completion` body; `None` when the body is not a completion (an
/// error body, or not JSON), which then passes through unchanged.
pub(super) fn whole(shell: &ResponseShell, body: &[u8]) -> Option<(Value, Vec<Value>)> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    if completion.get("error").is_some() {
        return None;
    }
    let choice = completion.get("choices")?.get(0)?;
    let message = choice.get("message")?;
    let ending = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => Ending::Incomplete("max_output_tokens".into()),
        Some("content_filter") => Ending::Incomplete("content_filter".into()),
        _ => Ending::Completed,
    };
    let item_status = match ending {
        Ending::Incomplete(_) => "incomplete",
        _ => "completed",
    };
    let mut output = Vec::new();
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        let id = shell.item_id("msg", output.len());
        output.push(message_item(&id, text, item_status));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let id = shell.item_id("fc", output.len());
        output.push(function_call_item(
            &id,
            &text(call.get("id")),
            &text(function.and_then(|f| f.get("name"))),
            &text(function.and_then(|f| f.get("arguments"))),
            item_status,
        ));
    }
    let usage = completion
        .get("usage")
        .and_then(chat_usage)
        .map(|(usage, reasoning)| usage_json(&usage, reasoning));
    let response = shell.object(&ending, output.clone(), usage.as_ref());
    Some((response, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> ResponseShell {
        ResponseShell {
            id: "resp_abc".into(),
            model: "m".into(),
            created_at: 1,
            echo: echoed_fields(&Map::new()),
        }
    }

    #[test]
    fn a_completion_with_text_and_a_tool_call_becomes_two_items() {
        let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"c\":1}"}}]},
            "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                      "prompt_tokens_details": {"cached_tokens": 3}}});
        let (response, items) = whole(&shell(), body.to_string().as_bytes()).unwrap();
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"], Value::Array(items.clone()));
        assert_eq!(items[0]["id"], "msg_abc_0");
        assert_eq!(items[0]["content"][0]["text"], "Let me check.");
        assert_eq!(
            items[1],
            function_call_item("fc_abc_1", "call_1", "get", "{\"c\":1}", "completed")
        );
        assert_eq!(response["usage"]["input_tokens"], 10);
        assert_eq!(
            response["usage"]["input_tokens_details"]["cached_tokens"],
            3
        );
        assert_eq!(response["usage"]["total_tokens"], 14);
        assert_eq!(response["tools"], json!([]));
        assert_eq!(response["parallel_tool_calls"], json!(true));
    }

    #[test]
    fn length_is_incomplete_and_errors_pass_through() {
        let body = json!({"choices": [{"message": {"content": "cut"}, "finish_reason": "length"}]});
        let (response, _) = whole(&shell(), body.to_string().as_bytes()).unwrap();
        assert_eq!(response["status"], "incomplete");
        assert_eq!(
            response["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert!(whole(&shell(), br#"{"error":{"message":"no"}}"#).is_none());
    }

    #[test]
    fn the_error_event_picks_a_code_from_the_status() {
        let event = error_event(429, "", "slow down");
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("event: error\ndata: "));
        let data: Value =
            serde_json::from_str(text.trim_end().trim_start_matches("event: error\ndata: "))
                .unwrap();
        assert_eq!(data["code"], "rate_limit_exceeded");
        assert_eq!(data["message"], "slow down");
        assert_eq!(data["sequence_number"], 0);
    }
}
