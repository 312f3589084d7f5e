//! OpenAI Chat Completions `messages`, checked and flattened into what chat
//! templates expect: every message an object with a known `role` and a
//! string `content`; `developer` given as `system`; tool call arguments as
//! objects.

use serde_json::{Map, Value};

use crate::error::ChatError;

/// The roles a message may have, as the error message lists them.
const ROLES: &str = "system, developer, user, assistant or tool";

/// Checks `messages` and returns the list a template is given.
pub(crate) fn normalize(messages: &Value) -> Result<Vec<Value>, ChatError> {
    let list = messages
        .as_array()
        .ok_or_else(|| ChatError::invalid("messages", "must be an array of messages"))?;
    if list.is_empty() {
        return Err(ChatError::invalid(
            "messages",
            "must hold at least one message",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, message)| normalize_one(message, &format!("messages[{i}]")))
        .collect()
}

fn normalize_one(message: &Value, at: &str) -> Result<Value, ChatError> {
    let object = message
        .as_object()
        .ok_or_else(|| ChatError::invalid(at, "must be an object"))?;
    let role = match object.get("role") {
        Some(Value::String(role)) => role.as_str(),
        Some(_) => return Err(ChatError::invalid(format!("{at}.role"), "must be a string")),
        None => return Err(ChatError::invalid(format!("{at}.role"), "is required")),
    };
    let role = match role {
        "system" | "user" | "assistant" | "tool" => role,
        // OpenAI's newer name for the system prompt; templates know `system`.
        "developer" => "system",
        other => {
            return Err(ChatError::invalid(
                format!("{at}.role"),
                format!("unknown role {other:?}; expected {ROLES}"),
            ))
        }
    };
    let content = match object.get("content") {
        Some(Value::String(text)) => text.clone(),
        // An assistant turn that only calls tools has no content.
        None | Some(Value::Null) if role == "assistant" => String::new(),
        None | Some(Value::Null) => {
            return Err(ChatError::invalid(format!("{at}.content"), "is required"))
        }
        Some(Value::Array(parts)) => join_text_parts(parts, &format!("{at}.content"))?,
        Some(_) => {
            return Err(ChatError::invalid(
                format!("{at}.content"),
                "must be a string or an array of content parts",
            ))
        }
    };
    let mut out: Map<String, Value> = object.clone();
    out.insert("role".into(), Value::from(role));
    out.insert("content".into(), Value::from(content));
    if let Some(Value::Array(calls)) = out.get_mut("tool_calls") {
        calls.iter_mut().for_each(parse_arguments);
    }
    Ok(Value::Object(out))
}

/// The text of a list of content parts, joined with newlines; any part that
/// is not text is refused (this engine's models read text only).
fn join_text_parts(parts: &[Value], at: &str) -> Result<String, ChatError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let kind = part
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ChatError::invalid(&here, "a content part needs a string `type`"))?;
        match kind {
            "text" => {
                let text = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                    ChatError::invalid(format!("{here}.text"), "must be a string")
                })?;
                texts.push(text);
            }
            other => {
                return Err(ChatError::UnsupportedContent {
                    path: here,
                    part_type: other.to_string(),
                })
            }
        }
    }
    Ok(texts.join("\n"))
}

/// OpenAI sends a tool call's `function.arguments` as a JSON string;
/// templates (`tool_call.arguments | tojson`, `.items()`) expect the object.
/// Arguments that are not valid JSON stay a string.
fn parse_arguments(call: &mut Value) {
    let Some(arguments) = call
        .get_mut("function")
        .and_then(|function| function.get_mut("arguments"))
    else {
        return;
    };
    if let Value::String(text) = arguments {
        if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
            *arguments = parsed;
        }
    }
}
