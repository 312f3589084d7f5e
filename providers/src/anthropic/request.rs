//! The request: an OpenAI chat request rebuilt as a Messages request,
//! borrowing from the client's body.
//!
//! Prompt-cache markers (`cache_control`) go on the matching block: system
//! texts, text and image blocks, tool definitions; a marker on a whole chat
//! message goes on the last block that message became.

use super::MAX_TEMPERATURE;
use crate::chat::{empty_schema, ChatRequest, Image, PartRef, Role, ToolMode};
use crate::wire::{push_turn, ContentTurn};
use crate::ProviderError;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A Messages API request body.
#[derive(Serialize)]
pub(super) struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextBlock<'a>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
}

/// A user or assistant turn.
type Turn<'a> = ContentTurn<Block<'a>>;

/// A content block and its prompt-cache marker.
#[derive(Serialize)]
struct Block<'a> {
    #[serde(flatten)]
    kind: BlockKind<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
}

impl<'a> Block<'a> {
    fn new(kind: BlockKind<'a>, cache_control: Option<&'a Value>) -> Self {
        Block {
            kind,
            cache_control,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockKind<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Box<RawValue>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: String,
    },
}

/// Puts a whole message's marker on the last block it became (unless that
/// block has its own).
fn mark_last<'a>(blocks: &mut [Block<'a>], mark: Option<&'a Value>) {
    if let (Some(mark), Some(last)) = (mark, blocks.last_mut()) {
        last.cache_control.get_or_insert(mark);
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
}

#[derive(Serialize)]
struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// The content blocks of a user or assistant message.
fn content_blocks<'a>(
    parts: Vec<(PartRef<'a>, Option<&'a Value>)>,
) -> Result<Vec<Block<'a>>, ProviderError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for (part, mark) in parts {
        match part {
            PartRef::Text("") => {}
            PartRef::Text(text) => blocks.push(Block::new(BlockKind::Text { text }, mark)),
            PartRef::Image(url) => {
                let source = match Image::parse(url)? {
                    Image::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
                    Image::Url(url) => ImageSource::Url { url },
                };
                blocks.push(Block::new(BlockKind::Image { source }, mark));
            }
            PartRef::Unsupported => {
                return Err(ProviderError::Unsupported {
                    detail: "Anthropic accepts text and image content parts only".into(),
                })
            }
        }
    }
    Ok(blocks)
}

/// The Messages request for `chat`, sent to `model`.
pub(super) fn to_messages<'a>(
    chat: &'a ChatRequest<'a>,
    model: &'a str,
    stream: bool,
    default_max_tokens: u64,
) -> Result<MessagesRequest<'a>, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        match m.role {
            Role::System | Role::Developer => system.extend(
                m.marked_system_texts()?
                    .into_iter()
                    .map(|(text, cache_control)| TextBlock {
                        kind: "text",
                        text,
                        cache_control,
                    }),
            ),
            Role::User => {
                let mut blocks = content_blocks(m.marked_parts())?;
                mark_last(&mut blocks, m.cache_control.as_ref());
                push_turn(&mut turns, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = content_blocks(m.marked_parts())?;
                for call in m.tool_calls() {
                    let kind = BlockKind::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input: call.function.arguments_object()?,
                    };
                    blocks.push(Block::new(kind, None));
                }
                mark_last(&mut blocks, m.cache_control.as_ref());
                push_turn(&mut turns, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let kind = BlockKind::ToolResult {
                    tool_use_id: m.answered_call_id(),
                    content: m.text()?,
                };
                let block = Block::new(kind, m.cache_control.as_ref());
                push_turn(&mut turns, "user", vec![block]);
            }
        }
    }
    let tools = chat
        .tools()
        .iter()
        .map(|t| {
            Ok(ToolDef {
                name: &t.function.name,
                description: t.function.description.as_deref(),
                input_schema: match t.function.parameters {
                    Some(p) => p,
                    None => empty_schema()?,
                },
                cache_control: t.cache_control.as_ref(),
            })
        })
        .collect::<Result<Vec<_>, ProviderError>>()?;
    let disable_parallel = (chat.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = match chat.tool_choice.as_ref().map(|c| c.mode()).transpose()? {
        None if tools.is_empty() => None,
        None => disable_parallel.map(|d| choice("auto", None, Some(d))),
        Some(ToolMode::Auto) => Some(choice("auto", None, disable_parallel)),
        Some(ToolMode::None) => Some(choice("none", None, None)),
        Some(ToolMode::Required) => Some(choice("any", None, disable_parallel)),
        Some(ToolMode::Function(name)) => Some(choice("tool", Some(name), disable_parallel)),
    };
    Ok(MessagesRequest {
        model,
        max_tokens: chat.max_output_tokens().unwrap_or(default_max_tokens),
        system,
        messages: turns,
        stop_sequences: chat.stop_sequences(),
        temperature: chat.temperature.map(|t| t.min(MAX_TEMPERATURE)),
        top_p: chat.top_p,
        stream,
        tools,
        tool_choice,
        metadata: chat.user.as_deref().map(|user_id| Metadata { user_id }),
    })
}

/// A `tool_choice` of type `kind`.
fn choice<'a>(kind: &'static str, name: Option<&'a str>, d: Option<bool>) -> ToolChoiceOut<'a> {
    ToolChoiceOut {
        kind,
        name,
        disable_parallel_tool_use: d,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn translate(body: Value) -> Value {
        let bytes = serde_json::to_vec(&body).unwrap();
        let chat = ChatRequest::parse(&bytes).unwrap();
        let req = to_messages(&chat, "claude-x", false, 1024).unwrap();
        serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap()
    }

    #[test]
    fn builds_a_messages_request() {
        let out = translate(json!({
            "model": "m", "temperature": 1.5, "stop": ["END"], "user": "u1",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "one"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "two"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get", "description": "d"}}],
            "tool_choice": "required", "parallel_tool_calls": false
        }));
        assert_eq!(out["model"], "claude-x");
        assert_eq!(out["max_tokens"], 1024);
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["system"], json!([{"type": "text", "text": "be brief"}]));
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"]["user_id"], "u1");
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "tool results and the next user turn merge");
        assert_eq!(
            msgs[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBOR"})
        );
        assert_eq!(msgs[0]["content"][2]["source"]["type"], "url");
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"q": 1}})
        );
        assert_eq!(msgs[2]["content"][1]["tool_use_id"], "toolu_2");
        assert_eq!(msgs[2]["content"][2]["text"], "thanks");
        assert_eq!(
            out["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert!(out.get("stream").is_none());
    }

    #[test]
    fn puts_cache_markers_on_the_matching_blocks() {
        let eph = json!({"type": "ephemeral"});
        let out = translate(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "sys", "cache_control": eph},
                {"role": "user", "content": [
                    {"type": "text", "text": "a", "cache_control": eph},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}, "cache_control": eph}]},
                {"role": "assistant", "content": "b", "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                 "cache_control": eph},
                {"role": "tool", "tool_call_id": "t1", "content": "r", "cache_control": eph},
                {"role": "user", "content": "plain"}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": eph}]
        }));
        assert_eq!(out["system"][0]["cache_control"], eph);
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["content"][0]["cache_control"], eph);
        assert_eq!(msgs[0]["content"][1]["cache_control"], eph);
        assert!(msgs[1]["content"][0].get("cache_control").is_none());
        assert_eq!(
            msgs[1]["content"][1]["cache_control"], eph,
            "a message's marker goes on its last block"
        );
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][0]["cache_control"], eph);
        assert!(msgs[2]["content"][1].get("cache_control").is_none());
        assert_eq!(out["tools"][0]["cache_control"], eph);
    }
}
