//! The request side: a Responses request body (and the stored items of the
//! conversation so far) turned into a chat-completions request.
//!
//! Items map to chat messages: `message` items by role (`developer` becomes
//! `system`), consecutive `function_call` items to one assistant message
//! with `tool_calls`, `function_call_output` items to `tool` messages;
//! `reasoning` items are dropped. What chat cannot express (hosted tools,
//! item references, conversations) is refused with
//! [`ProviderError::Unsupported`] rather than dropped silently.

use crate::ProviderError;
use serde_json::{json, Map, Value};

/// Reads the body as a JSON object.
pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ProviderError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ProviderError::MalformedJson {
            detail: "the body is not a JSON object".to_string(),
        }),
        Err(e) => Err(ProviderError::MalformedJson {
            detail: e.to_string(),
        }),
    }
}

/// `input` as items: a string is one user message item.
pub(super) fn input_items(input: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![
            json!({"type": "message", "role": "user", "content": text}),
        ]),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(ProviderError::InvalidField {
            field: "input",
            expected: "a string or an array of items",
        }),
    }
}

fn unsupported(detail: impl Into<String>) -> ProviderError {
    ProviderError::Unsupported {
        detail: detail.into(),
    }
}

/// A Responses request body, with the stored items of the conversation so
/// far (oldest first), as an OpenAI chat-completions request body. The
/// request's own `instructions` lead as a `system` message; history items
/// come next, then the request's input items.
pub fn to_chat(body: &[u8], history: &[Value]) -> Result<Vec<u8>, ProviderError> {
    let object = parse_object(body)?;
    let request = super::ResponsesRequest::from_object(&object)?;
    if object.get("conversation").is_some_and(|c| !c.is_null()) {
        return Err(unsupported(
            "conversations are not supported; use previous_response_id",
        ));
    }
    let mut messages = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    for item in history.iter().chain(&request.input_items) {
        push_item(&mut messages, item)?;
    }
    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(request.model.clone()));
    chat.insert("messages".into(), Value::Array(messages));
    for kept in ["temperature", "top_p", "user", "parallel_tool_calls"] {
        if let Some(value) = object.get(kept).filter(|v| !v.is_null()) {
            chat.insert(kept.into(), value.clone());
        }
    }
    if let Some(max) = object.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    if let Some(tools) = object.get("tools").filter(|v| !v.is_null()) {
        let tools = chat_tools(tools)?;
        if !tools.is_empty() {
            chat.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = object.get("tool_choice").filter(|v| !v.is_null()) {
        chat.insert("tool_choice".into(), chat_tool_choice(choice)?);
    }
    if let Some(format) = object.get("text").and_then(|t| t.get("format")) {
        if let Some(response_format) = chat_response_format(format)? {
            chat.insert("response_format".into(), response_format);
        }
    }
    if let Some(effort) = object
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| e.is_string())
    {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    if request.stream {
        chat.insert("stream".into(), Value::Bool(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    crate::chat::to_json(&Value::Object(chat))
}

/// Appends the chat message(s) one item stands for.
fn push_item(messages: &mut Vec<Value>, item: &Value) -> Result<(), ProviderError> {
    let Some(object) = item.as_object() else {
        return Err(unsupported("an input item that is not an object"));
    };
    let kind = match object.get("type").and_then(Value::as_str) {
        Some(kind) => kind,
        // An item without `type` is an easy message: role plus content.
        None if object.contains_key("role") => "message",
        None => return Err(unsupported("an input item without a type")),
    };
    match kind {
        "message" => messages.push(message(object)?),
        "function_call" => push_function_call(messages, object)?,
        "function_call_output" => {
            let call_id = required_str(object, "call_id", "function_call_output")?;
            let output = match object.get("output") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(Value::Array(parts)) => Value::String(joined_text(parts)?),
                _ => return Err(unsupported("a function_call_output without output")),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // Reasoning is the model's own; chat upstreams cannot take it back.
        "reasoning" => {}
        other => return Err(unsupported(format!("input items of type '{other}'"))),
    }
    Ok(())
}

fn required_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    kind: &str,
) -> Result<&'a str, ProviderError> {
    object
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(format!("a {kind} item without {field}")))
}

/// A `message` item as a chat message.
fn message(object: &Map<String, Value>) -> Result<Value, ProviderError> {
    let role = match object.get("role").and_then(Value::as_str) {
        Some("developer") | Some("system") => "system",
        Some("user") => "user",
        Some("assistant") => "assistant",
        Some(other) => return Err(unsupported(format!("messages with role '{other}'"))),
        None => return Err(unsupported("a message item without a role")),
    };
    let content = match object.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) if role == "user" => Value::Array(chat_parts(parts)?),
        // System and assistant turns carry text only in chat.
        Some(Value::Array(parts)) => Value::String(joined_text(parts)?),
        _ => return Err(unsupported("a message item without content")),
    };
    Ok(json!({"role": role, "content": content}))
}

/// Content parts of a user message as chat parts.
fn chat_parts(parts: &[Value]) -> Result<Vec<Value>, ProviderError> {
    parts
        .iter()
        .map(|part| {
            let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "input_text" | "output_text" | "text" => Ok(json!({
                    "type": "text",
                    "text": part.get("text").and_then(Value::as_str).unwrap_or(""),
                })),
                "input_image" => {
                    let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                        return Err(unsupported("images given by file_id"));
                    };
                    let mut image = json!({"url": url});
                    if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                        image["detail"] = detail.clone();
                    }
                    Ok(json!({"type": "image_url", "image_url": image}))
                }
                "input_file" => {
                    let mut file = Map::new();
                    for field in ["file_id", "file_data", "filename"] {
                        if let Some(value) = part.get(field).filter(|v| v.is_string()) {
                            file.insert(field.into(), value.clone());
                        }
                    }
                    if part.get("file_url").is_some() {
                        return Err(unsupported("files given by file_url"));
                    }
                    Ok(json!({"type": "file", "file": file}))
                }
                other => Err(unsupported(format!("content parts of type '{other}'"))),
            }
        })
        .collect()
}

/// The text of text parts, joined; anything else is refused.
fn joined_text(parts: &[Value]) -> Result<String, ProviderError> {
    let mut text = String::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("refusal") => {
                text.push_str(part.get("refusal").and_then(Value::as_str).unwrap_or(""));
            }
            other => {
                return Err(unsupported(format!(
                    "content parts of type '{}' in this message",
                    other.unwrap_or("none")
                )))
            }
        }
    }
    Ok(text)
}

/// A `function_call` item joins the assistant message just before it (the
/// same model turn), or starts one.
fn push_function_call(
    messages: &mut Vec<Value>,
    object: &Map<String, Value>,
) -> Result<(), ProviderError> {
    let call = json!({
        "id": required_str(object, "call_id", "function_call")?,
        "type": "function",
        "function": {
            "name": required_str(object, "name", "function_call")?,
            "arguments": object.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
        },
    });
    if let Some(last) = messages.last_mut().and_then(Value::as_object_mut) {
        if last.get("role").and_then(Value::as_str) == Some("assistant") {
            match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                Some(calls) => calls.push(call),
                None => {
                    last.insert("tool_calls".into(), Value::Array(vec![call]));
                }
            }
            return Ok(());
        }
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    Ok(())
}

/// Responses `tools` as chat tools; only function tools can be sent on.
fn chat_tools(tools: &Value) -> Result<Vec<Value>, ProviderError> {
    let Some(tools) = tools.as_array() else {
        return Err(ProviderError::InvalidField {
            field: "tools",
            expected: "an array",
        });
    };
    tools
        .iter()
        .map(|tool| match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut function = Map::new();
                for field in ["name", "description", "parameters", "strict"] {
                    if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                        function.insert(field.into(), value.clone());
                    }
                }
                Ok(json!({"type": "function", "function": function}))
            }
            other => Err(unsupported(format!(
                "the hosted tool '{}' (only function tools can be used with this model)",
                other.unwrap_or("none")
            ))),
        })
        .collect()
}

/// Responses `tool_choice` as chat's.
fn chat_tool_choice(choice: &Value) -> Result<Value, ProviderError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(object) if object.get("type").and_then(Value::as_str) == Some("function") => {
            let name = required_str(object, "name", "tool_choice")?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(unsupported(format!(
            "tool_choice {choice} (only auto, none, required or a function)"
        ))),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn chat_response_format(format: &Value) -> Result<Option<Value>, ProviderError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "description", "schema", "strict"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), value.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(unsupported(format!("text.format of type '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value, history: &[Value]) -> Value {
        serde_json::from_slice(&to_chat(body.to_string().as_bytes(), history).unwrap()).unwrap()
    }

    fn refusal(body: Value) -> String {
        match to_chat(body.to_string().as_bytes(), &[]) {
            Err(ProviderError::Unsupported { detail }) => detail,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let c = chat(
            json!({"model": "m", "input": "Hello", "max_output_tokens": 50,
                            "temperature": 0.2, "top_p": 0.9, "user": "u1"}),
            &[],
        );
        assert_eq!(
            c,
            json!({"model": "m", "messages": [{"role": "user", "content": "Hello"}],
                   "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1"})
        );
    }

    #[test]
    fn function_calls_round_trip_and_merge_into_one_assistant_turn() {
        let c = chat(
            json!({"model": "m", "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_a", "name": "get", "arguments": "{\"c\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_b", "name": "get", "arguments": "{\"c\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_b", "output": "rain"}
            ]}),
            &[],
        );
        assert_eq!(
            c["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": "{\"c\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get", "arguments": "{\"c\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_b", "content": "rain"}
            ])
        );
    }

    #[test]
    fn instructions_lead_then_history_then_input() {
        let history = [
            json!({"type": "message", "role": "user", "content": "first"}),
            json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": "answer", "annotations": []}]}),
            json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}", "status": "completed"}),
        ];
        let c = chat(
            json!({"model": "m", "instructions": "Be terse.", "input": [
                {"type": "function_call_output", "call_id": "call_1", "output": "42"},
                {"role": "developer", "content": "extra rule"}
            ]}),
            &history,
        );
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "answer", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                {"role": "system", "content": "extra rule"}
            ])
        );
    }

    #[test]
    fn tools_choice_format_and_stream_convert() {
        let c = chat(
            json!({"model": "m", "input": "x", "stream": true, "parallel_tool_calls": false,
                   "tools": [{"type": "function", "name": "get", "description": "d",
                              "parameters": {"type": "object"}, "strict": true}],
                   "tool_choice": {"type": "function", "name": "get"},
                   "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}}}),
            &[],
        );
        assert_eq!(
            c["tools"],
            json!([{"type": "function", "function": {"name": "get", "description": "d",
                    "parameters": {"type": "object"}, "strict": true}}])
        );
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "get"}})
        );
        assert_eq!(c["parallel_tool_calls"], json!(false));
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(c["stream"], json!(true));
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        let c = chat(
            json!({"model": "m", "input": "x", "tool_choice": "required",
                            "text": {"format": {"type": "json_object"}}}),
            &[],
        );
        assert_eq!(c["tool_choice"], json!("required"));
        assert_eq!(c["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn images_become_image_url_parts() {
        let c = chat(
            json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]}]}),
            &[],
        );
        assert_eq!(
            c["messages"][0]["content"],
            json!([{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}])
        );
    }

    #[test]
    fn refuses_what_chat_cannot_express() {
        assert!(
            refusal(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}))
                .contains("web_search")
        );
        assert!(refusal(
            json!({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}})
        )
        .contains("tool_choice"));
        assert!(refusal(
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]})
        )
        .contains("item_reference"));
        assert!(
            refusal(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file_1"}]}]}))
            .contains("file_id")
        );
        assert!(
            refusal(json!({"model": "m", "input": "x", "conversation": "conv_1"}))
                .contains("conversation")
        );
    }
}
