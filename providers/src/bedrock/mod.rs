//! AWS Bedrock's Converse API: `POST {base}/model/{modelId}/converse` and
//! `/converse-stream` (binary event stream, see [`crate::eventstream`]),
//! signed with SigV4 (service `bedrock`), base defaulting to
//! `https://bedrock-runtime.{region}.amazonaws.com`.
//!
//! Requests: system messages become `system` blocks, tool calls `toolUse`,
//! tool results `toolResult` blocks of a user turn (consecutive turns of
//! one role merged), `tools` a `toolConfig` (`tool_choice: none` cannot be
//! expressed and is sent as no choice), images inline `bytes` (Converse
//! takes no image URLs: those are refused with 400).
//!
//! Replies: `reasoningContent` blocks are dropped. Usage: prompt =
//! `inputTokens` + `cacheReadInputTokens` + `cacheWriteInputTokens`, cached =
//! `cacheReadInputTokens`. The stream's usage arrives in its last event
//! (`metadata`), after `messageStop`, so the OpenAI terminal chunks are
//! written then (or when the upstream ends).

use crate::adapter::{encode_segment, Base, ReplyContext};
use crate::chat::{to_json, ChatRequest, Image, PartRef, Role, ToolMode, EMPTY_SCHEMA};
use crate::chunk::{ChunkWriter, Completion, FinishReason, ToolCallOut};
use crate::eventstream::Decoder;
use crate::{Endpoint, ProviderError, UpstreamError, UpstreamErrorKind, Usage};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_config::{Secret, UpstreamSettings};
use std::time::SystemTime;

/// The SigV4 service name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";

/// The regional endpoint, for config to use when no `base_url` is given.
pub fn default_base_url(region: &str) -> String {
    sluice_config::bedrock_base_url(region)
}

/// Static AWS credentials and the region they sign for.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Access key id (not secret, but kept out of logs all the same).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// A Bedrock runtime endpoint.
#[derive(Debug, Clone)]
pub struct Bedrock {
    pub(crate) base: Base,
    credentials: Credentials,
}

impl Bedrock {
    /// Builds the adapter; no key header (requests are signed instead).
    pub fn new(settings: &UpstreamSettings, credentials: Credentials) -> Self {
        Bedrock {
            base: Base::new(settings, None),
            credentials,
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
        let out = to_converse(&chat)?;
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        let path = format!(
            "{}/model/{}/{action}",
            self.base.path_prefix,
            encode_segment(model)
        );
        Ok((path, to_json(&out)?))
    }

    /// The fixed headers plus `content-type` and the SigV4 headers
    /// (`authorization`, `x-amz-date`, `x-amz-security-token`) for `body`
    /// sent to `path` at `now`.
    pub(crate) fn signed_headers(
        &self,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ProviderError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let signing = |e: &dyn std::fmt::Display| ProviderError::Signing {
            detail: e.to_string(),
        };
        let scheme = if self.base.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}{path}", self.base.host_header);
        let content_type = "application/json";
        let c = &self.credentials;
        let identity = aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_string(),
            c.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "sluice-config",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&c.region)
            .name(SIGNING_SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing(&e))?
            .into();
        let request = SignableRequest::new(
            "POST",
            url,
            std::iter::once(("content-type", content_type)),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing(&e))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| signing(&e))?
            .into_parts();
        let mut headers = self.base.headers.clone();
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        ));
        for (name, value) in instructions.headers() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| signing(&e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| signing(&e))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(headers)
    }
}

// ---- request types ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest<'a> {
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

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

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

fn to_converse<'a>(chat: &'a ChatRequest<'a>) -> Result<ConverseRequest<'a>, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        match m.role {
            Role::System | Role::Developer => {
                for part in m.parts() {
                    match part {
                        PartRef::Text(t) if !t.is_empty() => system.push(TextOnly { text: t }),
                        PartRef::Text(_) => {}
                        _ => {
                            return Err(ProviderError::Unsupported {
                                detail: "system messages must be text".into(),
                            })
                        }
                    }
                }
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
                let id = m
                    .tool_call_id
                    .as_deref()
                    .or(m.name.as_deref())
                    .unwrap_or_default();
                let block = Block::ToolResult(ToolResult {
                    tool_use_id: id,
                    content: vec![TextOnlyOwned { text: m.text()? }],
                });
                push_turn(&mut turns, "user", vec![block]);
            }
        }
    }
    let empty: &RawValue =
        serde_json::from_str(EMPTY_SCHEMA).map_err(|e| ProviderError::Unsupported {
            detail: e.to_string(),
        })?;
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

// ---- response types ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<OutToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens,
            completion_tokens: u.output_tokens,
            cached_prompt_tokens: u.cache_read_input_tokens,
        }
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A whole 2xx reply, in OpenAI's shape, with its usage.
pub(crate) fn response(
    reply: &ReplyContext,
    body: &[u8],
) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    let r: ConverseResponse = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::new(UpstreamErrorKind::Server, None))?;
    let usage = r.usage.map(Usage::from);
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let blocks = r
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .unwrap_or_default();
    for block in blocks {
        if let Some(text) = block.text {
            content.push_str(&text);
        }
        if let Some(t) = block.tool_use {
            tool_calls.push(ToolCallOut {
                id: t.tool_use_id,
                name: t.name,
                arguments: t.input.map_or_else(|| "{}".into(), |i| i.get().to_string()),
            });
        }
    }
    let completion = Completion {
        id: None,
        model: None,
        content,
        tool_calls,
        finish: finish_reason(r.stop_reason.as_deref().unwrap_or("end_turn")),
        usage: usage.unwrap_or_default(),
    };
    Ok((Bytes::from(completion.to_openai(&reply.model)), usage))
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, alias = "Message")]
    message: String,
}

fn kind_of_status(status: u16) -> UpstreamErrorKind {
    match status {
        // ModelErrorException: the model failed, not the request.
        424 => UpstreamErrorKind::Server,
        s => UpstreamErrorKind::from_status(s),
    }
}

/// An error reply (`{"message": ...}`, the class in a header sluice does
/// not need: the status says enough).
pub(crate) fn error(status: u16, body: &[u8]) -> UpstreamError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.message);
    UpstreamError::new(kind_of_status(status), message.as_deref())
}

fn exception_kind(name: &str) -> UpstreamErrorKind {
    match name {
        "throttlingException" => UpstreamErrorKind::RateLimited,
        "validationException" => UpstreamErrorKind::BadRequest,
        "serviceUnavailableException" => UpstreamErrorKind::Overloaded,
        "modelTimeoutException" => UpstreamErrorKind::Timeout,
        "accessDeniedException" => UpstreamErrorKind::Auth,
        _ => UpstreamErrorKind::Server,
    }
}

mod stream;
pub(crate) use stream::StreamState;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::encode_message;
    use serde_json::{json, Value};
    use sluice_config::load_str;

    fn bedrock() -> Bedrock {
        let config = load_str(
            "upstreams:\n  b: {base_url: 'https://bedrock-runtime.us-east-1.amazonaws.com'}\n",
            &|_| None,
        )
        .unwrap();
        Bedrock::new(
            &config.upstreams[0],
            Credentials {
                region: "us-east-1".into(),
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: None,
            },
        )
    }

    #[test]
    fn builds_and_signs_a_converse_request() {
        let b = bedrock();
        let body = br#"{"model":"x","max_tokens":20,"stop":["END"],"messages":[
            {"role":"system","content":"sys"},{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}"#;
        let (path, out) = b
            .request(
                Endpoint::ChatCompletions,
                body,
                true,
                "anthropic.claude-3-haiku-20240307-v1:0",
            )
            .unwrap();
        assert_eq!(
            path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["system"], json!([{"text": "sys"}]));
        assert_eq!(
            v["messages"][0],
            json!({"role": "user", "content": [{"text": "hi"}]})
        );
        assert_eq!(
            v["inferenceConfig"],
            json!({"maxTokens": 20, "stopSequences": ["END"]})
        );
        assert_eq!(v["toolConfig"]["toolChoice"], json!({"auto": {}}));
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
            "object"
        );
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let headers = b.signed_headers(&path, &out, t).unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-amz-date").as_deref(), Some("20150830T123600Z"));
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request"
        ));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date"));
        assert!(!auth.contains("wJalr"));
        // Same input, same signature; another body, another one.
        assert_eq!(b.signed_headers(&path, &out, t).unwrap(), headers);
        assert_ne!(b.signed_headers(&path, b"{}", t).unwrap(), headers);
    }

    #[test]
    fn refuses_image_urls_and_other_endpoints() {
        let b = bedrock();
        let body = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        assert!(matches!(
            b.request(Endpoint::ChatCompletions, body, false, "m"),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(matches!(
            b.request(Endpoint::Embeddings, b"{}", false, "m"),
            Err(ProviderError::UnsupportedEndpoint { .. })
        ));
    }

    #[test]
    fn stream_translates_events_and_exceptions() {
        let ev = |kind: &str, payload: Value| {
            encode_message(
                &[
                    (":message-type", "event"),
                    (":event-type", kind),
                    (":content-type", "application/json"),
                ],
                payload.to_string().as_bytes(),
            )
        };
        let mut bytes = Vec::new();
        bytes.extend(ev("messageStart", json!({"role": "assistant"})));
        bytes.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ));
        bytes.extend(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        ));
        bytes.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":1}"}}}),
        ));
        bytes.extend(ev("messageStop", json!({"stopReason": "tool_use"})));
        bytes.extend(ev(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
        ));
        // Byte by byte: framing must survive any split.
        let mut s = StreamState::default();
        let mut w = ChunkWriter::new("m", true);
        let mut out = BytesMut::new();
        for b in &bytes {
            s.feed(std::slice::from_ref(b), &mut w, &mut out);
        }
        s.finish(&mut w, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains(r#""content":"Hi""#));
        assert!(text.contains(r#""id":"t1""#));
        assert!(text.contains(r#""finish_reason":"tool_calls""#));
        assert!(text.contains(r#""total_tokens":7"#));
        assert!(text.ends_with("data: [DONE]\n\n"));

        let mut s = StreamState::default();
        let mut w = ChunkWriter::new("m", false);
        let mut out = BytesMut::new();
        let exc = encode_message(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"slow down"}"#,
        );
        s.feed(&exc, &mut w, &mut out);
        assert_eq!(s.error().unwrap().status(), 429);
        assert!(String::from_utf8_lossy(&out).contains("slow down"));
    }
}
