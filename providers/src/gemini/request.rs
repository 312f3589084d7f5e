//! The request: an OpenAI chat request rebuilt as a `generateContent`
//! request, and an embeddings request as `batchEmbedContents`, borrowing
//! from the client's body.
//!
//! Prompt-cache markers (`cache_control`) are dropped: Gemini caches by
//! implicit prefix matching or through a separate `cachedContents`
//! resource created ahead of time, and has no per-block marker to carry
//! them to.

use crate::chat::{ChatRequest, EmbeddingsRequest, Image, PartRef, Role, ToolMode, EMPTY_SCHEMA};
use crate::wire::{push_turn, Turn};
use crate::ProviderError;
use serde::Serialize;
use serde_json::value::RawValue;

/// A `generateContent` request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolGroup<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Part<'a> {
    Text(&'a str),
    InlineData(Blob<'a>),
    FileData(FileRef<'a>),
    FunctionCall(Call<'a>),
    FunctionResponse(CallResult<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileRef<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct Call<'a> {
    name: &'a str,
    args: Box<RawValue>,
}

#[derive(Serialize)]
struct CallResult<'a> {
    name: &'a str,
    response: Box<RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolGroup<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: CallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
}

/// A `batchEmbedContents` request body.
#[derive(Serialize)]
pub(super) struct BatchEmbed<'a> {
    requests: Vec<EmbedRequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest<'a> {
    model: &'a str,
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u64>,
}

impl<'a> Turn for Content<'a> {
    type Piece = Part<'a>;

    fn new(role: &'static str, parts: Vec<Part<'a>>) -> Self {
        Content {
            role: Some(role),
            parts,
        }
    }

    fn role(&self) -> Option<&'static str> {
        self.role
    }

    fn pieces_mut(&mut self) -> &mut Vec<Part<'a>> {
        &mut self.parts
    }
}

/// The image type a URL's extension names (JPEG when it names none).
fn mime_of_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    }
}

/// The parts of a message's content.
fn parts_of<'a>(parts: Vec<PartRef<'a>>) -> Result<Vec<Part<'a>>, ProviderError> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            PartRef::Text("") => {}
            PartRef::Text(t) => out.push(Part::Text(t)),
            PartRef::Image(url) => out.push(match Image::parse(url)? {
                Image::Base64 { media_type, data } => Part::InlineData(Blob {
                    mime_type: media_type,
                    data,
                }),
                Image::Url(url) => Part::FileData(FileRef {
                    mime_type: mime_of_url(url),
                    file_uri: url,
                }),
            }),
            PartRef::Unsupported => {
                return Err(ProviderError::Unsupported {
                    detail: "Gemini accepts text and image content parts only here".into(),
                })
            }
        }
    }
    Ok(out)
}

/// A tool result as the object Gemini wants.
fn result_object(text: &str) -> Result<Box<RawValue>, ProviderError> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        if let Ok(raw) = RawValue::from_string(trimmed.to_string()) {
            return Ok(raw);
        }
    }
    let wrapped = serde_json::to_string(&serde_json::json!({ "content": text })).map_err(|e| {
        ProviderError::Unsupported {
            detail: e.to_string(),
        }
    })?;
    RawValue::from_string(wrapped).map_err(|e| ProviderError::Unsupported {
        detail: e.to_string(),
    })
}

/// The `generateContent` request for `chat`.
pub(super) fn to_generate<'a>(
    chat: &'a ChatRequest<'a>,
) -> Result<GenerateRequest<'a>, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Content<'a>> = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        match m.role {
            Role::System | Role::Developer => system.extend(parts_of(m.parts())?),
            Role::User => push_turn(&mut turns, "user", parts_of(m.parts())?),
            Role::Assistant => {
                let mut parts = parts_of(m.parts())?;
                for call in m.tool_calls() {
                    parts.push(Part::FunctionCall(Call {
                        name: &call.function.name,
                        args: call.function.arguments_object()?,
                    }));
                }
                push_turn(&mut turns, "model", parts);
            }
            Role::Tool | Role::Function => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| chat.tool_name_for(id))
                    .or(m.name.as_deref())
                    .ok_or_else(|| ProviderError::Unsupported {
                        detail: "a tool message's tool_call_id matches no earlier tool call".into(),
                    })?;
                let part = Part::FunctionResponse(CallResult {
                    name,
                    response: result_object(&m.text()?)?,
                });
                push_turn(&mut turns, "user", vec![part]);
            }
        }
    }
    let declarations: Vec<FunctionDeclaration<'a>> = chat
        .tools()
        .iter()
        .map(|t| FunctionDeclaration {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            parameters: t.function.parameters.filter(|p| p.get() != EMPTY_SCHEMA),
        })
        .collect();
    let tool_config = match chat.tool_choice.as_ref().map(|c| c.mode()).transpose()? {
        None => None,
        Some(mode) => {
            let (mode, allowed) = match mode {
                ToolMode::Auto => ("AUTO", Vec::new()),
                ToolMode::None => ("NONE", Vec::new()),
                ToolMode::Required => ("ANY", Vec::new()),
                ToolMode::Function(name) => ("ANY", vec![name]),
            };
            Some(ToolConfig {
                function_calling_config: CallingConfig {
                    mode,
                    allowed_function_names: allowed,
                },
            })
        }
    };
    Ok(GenerateRequest {
        contents: turns,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools: if declarations.is_empty() {
            Vec::new()
        } else {
            vec![ToolGroup {
                function_declarations: declarations,
            }]
        },
        tool_config,
        generation_config: GenerationConfig {
            max_output_tokens: chat.max_output_tokens(),
            temperature: chat.temperature,
            top_p: chat.top_p,
            stop_sequences: chat.stop_sequences(),
        },
    })
}

/// The `batchEmbedContents` request for `e`: one request per input, each
/// naming `model` (`models/...`).
pub(super) fn to_batch_embed<'a>(e: &'a EmbeddingsRequest<'a>, model: &'a str) -> BatchEmbed<'a> {
    let requests = e
        .inputs()
        .into_iter()
        .map(|text| EmbedRequest {
            model,
            content: Content {
                role: None,
                parts: vec![Part::Text(text)],
            },
            output_dimensionality: e.dimensions,
        })
        .collect();
    BatchEmbed { requests }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn translate(body: Value) -> Value {
        let bytes = serde_json::to_vec(&body).unwrap();
        let chat = ChatRequest::parse(&bytes).unwrap();
        let req = to_generate(&chat).unwrap();
        serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap()
    }

    #[test]

    fn builds_a_generate_request() {
        let out = translate(json!({
            "model": "m", "max_tokens": 50, "stop": "END",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
                {"role": "assistant", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get"}}
        }));
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        assert_eq!(out["contents"][0]["role"], "user");
        assert_eq!(
            out["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}})
        );
        assert_eq!(out["contents"][1]["role"], "model");
        assert_eq!(
            out["contents"][1]["parts"][0],
            json!({"functionCall": {"name": "get", "args": {"q": 1}}})
        );
        assert_eq!(
            out["contents"][2]["parts"][0],
            json!({"functionResponse": {"name": "get", "response": {"content": "sunny"}}})
        );
        assert_eq!(
            out["tools"][0]["functionDeclarations"][0],
            json!({"name": "get", "parameters": {"type": "object"}})
        );
        assert_eq!(
            out["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["get"]})
        );
        assert_eq!(
            out["generationConfig"],
            json!({"maxOutputTokens": 50, "stopSequences": ["END"]})
        );
    }
}
