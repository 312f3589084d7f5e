//! The way in: a Messages request body (read as `messages_body.rs` types)
//! rebuilt as a chat-completions body (`chat_body.rs` types).

use super::chat_body::{
    ChatBody, ChatContent, ChatFunctionCall, ChatFunctionDef, ChatImageUrl, ChatMessage,
    ChatNamedFunction, ChatPart, ChatTool, ChatToolCall, ChatToolChoice, StreamOptions,
};
use super::messages_body::{BlockIn, MessagesRequest, ToolChoiceIn, ToolIn};
use crate::chat::to_json;
use crate::ProviderError;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Whether the body is a Messages request (which must say `max_tokens`) or
/// a `count_tokens` request (which has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Generate,
    CountTokens,
}

/// An Anthropic Messages request body -> an OpenAI chat-completions request
/// body, for every upstream that is not Anthropic's own.
///
/// Blocks keep their `cache_control` (on text and image parts and on tool
/// definitions, outside `function`); `tool_result` blocks become `tool`
/// messages placed right after the assistant turn that called them;
/// `thinking` blocks are dropped; server tools and content kinds chat
/// cannot carry (documents, search results, ...) are refused.
pub fn to_chat(body: &[u8]) -> Result<Vec<u8>, ProviderError> {
    convert(body, Purpose::Generate)
}

/// A `count_tokens` request body (a Messages request without `max_tokens`
/// or `stream`) -> the chat body to estimate its input tokens from.
pub fn count_tokens_to_chat(body: &[u8]) -> Result<Vec<u8>, ProviderError> {
    convert(body, Purpose::CountTokens)
}

fn convert(body: &[u8], purpose: Purpose) -> Result<Vec<u8>, ProviderError> {
    let req: MessagesRequest<'_> =
        serde_json::from_slice(body).map_err(|e| ProviderError::MalformedJson {
            detail: e.to_string(),
        })?;
    if purpose == Purpose::Generate && req.max_tokens.is_none() {
        return Err(ProviderError::InvalidField {
            field: "max_tokens",
            expected: "an integer (it is required)",
        });
    }
    let system = decode_system(req.system)?;
    let turns = req
        .messages
        .iter()
        .map(|m| Ok((m.role.as_ref(), decode_content(m.content)?)))
        .collect::<Result<Vec<_>, ProviderError>>()?;
    let mut messages = Vec::with_capacity(turns.len() + 1);
    if let Some(content) = system_message(&system)? {
        messages.push(ChatMessage::System { content });
    }
    for (role, content) in &turns {
        push_turn(&mut messages, role, content)?;
    }
    let stream = purpose == Purpose::Generate && req.stream == Some(true);
    let tools = req
        .tools
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(chat_tool)
        .collect::<Result<Vec<_>, _>>()?;
    let (tool_choice, parallel_tool_calls) = match &req.tool_choice {
        None => (None, None),
        Some(c) => chat_tool_choice(c)?,
    };
    let chat = ChatBody {
        model: req.model.as_deref(),
        messages,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req
            .stop_sequences
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|s| s.as_ref())
            .collect(),
        user: req.metadata.as_ref().and_then(|m| m.user_id.as_deref()),
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools,
        tool_choice,
        parallel_tool_calls,
    };
    to_json(&chat)
}

/// A string, or a list of blocks, read from raw JSON.
enum Content<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<BlockIn<'a>>),
}

fn decode_content(raw: &RawValue) -> Result<Content<'_>, ProviderError> {
    let text = raw.get();
    let parsed = if text.starts_with('"') {
        serde_json::from_str(text).map(Content::Text)
    } else if text.starts_with('[') {
        serde_json::from_str(text).map(Content::Blocks)
    } else {
        return Err(ProviderError::InvalidField {
            field: "messages",
            expected: "content as a string or an array of content blocks",
        });
    };
    parsed.map_err(|e| ProviderError::MalformedJson {
        detail: format!("in a content block: {e}"),
    })
}

fn decode_system(raw: Option<&RawValue>) -> Result<Option<Content<'_>>, ProviderError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => decode_content(r)
            .map(Some)
            .map_err(|_| ProviderError::InvalidField {
                field: "system",
                expected: "a string or an array of text blocks",
            }),
    }
}

/// The leading `system` message, if there is a system prompt.
fn system_message<'a>(
    system: &'a Option<Content<'_>>,
) -> Result<Option<ChatContent<'a>>, ProviderError> {
    match system {
        None => Ok(None),
        Some(Content::Text(t)) => Ok(Some(ChatContent::Text(t))),
        Some(Content::Blocks(blocks)) => {
            let parts = blocks
                .iter()
                .map(|b| match (b.kind.as_ref(), &b.text) {
                    ("text", Some(text)) => Ok(ChatPart::Text {
                        text,
                        cache_control: b.cache_control,
                    }),
                    _ => Err(ProviderError::InvalidField {
                        field: "system",
                        expected: "a string or an array of text blocks",
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(ChatContent::Parts(parts)))
        }
    }
}

/// Adds one Messages turn as chat messages: a user turn's tool results
/// first (as `tool` messages), then its other blocks; an assistant turn as
/// one message with its text and tool calls.
fn push_turn<'a>(
    out: &mut Vec<ChatMessage<'a>>,
    role: &str,
    content: &'a Content<'_>,
) -> Result<(), ProviderError> {
    let blocks = match content {
        Content::Text(text) => {
            out.push(match role {
                "user" => ChatMessage::User {
                    content: ChatContent::Text(text),
                },
                "assistant" => ChatMessage::Assistant {
                    content: Some(ChatContent::Text(text)),
                    tool_calls: Vec::new(),
                },
                _ => return Err(bad_role()),
            });
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.kind.as_ref() {
            "text" => parts.push(ChatPart::Text {
                text: block
                    .text
                    .as_deref()
                    .ok_or_else(|| missing("text", "text"))?,
                cache_control: block.cache_control,
            }),
            "image" => parts.push(ChatPart::ImageUrl {
                image_url: ChatImageUrl {
                    url: image_url(block)?,
                },
                cache_control: block.cache_control,
            }),
            "tool_use" if role == "assistant" => tool_calls.push(ChatToolCall {
                id: block
                    .id
                    .as_deref()
                    .ok_or_else(|| missing("tool_use", "id"))?,
                kind: "function",
                function: ChatFunctionCall {
                    name: block
                        .name
                        .as_deref()
                        .ok_or_else(|| missing("tool_use", "name"))?,
                    arguments: block.input.map_or("{}", RawValue::get),
                },
            }),
            "tool_result" if role == "user" => out.push(ChatMessage::Tool {
                tool_call_id: block
                    .tool_use_id
                    .as_deref()
                    .ok_or_else(|| missing("tool_result", "tool_use_id"))?,
                content: tool_result_text(block.content)?,
                cache_control: block.cache_control,
            }),
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(ProviderError::Unsupported {
                    detail: format!("a content block of type '{other}' in a {role} message"),
                })
            }
        }
    }
    match role {
        "user" if !parts.is_empty() => out.push(ChatMessage::User {
            content: ChatContent::Parts(parts),
        }),
        "user" => {}
        "assistant" if parts.is_empty() && tool_calls.is_empty() => {}
        "assistant" => out.push(ChatMessage::Assistant {
            content: (!parts.is_empty()).then_some(ChatContent::Parts(parts)),
            tool_calls,
        }),
        _ => return Err(bad_role()),
    }
    Ok(())
}

fn bad_role() -> ProviderError {
    ProviderError::InvalidField {
        field: "messages",
        expected: "messages whose role is \"user\" or \"assistant\"",
    }
}

fn missing(block: &str, field: &str) -> ProviderError {
    ProviderError::MalformedJson {
        detail: format!("a {block} block without its '{field}'"),
    }
}

/// An image block's `source` as a chat `image_url` URL.
fn image_url(block: &BlockIn<'_>) -> Result<String, ProviderError> {
    let source = block
        .source
        .as_ref()
        .ok_or_else(|| missing("image", "source"))?;
    match (
        source.kind.as_ref(),
        &source.media_type,
        &source.data,
        &source.url,
    ) {
        ("base64", Some(media_type), Some(data), _) => {
            Ok(format!("data:{media_type};base64,{data}"))
        }
        ("url", _, _, Some(url)) => Ok(url.to_string()),
        (kind, ..) => Err(ProviderError::Unsupported {
            detail: format!(
                "an image source of type '{kind}' (only base64 and url are translated)"
            ),
        }),
    }
}

/// A `tool_result`'s content as text: the string, or its text blocks joined.
fn tool_result_text(raw: Option<&RawValue>) -> Result<String, ProviderError> {
    let Some(raw) = raw else {
        return Ok(String::new());
    };
    match decode_content(raw)? {
        Content::Text(t) => Ok(t.into_owned()),
        Content::Blocks(blocks) => {
            let mut text = String::new();
            for block in &blocks {
                match (block.kind.as_ref(), &block.text) {
                    ("text", Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ProviderError::Unsupported {
                            detail: format!(
                                "a tool_result holding a '{kind}' block (only text is translated)"
                            ),
                        })
                    }
                }
            }
            Ok(text)
        }
    }
}

fn chat_tool<'a>(tool: &'a ToolIn<'_>) -> Result<ChatTool<'a>, ProviderError> {
    match tool.kind.as_deref() {
        None | Some("custom") => Ok(ChatTool {
            kind: "function",
            function: ChatFunctionDef {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: tool.input_schema,
            },
            cache_control: tool.cache_control,
        }),
        Some(server) => Err(ProviderError::Unsupported {
            detail: format!(
                "the server tool '{}' (type '{server}') runs on Anthropic's servers only",
                tool.name
            ),
        }),
    }
}

/// `tool_choice` and `parallel_tool_calls`.
fn chat_tool_choice<'a>(
    choice: &'a ToolChoiceIn<'_>,
) -> Result<(Option<ChatToolChoice<'a>>, Option<bool>), ProviderError> {
    let out = match (choice.kind.as_ref(), &choice.name) {
        ("auto", _) => ChatToolChoice::Mode("auto"),
        ("any", _) => ChatToolChoice::Mode("required"),
        ("none", _) => ChatToolChoice::Mode("none"),
        ("tool", Some(name)) => ChatToolChoice::Named {
            kind: "function",
            function: ChatNamedFunction { name },
        },
        _ => return Err(ProviderError::InvalidField {
            field: "tool_choice",
            expected:
                "{\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": ...}",
        }),
    };
    let parallel = (choice.disable_parallel_tool_use == Some(true)).then_some(false);
    Ok((Some(out), parallel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn chat(body: Value) -> Value {
        let out = to_chat(&serde_json::to_vec(&body).unwrap()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn refused(body: Value) -> ProviderError {
        to_chat(&serde_json::to_vec(&body).unwrap()).unwrap_err()
    }

    #[test]
    fn converts_parameters() {
        let out = chat(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9,
            "top_k": 5, "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "stream": true,
            "system": "be brief",
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9,
                "stop": ["END"], "user": "u1", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"}]
            })
        );
    }

    #[test]
    fn converts_blocks_tools_and_cache_markers() {
        let out = chat(json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"q": 1}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "and also"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "one",
                     "cache_control": {"type": "ephemeral"}},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "t"}, {"type": "text", "text": "wo"}]}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_3", "name": "get", "input": {}}]}
            ],
            "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object"},
                       "cache_control": {"type": "ephemeral"}},
                      {"type": "custom", "name": "put", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": true}
        }));
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(
            msgs[0],
            json!({"role": "system", "content": [{"type": "text", "text": "sys",
                "cache_control": {"type": "ephemeral", "ttl": "1h"}}]})
        );
        assert_eq!(
            msgs[1]["content"],
            json!([
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}])
        );
        assert_eq!(
            msgs[2],
            json!({"role": "assistant", "content": [{"type": "text", "text": "calling"}],
                "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get", "arguments": "{}"}}]})
        );
        assert_eq!(
            msgs[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "one",
                "cache_control": {"type": "ephemeral"}})
        );
        assert_eq!(
            msgs[4],
            json!({"role": "tool", "tool_call_id": "toolu_2", "content": "two"})
        );
        assert_eq!(
            msgs[5],
            json!({"role": "user", "content": [{"type": "text", "text": "and also"}]}),
            "the turn's text follows its tool results"
        );
        assert_eq!(msgs[6]["content"], Value::Null);
        assert_eq!(
            out["tools"],
            json!([
                {"type": "function", "function": {"name": "get", "description": "d",
                    "parameters": {"type": "object"}}, "cache_control": {"type": "ephemeral"}},
                {"type": "function", "function": {"name": "put", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "function", "function": {"name": "get"}})
        );
        assert_eq!(out["parallel_tool_calls"], false);
    }

    #[test]
    fn maps_tool_choice_modes() {
        for (kind, want) in [("auto", "auto"), ("any", "required"), ("none", "none")] {
            let out = chat(json!({"model": "m", "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": kind}}));
            assert_eq!(out["tool_choice"], want);
            assert!(out.get("parallel_tool_calls").is_none());
        }
    }

    #[test]
    fn refuses_what_chat_cannot_carry() {
        let base = |messages: Value| json!({"model": "m", "max_tokens": 1, "messages": messages});
        assert!(matches!(
            to_chat(b"[1]").unwrap_err(),
            ProviderError::MalformedJson { .. }
        ));
        assert!(matches!(
            to_chat(br#"{"model":"m","max_tokens":1}"#).unwrap_err(),
            ProviderError::MalformedJson { detail } if detail.contains("messages")
        ));
        assert!(matches!(
            refused(json!({"model": "m", "messages": []})),
            ProviderError::InvalidField {
                field: "max_tokens",
                ..
            }
        ));
        let e = refused(base(json!([{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "data": "x"}}]}])));
        assert!(e.to_string().contains("'document'"), "{e}");
        let e = refused(base(
            json!([{"role": "user", "content": [{"type": "bogus"}]}]),
        ));
        assert!(e.to_string().contains("'bogus'"), "{e}");
        let e = refused(base(json!([{"role": "user", "content": 3}])));
        assert!(matches!(
            e,
            ProviderError::InvalidField {
                field: "messages",
                ..
            }
        ));
        let e = refused(base(json!([{"role": "system", "content": "x"}])));
        assert!(matches!(
            e,
            ProviderError::InvalidField {
                field: "messages",
                ..
            }
        ));
        let mut with_server_tool = base(json!([{"role": "user", "content": "x"}]));
        with_server_tool["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        let e = refused(with_server_tool);
        assert!(e.to_string().contains("web_search"), "{e}");
    }

    #[test]
    fn count_tokens_needs_no_max_tokens_and_never_streams() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let out: Value = serde_json::from_slice(&count_tokens_to_chat(body).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        );
    }
}
