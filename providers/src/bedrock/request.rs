//! The request: an OpenAI chat request rebuilt as a Converse request,
//! borrowing from the client's body.
//!
//! Prompt-cache markers (`cache_control` on a part, a tool or a whole
//! message) become Converse cache points: `{"cachePoint":{"type":"default"}}`
//! right after the marked block, in the same list (system, message content,
//! `toolConfig.tools`). Converse has no TTL, so a marker's `ttl` is not sent.

use crate::chat::{empty_schema, ChatRequest, Image, PartRef, Role, ToolMode};
use crate::wire::{push_turn, ContentTurn};
use crate::ProviderError;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A Converse request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseRequest<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock<'a>>,
    inference_config: InferenceConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum SystemBlock<'a> {
    Text(&'a str),
    CachePoint(CachePoint),
}

/// `{"type":"default"}`: the only kind of cache point.
#[derive(Serialize)]
struct CachePoint {
    #[serde(rename = "type")]
    kind: &'static str,
}

const CACHE_POINT: CachePoint = CachePoint { kind: "default" };

/// A user or assistant turn.
type Turn<'a> = ContentTurn<Block<'a>>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(&'a str),
    Image(ImageBlock<'a>),
    ToolUse(ToolUse<'a>),
    ToolResult(ToolResult<'a>),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
struct ImageBlock<'a> {
    format: &'a str,
    source: ImageBytes<'a>,
}

#[derive(Serialize)]
struct ImageBytes<'a> {
    /// Base64, as Bedrock's JSON protocol encodes blobs.
    bytes: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse<'a> {
    tool_use_id: &'a str,
    name: &'a str,
    input: Box<RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult<'a> {
    tool_use_id: &'a str,
    content: Vec<TextOnlyOwned>,
}

#[derive(Serialize)]
struct TextOnlyOwned {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: Vec<ToolEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Choice<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolEntry<'a> {
    ToolSpec(ToolSpec<'a>),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Schema<'a>,
}

#[derive(Serialize)]
struct Schema<'a> {
    json: &'a RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Choice<'a> {
    Auto(Empty),
    Any(Empty),
    Tool(Named<'a>),
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
}
/// The content blocks of a user or assistant message.
fn blocks_of<'a>(
    parts: Vec<(PartRef<'a>, Option<&'a Value>)>,
) -> Result<Vec<Block<'a>>, ProviderError> {
    let mut out = Vec::with_capacity(parts.len());
    for (part, mark) in parts {
        match part {
            PartRef::Text("") => {}
            PartRef::Text(t) => out.push(Block::Text(t)),
            PartRef::Image(url) => match Image::parse(url)? {
                Image::Base64 { media_type, data } => {
                    let format = media_type.strip_prefix("image/").unwrap_or(media_type);
                    let format = if format == "jpg" { "jpeg" } else { format };
                    out.push(Block::Image(ImageBlock {
                        format,
                        source: ImageBytes { bytes: data },
                    }));
                }
                Image::Url(_) => {
                    return Err(ProviderError::Unsupported {
                        detail: "Bedrock takes images inline only: send a base64 data: URL".into(),
                    })
                }
            },
            PartRef::Unsupported => {
                return Err(ProviderError::Unsupported {
                    detail: "Bedrock accepts text and image content parts only here".into(),
                })
            }
        }
        if mark.is_some() {
            out.push(Block::CachePoint(CACHE_POINT));
        }
    }
    Ok(out)
}

/// A cache point after a whole message's blocks, if it is marked.
fn mark_end(blocks: &mut Vec<Block<'_>>, mark: Option<&Value>) {
    if mark.is_some() && !blocks.is_empty() {
        blocks.push(Block::CachePoint(CACHE_POINT));
    }
}

/// The Converse request for `chat`.
pub(super) fn to_converse<'a>(
    chat: &'a ChatRequest<'a>,
) -> Result<ConverseRequest<'a>, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        match m.role {
            Role::System | Role::Developer => {
                for (text, mark) in m.marked_system_texts()? {
                    system.push(SystemBlock::Text(text));
                    if mark.is_some() {
                        system.push(SystemBlock::CachePoint(CACHE_POINT));
                    }
                }
            }
            Role::User => {
                let mut blocks = blocks_of(m.marked_parts())?;
                mark_end(&mut blocks, m.cache_control.as_ref());
                push_turn(&mut turns, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = blocks_of(m.marked_parts())?;
                for call in m.tool_calls() {
                    blocks.push(Block::ToolUse(ToolUse {
                        tool_use_id: &call.id,
                        name: &call.function.name,
                        input: call.function.arguments_object()?,
                    }));
                }
                mark_end(&mut blocks, m.cache_control.as_ref());
                push_turn(&mut turns, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let mut blocks = vec![Block::ToolResult(ToolResult {
                    tool_use_id: m.answered_call_id(),
                    content: vec![TextOnlyOwned { text: m.text()? }],
                })];
                mark_end(&mut blocks, m.cache_control.as_ref());
                push_turn(&mut turns, "user", blocks);
            }
        }
    }
    let empty = empty_schema()?;
    let mut tools: Vec<ToolEntry<'a>> = Vec::with_capacity(chat.tools().len());
    for t in chat.tools() {
        tools.push(ToolEntry::ToolSpec(ToolSpec {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: Schema {
                json: t.function.parameters.unwrap_or(empty),
            },
        }));
        if t.cache_control.is_some() {
            tools.push(ToolEntry::CachePoint(CACHE_POINT));
        }
    }
    let tool_choice = match chat.tool_choice.as_ref().map(|c| c.mode()).transpose()? {
        None | Some(ToolMode::None) => None,
        Some(ToolMode::Auto) => Some(Choice::Auto(Empty {})),
        Some(ToolMode::Required) => Some(Choice::Any(Empty {})),
        Some(ToolMode::Function(name)) => Some(Choice::Tool(Named { name })),
    };
    Ok(ConverseRequest {
        messages: turns,
        system,
        inference_config: InferenceConfig {
            max_tokens: chat.max_output_tokens(),
            temperature: chat.temperature.map(|t| t.min(1.0)),
            top_p: chat.top_p,
            stop_sequences: chat.stop_sequences(),
        },
        tool_config: (!tools.is_empty()).then_some(ToolConfig { tools, tool_choice }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn puts_a_cache_point_after_each_marked_block() {
        let eph = json!({"type": "ephemeral"});
        let body = serde_json::to_vec(&json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "s1", "cache_control": eph},
                                               {"type": "text", "text": "s2"}]},
                {"role": "user", "content": "q", "cache_control": eph},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "r", "cache_control": eph}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": eph},
                      {"type": "function", "function": {"name": "g"}}]
        }))
        .unwrap();
        let chat = ChatRequest::parse(&body).unwrap();
        let out: Value =
            serde_json::from_slice(&serde_json::to_vec(&to_converse(&chat).unwrap()).unwrap())
                .unwrap();
        let point = json!({"cachePoint": {"type": "default"}});
        assert_eq!(
            out["system"],
            json!([{"text": "s1"}, point, {"text": "s2"}])
        );
        assert_eq!(out["messages"][0]["content"], json!([{"text": "q"}, point]));
        assert_eq!(out["messages"][2]["content"][1], point);
        let tools = out["toolConfig"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 3);
        assert_eq!(tools[1], point);
        assert_eq!(tools[2]["toolSpec"]["name"], "g");
    }
}
