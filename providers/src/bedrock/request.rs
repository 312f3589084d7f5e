//! The request: an OpenAI chat request rebuilt as a Converse request,
//! borrowing from the client's body.

use crate::chat::{empty_schema, ChatRequest, Image, PartRef, Role, ToolMode};
use crate::wire::{push_turn, ContentTurn};
use crate::ProviderError;
use serde::Serialize;
use serde_json::value::RawValue;

/// A Converse request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseRequest<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextOnly<'a>>,
    inference_config: InferenceConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
}

#[derive(Serialize)]
struct TextOnly<'a> {
    text: &'a str,
}

/// A user or assistant turn.
type Turn<'a> = ContentTurn<Block<'a>>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(&'a str),
    Image(ImageBlock<'a>),
    ToolUse(ToolUse<'a>),
    ToolResult(ToolResult<'a>),
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
struct ToolEntry<'a> {
    tool_spec: ToolSpec<'a>,
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
fn blocks_of<'a>(parts: Vec<PartRef<'a>>) -> Result<Vec<Block<'a>>, ProviderError> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
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
    }
    Ok(out)
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
                system.extend(m.system_texts()?.into_iter().map(|text| TextOnly { text }))
            }
            Role::User => push_turn(&mut turns, "user", blocks_of(m.parts())?),
            Role::Assistant => {
                let mut blocks = blocks_of(m.parts())?;
                for call in m.tool_calls() {
                    blocks.push(Block::ToolUse(ToolUse {
                        tool_use_id: &call.id,
                        name: &call.function.name,
                        input: call.function.arguments_object()?,
                    }));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let block = Block::ToolResult(ToolResult {
                    tool_use_id: m.answered_call_id(),
                    content: vec![TextOnlyOwned { text: m.text()? }],
                });
                push_turn(&mut turns, "user", vec![block]);
            }
        }
    }
    let empty = empty_schema()?;
    let tools: Vec<ToolEntry<'a>> = chat
        .tools()
        .iter()
        .map(|t| ToolEntry {
            tool_spec: ToolSpec {
                name: &t.function.name,
                description: t.function.description.as_deref(),
                input_schema: Schema {
                    json: t.function.parameters.unwrap_or(empty),
                },
            },
        })
        .collect();
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
