//! Anthropic's Messages API (`POST {base}/messages`, base defaulting to
//! `https://api.anthropic.com/v1`), translated to and from OpenAI chat.
//!
//! Requests: `system`/`developer` messages (anywhere) become the `system`
//! blocks; `tool` messages become `tool_result` blocks of a user turn;
//! consecutive turns of one role are merged (Anthropic wants alternation);
//! images go as `base64` or `url` sources; `stop` becomes `stop_sequences`;
//! `max_tokens` defaults to the upstream's `default_max_tokens`;
//! `temperature` is capped at 1 (Anthropic's maximum).
//!
//! Replies: text and `tool_use` blocks become `content` and `tool_calls`;
//! `thinking`/`redacted_thinking` blocks are dropped, whole and streamed
//! alike, since OpenAI chat has no place for them (their tokens still count
//! in `output_tokens`). Usage: `prompt_tokens` = input + cache read + cache
//! creation tokens (OpenAI counts cached input inside the prompt), cached =
//! `cache_read_input_tokens`.

use crate::adapter::{Base, ReplyContext};
use crate::chat::{to_json, ChatRequest, Image, PartRef, Role, ToolMode, EMPTY_SCHEMA};
use crate::chunk::{ChunkWriter, Completion, FinishReason, ToolCallOut};
use crate::sse::{EventTranslator, SseTranslation};
use crate::{Endpoint, ProviderError, UpstreamError, UpstreamErrorKind, Usage};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_config::UpstreamSettings;
use std::borrow::Cow;

/// The `anthropic-version` sent unless configured otherwise.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` sent when neither client nor config gives one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// An Anthropic upstream.
#[derive(Debug, Clone)]
pub struct Anthropic {
    pub(crate) base: Base,
    default_max_tokens: u64,
}

impl Anthropic {
    /// Builds the adapter: `x-api-key` from `api_key`, `anthropic-version`.
    pub fn new(settings: &UpstreamSettings, version: &str, default_max_tokens: u64) -> Self {
        let mut base = Base::new(settings, Some(("x-api-key", "")));
        base.push_static("anthropic-version", version);
        base.push_static("content-type", "application/json");
        Anthropic {
            base,
            default_max_tokens,
        }
    }

    /// The path and body for one request.
    pub(crate) fn request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        stream: bool,
        model: &str,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        if endpoint != Endpoint::ChatCompletions {
            return Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint.label(),
            });
        }
        let chat = ChatRequest::parse(body)?;
        let out = to_messages(&chat, model, stream, self.default_max_tokens)?;
        Ok((
            format!("{}/messages", self.base.path_prefix),
            to_json(&out)?,
        ))
    }
}

// ---- request types (borrowed from the OpenAI request) ----

#[derive(Serialize)]
struct MessagesRequest<'a> {
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
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
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

fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, blocks: Vec<Block<'a>>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

fn content_blocks<'a>(parts: Vec<PartRef<'a>>) -> Result<Vec<Block<'a>>, ProviderError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            PartRef::Text("") => {}
            PartRef::Text(text) => blocks.push(Block::Text { text }),
            PartRef::Image(url) => {
                let source = match Image::parse(url)? {
                    Image::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
                    Image::Url(url) => ImageSource::Url { url },
                };
                blocks.push(Block::Image { source });
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

fn to_messages<'a>(
    chat: &'a ChatRequest<'a>,
    model: &'a str,
    stream: bool,
    default_max_tokens: u64,
) -> Result<MessagesRequest<'a>, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        match m.role {
            Role::System | Role::Developer => {
                for part in m.parts() {
                    match part {
                        PartRef::Text(t) if !t.is_empty() => system.push(TextBlock {
                            kind: "text",
                            text: t,
                        }),
                        PartRef::Text(_) => {}
                        _ => {
                            return Err(ProviderError::Unsupported {
                                detail: "system messages must be text".into(),
                            })
                        }
                    }
                }
            }
            Role::User => push_turn(&mut turns, "user", content_blocks(m.parts())?),
            Role::Assistant => {
                let mut blocks = content_blocks(m.parts())?;
                for call in m.tool_calls() {
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input: call.function.arguments_object()?,
                    });
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .or(m.name.as_deref())
                    .unwrap_or_default();
                let block = Block::ToolResult {
                    tool_use_id: id,
                    content: m.text()?,
                };
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
        temperature: chat.temperature.map(|t| t.min(1.0)),
        top_p: chat.top_p,
        stream,
        tools,
        tool_choice,
        metadata: chat.user.as_deref().map(|user_id| Metadata { user_id }),
    })
}

fn choice<'a>(kind: &'static str, name: Option<&'a str>, d: Option<bool>) -> ToolChoiceOut<'a> {
    ToolChoiceOut {
        kind,
        name,
        disable_parallel_tool_use: d,
    }
}

fn empty_schema() -> Result<&'static RawValue, ProviderError> {
    // A constant that parses; the error arm is unreachable in practice.
    serde_json::from_str(EMPTY_SCHEMA).map_err(|e| ProviderError::Unsupported {
        detail: e.to_string(),
    })
}

// ---- response types ----

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<RespBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// A content block of a reply. A struct, not a tagged enum: serde cannot
/// hand a `RawValue` through an internally tagged enum. Types other than
/// `text` and `tool_use` (`thinking`, `redacted_thinking`, server tools) are dropped.
#[derive(Deserialize)]
struct RespBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Folds this report into `u` (fields absent from it are left alone).
    fn apply(self, u: &mut Usage) {
        if let Some(input) = self.input_tokens {
            let read = self.cache_read_input_tokens.unwrap_or(0);
            u.prompt_tokens = input + read + self.cache_creation_input_tokens.unwrap_or(0);
            u.cached_prompt_tokens = read;
        }
        if let Some(out) = self.output_tokens {
            u.completion_tokens = out;
        }
    }
}

fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A whole 2xx reply, in OpenAI's shape, with its usage.
pub(crate) fn response(
    reply: &ReplyContext,
    body: &[u8],
) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    let r: MessagesResponse = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::new(UpstreamErrorKind::Server, None))?;
    let mut usage = Usage::default();
    if let Some(u) = r.usage {
        u.apply(&mut usage);
    }
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in r.content {
        match block.kind.as_str() {
            "text" => content.push_str(&block.text),
            "tool_use" => tool_calls.push(ToolCallOut {
                id: block.id,
                name: block.name,
                arguments: block
                    .input
                    .map_or_else(|| "{}".to_string(), |i| i.get().to_string()),
            }),
            _ => {}
        }
    }
    let completion = Completion {
        id: r.id,
        model: r.model,
        content,
        tool_calls,
        finish: finish_reason(r.stop_reason.as_deref().unwrap_or("end_turn")),
        usage,
    };
    Ok((
        Bytes::from(completion.to_openai(&reply.model)),
        r.usage.map(|_| usage),
    ))
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorDetail<'a>,
}

#[derive(Deserialize)]
struct ErrorDetail<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

fn error_kind(kind: &str, status: u16) -> UpstreamErrorKind {
    match kind {
        "invalid_request_error" => UpstreamErrorKind::BadRequest,
        "authentication_error" | "permission_error" => UpstreamErrorKind::Auth,
        "not_found_error" => UpstreamErrorKind::NotFound,
        "request_too_large" => UpstreamErrorKind::TooLarge,
        "rate_limit_error" => UpstreamErrorKind::RateLimited,
        "overloaded_error" => UpstreamErrorKind::Overloaded,
        "timeout_error" => UpstreamErrorKind::Timeout,
        "api_error" => UpstreamErrorKind::Server,
        _ => UpstreamErrorKind::from_status(status),
    }
}

/// An error reply (`{"type":"error","error":{"type","message"}}`).
pub(crate) fn error(status: u16, body: &[u8]) -> UpstreamError {
    match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(b) => UpstreamError::new(error_kind(&b.error.kind, status), Some(&b.error.message)),
        Err(_) => UpstreamError::new(UpstreamErrorKind::from_status(status), None),
    }
}

// ---- stream ----

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<StartMessage>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    content_block: Option<StartBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<ErrorDetail<'a>>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartBlock<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    partial_json: Cow<'a, str>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

/// Translation state of one Anthropic stream.
pub(crate) type StreamState = SseTranslation<StreamEvents>;

/// What an Anthropic stream remembers between events.
#[derive(Debug, Default)]
pub(crate) struct StreamEvents {
    /// (content block index, OpenAI tool call index) of each `tool_use` block.
    tools: Vec<(u32, u32)>,
}

impl EventTranslator for StreamEvents {
    fn unreadable() -> UpstreamError {
        UpstreamError::new(UpstreamErrorKind::Server, None)
    }

    fn on_event(
        &mut self,
        data: &[u8],
        w: &mut ChunkWriter,
        out: &mut BytesMut,
    ) -> Result<(), UpstreamError> {
        let Ok(ev) = serde_json::from_slice::<Event<'_>>(data) else {
            return Ok(());
        };
        match ev.kind.as_ref() {
            "message_start" => {
                if let Some(m) = ev.message {
                    if let Some(id) = &m.id {
                        w.set_id(id);
                    }
                    if let Some(model) = &m.model {
                        w.set_model(model);
                    }
                    if let Some(u) = m.usage {
                        u.apply(w.usage_mut());
                    }
                }
                w.start(out);
            }
            "content_block_start" => {
                if let (Some(index), Some(block)) = (ev.index, ev.content_block) {
                    if block.kind == "tool_use" {
                        let tool = self.tools.len() as u32;
                        self.tools.push((index, tool));
                        w.tool_start(tool, &block.id, &block.name, out);
                    }
                }
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else {
                    return Ok(());
                };
                match delta.kind.as_ref() {
                    "text_delta" => w.text(&delta.text, out),
                    "input_json_delta" => {
                        let tool = ev
                            .index
                            .and_then(|i| self.tools.iter().find(|(b, _)| *b == i))
                            .map(|(_, t)| *t);
                        if let Some(tool) = tool {
                            w.tool_args(tool, &delta.partial_json, out);
                        }
                    }
                    // thinking_delta, signature_delta, citations: dropped.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    w.set_finish(finish_reason(&reason));
                }
                if let Some(u) = ev.usage {
                    u.apply(w.usage_mut());
                }
            }
            "message_stop" => {
                if !w.has_finish() {
                    w.set_finish(FinishReason::Stop);
                }
                w.end(out);
            }
            "error" => {
                let e = match ev.error {
                    Some(d) => UpstreamError::new(error_kind(&d.kind, 500), Some(&d.message)),
                    None => UpstreamError::new(UpstreamErrorKind::Server, None),
                };
                return Err(e);
            }
            // ping, content_block_stop, unknown future events.
            _ => {}
        }
        Ok(())
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
    fn maps_errors_by_type() {
        let e = error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status(), 503);
        let e = error(
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!(e.status(), 502);
        assert!(!e.message.contains("x-api-key"));
        assert_eq!(error(500, b"<html>").status(), 502);
    }

    #[test]
    fn stream_drops_thinking_and_maps_tool_indices() {
        let events = [
            r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut s = StreamState::default();
        let mut w = ChunkWriter::new("m", false);
        let mut out = BytesMut::new();
        for e in events {
            s.feed(
                format!("event: x\ndata: {e}\n\n").as_bytes(),
                &mut w,
                &mut out,
            );
        }
        s.finish(&mut w, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("hmm"));
        assert!(text.contains(r#""tool_calls":[{"index":0,"id":"toolu_9""#));
        assert!(text.contains(r#""finish_reason":"tool_calls""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            w.usage(),
            Some(Usage {
                prompt_tokens: 14,
                completion_tokens: 7,
                cached_prompt_tokens: 4
            })
        );
    }
}
