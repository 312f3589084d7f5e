//! Google Gemini (Generative Language API): `POST {base}/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` and `:batchEmbedContents`, base defaulting
//! to `https://generativelanguage.googleapis.com/v1beta`; key in `x-goog-api-key`.
//!
//! Requests: `assistant` turns become `model` turns, `system`/`developer`
//! messages the `systemInstruction`, tools `functionDeclarations` (their
//! `parameters` passed as given: Gemini accepts an OpenAPI subset of JSON
//! Schema), tool results `functionResponse` parts named after the call they
//! answer (looked up by `tool_call_id` in the request's assistant turns; a
//! result that is not a JSON object is wrapped as `{"content": text}`).
//! Image URLs go as `fileData` (Gemini fetches only URLs it supports), data
//! URLs as `inlineData`.
//!
//! Replies: Gemini gives calls no ids, so sluice makes them (`call_...`).
//! `thought` parts are dropped. A `STOP` with function calls is
//! `tool_calls`; safety-like finish reasons and a blocked prompt are
//! `content_filter`. Usage: prompt = `promptTokenCount` (cached included),
//! completion = `candidatesTokenCount` + `thoughtsTokenCount` (OpenAI counts
//! reasoning as completion), cached = `cachedContentTokenCount`.

use crate::adapter::{encode_segment, Base, ReplyContext};
use crate::chat::{
    to_json, ChatRequest, EmbeddingsRequest, Image, PartRef, Role, ToolMode, EMPTY_SCHEMA,
};
use crate::chunk::{now_s, ChunkWriter, Completion, FinishReason, ToolCallOut};
use crate::sse::{EventTranslator, SseTranslation};
use crate::{Endpoint, ProviderError, UpstreamError, UpstreamErrorKind, Usage};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_config::UpstreamSettings;
use std::sync::atomic::{AtomicU64, Ordering};

/// A Gemini upstream.
#[derive(Debug, Clone)]
pub struct Gemini {
    pub(crate) base: Base,
}

impl Gemini {
    /// Builds the adapter: `x-goog-api-key` from `api_key`.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut base = Base::new(settings, Some(("x-goog-api-key", "")));
        base.push_static("content-type", "application/json");
        Gemini { base }
    }

    /// The path (with query) and body for one request.
    pub(crate) fn request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        stream: bool,
        model: &str,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let at = format!("{}/models/{}", self.base.path_prefix, encode_segment(model));
        match endpoint {
            Endpoint::ChatCompletions => {
                let chat = ChatRequest::parse(body)?;
                let req = to_generate(&chat)?;
                let path = if stream {
                    format!("{at}:streamGenerateContent?alt=sse")
                } else {
                    format!("{at}:generateContent")
                };
                Ok((path, to_json(&req)?))
            }
            Endpoint::Embeddings => {
                let e = EmbeddingsRequest::parse(body)?;
                let name = format!("models/{model}");
                let requests: Vec<EmbedRequest<'_>> = e
                    .inputs()
                    .into_iter()
                    .map(|text| EmbedRequest {
                        model: &name,
                        content: Content {
                            role: None,
                            parts: vec![Part::Text(text)],
                        },
                        output_dimensionality: e.dimensions,
                    })
                    .collect();
                let req = BatchEmbed { requests };
                Ok((format!("{at}:batchEmbedContents"), to_json(&req)?))
            }
            Endpoint::Completions => Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint.label(),
            }),
        }
    }
}

// ---- request types ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest<'a> {
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

#[derive(Serialize)]
struct BatchEmbed<'a> {
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

fn push_turn<'a>(turns: &mut Vec<Content<'a>>, role: &'static str, parts: Vec<Part<'a>>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == Some(role) => last.parts.extend(parts),
        _ => turns.push(Content {
            role: Some(role),
            parts,
        }),
    }
}

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

fn to_generate<'a>(chat: &'a ChatRequest<'a>) -> Result<GenerateRequest<'a>, ProviderError> {
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

// ---- response types ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    /// An error sent as a stream event.
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<RespPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RespPart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<RespCall>,
}

#[derive(Deserialize)]
struct RespCall {
    name: String,
    #[serde(default)]
    args: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl From<UsageMetadata> for Usage {
    fn from(u: UsageMetadata) -> Self {
        Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: u.candidates_token_count + u.thoughts_token_count,
            cached_prompt_tokens: u.cached_content_token_count,
        }
    }
}

static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// An id for a call Gemini did not name.
fn call_id(given: Option<String>) -> String {
    given.filter(|id| !id.is_empty()).unwrap_or_else(|| {
        format!(
            "call_{:x}{:04x}",
            now_s(),
            NEXT_CALL.fetch_add(1, Ordering::Relaxed)
        )
    })
}

fn finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn unreadable() -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Server, None)
}

/// A whole 2xx reply (chat or embeddings), in OpenAI's shape, with its usage.
pub(crate) fn response(
    reply: &ReplyContext,
    body: &[u8],
) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    if reply.endpoint == Endpoint::Embeddings {
        return embeddings(reply, body);
    }
    let r: GenerateResponse = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let usage = r.usage_metadata.map(Usage::from);
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let mut finish = None;
    if let Some(c) = r.candidates.into_iter().next() {
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(text) = part.text {
                content.push_str(&text);
            }
            if let Some(call) = part.function_call {
                tool_calls.push(ToolCallOut {
                    id: call_id(call.id),
                    name: call.name,
                    arguments: call
                        .args
                        .map_or_else(|| "{}".into(), |a| a.get().to_string()),
                });
            }
        }
        finish = c.finish_reason;
    }
    let blocked = r.prompt_feedback.and_then(|f| f.block_reason).is_some();
    let finish = match finish {
        _ if blocked => FinishReason::ContentFilter,
        Some(f) => finish_reason(&f, !tool_calls.is_empty()),
        None => finish_reason("STOP", !tool_calls.is_empty()),
    };
    let completion = Completion {
        id: r.response_id,
        model: r.model_version,
        content,
        tool_calls,
        finish,
        usage: usage.unwrap_or_default(),
    };
    Ok((Bytes::from(completion.to_openai(&reply.model)), usage))
}

fn embeddings(reply: &ReplyContext, body: &[u8]) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    #[derive(Deserialize)]
    struct Batch {
        #[serde(default)]
        embeddings: Vec<Values>,
    }
    #[derive(Deserialize)]
    struct Values {
        values: Box<RawValue>,
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, e) in batch.embeddings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"object\":\"embedding\",\"index\":");
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(b",\"embedding\":");
        out.extend_from_slice(e.values.get().as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    serde_json::to_writer(&mut out, &reply.model).map_err(|_| unreadable())?;
    // Gemini reports no usage for embeddings: the gateway counts them.
    out.extend_from_slice(b",\"usage\":{\"prompt_tokens\":0,\"total_tokens\":0}}");
    Ok((Bytes::from(out), None))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl ErrorDetail {
    fn into_error(self, http_status: u16) -> UpstreamError {
        let key_invalid = self
            .details
            .iter()
            .any(|d| d.get("reason").and_then(|r| r.as_str()) == Some("API_KEY_INVALID"));
        let kind = match self.status.as_str() {
            _ if key_invalid => UpstreamErrorKind::Auth,
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
                UpstreamErrorKind::BadRequest
            }
            "UNAUTHENTICATED" | "PERMISSION_DENIED" => UpstreamErrorKind::Auth,
            "NOT_FOUND" => UpstreamErrorKind::NotFound,
            "RESOURCE_EXHAUSTED" => UpstreamErrorKind::RateLimited,
            "UNAVAILABLE" => UpstreamErrorKind::Overloaded,
            "DEADLINE_EXCEEDED" => UpstreamErrorKind::Timeout,
            "INTERNAL" => UpstreamErrorKind::Server,
            _ => UpstreamErrorKind::from_status(self.code.unwrap_or(http_status)),
        };
        UpstreamError::new(kind, Some(&self.message))
    }
}

/// An error reply (`{"error":{"code","message","status"}}`).
pub(crate) fn error(status: u16, body: &[u8]) -> UpstreamError {
    // Gemini sometimes wraps the error in a one-element array.
    // (Checked first: serde would read an array as a struct's fields.)
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let parsed = if is_array {
        serde_json::from_slice::<Vec<ErrorBody>>(body)
            .map_err(|_| ())
            .and_then(|v| v.into_iter().next().ok_or(()))
    } else {
        serde_json::from_slice::<ErrorBody>(body).map_err(|_| ())
    };
    match parsed {
        Ok(b) => b.error.into_error(status),
        Err(_) => UpstreamError::new(UpstreamErrorKind::from_status(status), None),
    }
}

mod stream;
pub(crate) use stream::StreamState;

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

    #[test]
    fn safety_blocks_are_content_filter_and_usage_is_read() {
        let reply = ReplyContext {
            endpoint: Endpoint::ChatCompletions,
            stream: false,
            include_usage: false,
            strip_usage_chunk: false,
            model: "gemini".into(),
        };
        let body = br#"{"candidates":[{"finishReason":"SAFETY","index":0}],
            "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":0,"cachedContentTokenCount":3,"thoughtsTokenCount":2}}"#;
        let (out, usage) = response(&reply, body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                cached_prompt_tokens: 3
            })
        );
    }

    #[test]
    fn embeddings_go_as_batch_embed_contents() {
        let config = sluice_config::load_str(
            "upstreams:\n  g: {base_url: 'https://generativelanguage.googleapis.com/v1beta', api_key: k}\n",
            &|_| None,
        )
        .unwrap();
        let g = Gemini::new(&config.upstreams[0]);
        let (path, body) = g
            .request(
                Endpoint::Embeddings,
                br#"{"model":"e","input":["a","b"],"dimensions":8}"#,
                false,
                "models/text-embedding-004",
            )
            .unwrap();
        assert_eq!(path, "/v1beta/models/text-embedding-004:batchEmbedContents");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["requests"][1],
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8})
        );
        let reply = ReplyContext {
            endpoint: Endpoint::Embeddings,
            stream: false,
            include_usage: false,
            strip_usage_chunk: false,
            model: "text-embedding-004".into(),
        };
        let (out, usage) = response(
            &reply,
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3]}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(
            v["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.3]})
        );
        assert_eq!(usage, None);
    }

    #[test]
    fn invalid_keys_are_auth_failures() {
        let body = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let e = error(400, body);
        assert_eq!(e.kind, UpstreamErrorKind::Auth);
        let e = error(
            429,
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(e.status(), 429);
        assert_eq!(e.message, "Quota exceeded");
    }
}
