//! The mock's other wire formats: Anthropic Messages, Gemini, Azure OpenAI
//! deployments and Bedrock Converse (with its binary event stream), each
//! with the same deterministic content as the OpenAI mock (`tok0 tok1 ...`)
//! and the same `x-mock-*` faults. `x-mock-tool-call: NAME` makes any chat
//! route (OpenAI's too) answer with one call to tool `NAME` whose arguments,
//! `{"input":"tok0 tok1 ..."}`, stream in `x-mock-chunks` pieces.

use crate::mock_body::{self, content_piece, Reply, SseStream, StreamPlan};
use crate::MockStats;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Frame;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type MockBody = UnsyncBoxBody<Bytes, std::io::Error>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A route served here rather than by the OpenAI mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProviderRoute {
    /// `POST /v1/messages`
    Anthropic,
    /// `POST /v1/messages/count_tokens`
    AnthropicCountTokens,
    /// `POST /v1beta/models/{model}:generateContent` or `:streamGenerateContent`
    Gemini { model: String, stream: bool },
    /// `POST /v1beta/models/{model}:batchEmbedContents`
    GeminiEmbed,
    /// `POST /openai/deployments/{deployment}/{endpoint}?api-version=...`
    Azure { endpoint: String, versioned: bool },
    /// `POST /model/{id}/converse` or `/converse-stream`
    Bedrock { stream: bool },
    /// `POST /v1/chat/completions` with `x-mock-tool-call`
    OpenAiTool,
}

/// What the request's headers say beyond the `x-mock-*` numbers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hints {
    /// `x-mock-tool-call`: answer with a call to this tool.
    pub tool_call: Option<String>,
    /// Whether an `authorization` header carries a SigV4 signature.
    pub sigv4: bool,
}

/// The marker in request text that asks for a status: `mock-status:429`.
const STATUS_MARKER: &[u8] = b"mock-status:";
/// The marker that asks for a tool call: `mock-tool-call:NAME`.
const TOOL_MARKER: &[u8] = b"mock-tool-call:";

/// The word after `marker` in `body`: letters, digits, `_` and `-`.
fn marker_value<'a>(body: &'a [u8], marker: &[u8]) -> Option<&'a str> {
    let at = body.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let rest = &body[at..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end])
        .ok()
        .filter(|v| !v.is_empty())
}

/// Prompt-cache counts asked for in the request text (`mock-cache-read:N`,
/// `mock-cache-write:N`), reported only when the request carries the
/// format's cache marker (`marker`: `"cache_control"`, `"cachePoint"`), as a
/// real provider caches only what was marked.
fn cache_usage(body: &[u8], marker: &[u8]) -> (u64, u64) {
    if !body.windows(marker.len()).any(|w| w == marker) {
        return (0, 0);
    }
    let count = |m: &[u8]| {
        marker_value(body, m)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (count(b"mock-cache-read:"), count(b"mock-cache-write:"))
}

/// A `mock-status:NNN` marker in the request text, if any.
pub(crate) fn marker_status(body: &[u8]) -> Option<u64> {
    marker_value(body, STATUS_MARKER).and_then(|v| v.parse().ok())
}

impl Hints {
    /// Adds hints written in the request text (`mock-tool-call:NAME`): the
    /// way to reach the mock through translated providers, which do not
    /// forward client headers.
    pub fn read_body_markers(&mut self, body: &[u8]) {
        if self.tool_call.is_none() {
            self.tool_call = marker_value(body, TOOL_MARKER).map(str::to_string);
        }
    }

    /// Reads the hints from request headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        Hints {
            tool_call: get("x-mock-tool-call").map(str::to_string),
            sigv4: get("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")),
        }
    }
}

impl ProviderRoute {
    /// Recognises a provider route from method, path and query.
    pub fn parse(method: &str, path: &str, query: Option<&str>, hints: &Hints) -> Option<Self> {
        if method != "POST" {
            return None;
        }
        if path == "/v1/messages" {
            return Some(ProviderRoute::Anthropic);
        }
        if path == "/v1/messages/count_tokens" {
            return Some(ProviderRoute::AnthropicCountTokens);
        }
        if path == "/v1/chat/completions" && hints.tool_call.is_some() {
            return Some(ProviderRoute::OpenAiTool);
        }
        if let Some(rest) = path.strip_prefix("/v1beta/models/") {
            let (model, action) = rest.rsplit_once(':')?;
            return match action {
                "generateContent" => Some(ProviderRoute::Gemini {
                    model: model.to_string(),
                    stream: false,
                }),
                "streamGenerateContent" => Some(ProviderRoute::Gemini {
                    model: model.to_string(),
                    stream: query.is_some_and(|q| q.split('&').any(|p| p == "alt=sse")),
                }),
                "batchEmbedContents" => Some(ProviderRoute::GeminiEmbed),
                _ => None,
            };
        }
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            let (_, endpoint) = rest.split_once('/')?;
            return Some(ProviderRoute::Azure {
                endpoint: endpoint.to_string(),
                versioned: query
                    .is_some_and(|q| q.split('&').any(|p| p.starts_with("api-version="))),
            });
        }
        if let Some(rest) = path.strip_prefix("/model/") {
            let (_, action) = rest.rsplit_once('/')?;
            return match action {
                "converse" => Some(ProviderRoute::Bedrock { stream: false }),
                "converse-stream" => Some(ProviderRoute::Bedrock { stream: true }),
                _ => None,
            };
        }
        None
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<MockBody> {
    let mut r = Response::new(full(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn stream_response(content_type: &'static str, stream: SseStream) -> Response<MockBody> {
    let mut r = Response::new(BodyExt::boxed_unsync(http_body_util::StreamBody::new(
        stream,
    )));
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(content_type));
    r
}

fn full(body: Bytes) -> MockBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The provider's error body for an injected `x-mock-status`.
pub(crate) fn error(route: &ProviderRoute, status: StatusCode) -> Response<MockBody> {
    let message = format!("mock upstream returned {status}");
    let s = status.as_u16();
    let body = match route {
        ProviderRoute::Anthropic | ProviderRoute::AnthropicCountTokens => {
            let kind = match s {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 | 503 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        ProviderRoute::Gemini { .. } | ProviderRoute::GeminiEmbed => {
            let kind = match s {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                _ => "INTERNAL",
            };
            json!({"error": {"code": s, "message": message, "status": kind}})
        }
        ProviderRoute::Bedrock { .. } => json!({"message": message}),
        ProviderRoute::Azure { .. } | ProviderRoute::OpenAiTool => {
            serde_json::from_slice(&mock_body::error_body(status)).unwrap_or_default()
        }
    };
    json_response(status, body)
}

fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64).div_ceil(4)
}

fn content(n: usize) -> String {
    (0..n).map(content_piece).collect()
}

/// The tool call's arguments, whole and cut into `n` pieces (at least one).
fn tool_arguments(n: usize) -> (String, Vec<String>) {
    let whole = json!({"input": content(n)}).to_string();
    let n = n.max(1);
    let chars: Vec<char> = whole.chars().collect();
    let size = chars.len().div_ceil(n);
    let pieces = chars.chunks(size).map(|c| c.iter().collect()).collect();
    (whole, pieces)
}

/// Answers a provider route.
pub(crate) fn reply(
    route: ProviderRoute,
    body: &[u8],
    plan: StreamPlan,
    hints: &Hints,
    stats: Arc<MockStats>,
) -> Response<MockBody> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "mock: body is not JSON"}}),
        );
    };
    let tool = hints.tool_call.as_deref();
    let prompt = prompt_tokens(body);
    match route {
        ProviderRoute::Anthropic => {
            let cache = cache_usage(body, b"\"cache_control\"");
            anthropic(&req, prompt, cache, plan, tool, stats)
        }
        // Anthropic's count: the same count the mock bills a prompt at.
        ProviderRoute::AnthropicCountTokens => {
            json_response(StatusCode::OK, json!({"input_tokens": prompt}))
        }
        ProviderRoute::Gemini { model, stream } => {
            gemini(&model, stream, prompt, plan, tool, stats)
        }
        ProviderRoute::GeminiEmbed => gemini_embed(&req),
        ProviderRoute::Bedrock { stream } => {
            if !hints.sigv4 {
                return json_response(
                    StatusCode::FORBIDDEN,
                    json!({"message": "Missing Authentication Token"}),
                );
            }
            let cache = cache_usage(body, b"\"cachePoint\"");
            bedrock(stream, prompt, cache, plan, tool, stats)
        }
        ProviderRoute::Azure {
            endpoint,
            versioned,
        } => {
            if !versioned {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": {"code": "404", "message": "Resource not found"}}),
                );
            }
            let reply = match (endpoint.as_str(), tool) {
                ("chat/completions", Some(name)) => {
                    return openai_tool(&req, prompt, plan, name, stats)
                }
                ("chat/completions", None) => mock_body::chat(body, plan, stats),
                ("completions", _) => mock_body::completion(body, plan, stats),
                ("embeddings", _) => mock_body::embeddings(body),
                _ => {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        json!({"error": {"message": "no such operation"}}),
                    )
                }
            };
            match reply {
                Reply::Json(b) => json_response(
                    StatusCode::OK,
                    serde_json::from_slice(&b).unwrap_or_default(),
                ),
                Reply::BadRequest(b) => json_response(
                    StatusCode::BAD_REQUEST,
                    serde_json::from_slice(&b).unwrap_or_default(),
                ),
                Reply::Sse(s) => stream_response("text/event-stream", s),
            }
        }
        ProviderRoute::OpenAiTool => {
            let name = tool.unwrap_or("tool");
            openai_tool(&req, prompt, plan, name, stats)
        }
    }
}

/// OpenAI chat (and Azure) answering with a tool call.
fn openai_tool(
    req: &Value,
    prompt: u64,
    plan: StreamPlan,
    name: &str,
    stats: Arc<MockStats>,
) -> Response<MockBody> {
    let id = format!("chatcmpl-mock-t{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let model = req["model"].as_str().unwrap_or("mock-model").to_string();
    let call_id = format!("call_mock_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let (whole, pieces) = tool_arguments(plan.chunks);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": plan.chunks,
                       "total_tokens": prompt + plan.chunks as u64});
    if !req["stream"].as_bool().unwrap_or(false) {
        return json_response(
            StatusCode::OK,
            json!({
                "id": id, "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": whole}}]},
                    "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": usage
            }),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": call_id, "type": "function",
               "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    )];
    frames.extend(pieces.iter().map(|p| {
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
            Value::Null,
        )
    }));
    frames.push(chunk(json!({}), json!("tool_calls")));
    if req["stream_options"]["include_usage"].as_bool() == Some(true) {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage;
        frames.push(last);
    }
    let mut frames: Vec<Bytes> = frames
        .iter()
        .map(|f| Bytes::from(format!("data: {f}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream_response(
        "text/event-stream",
        frames_stream(frames, plan.abort_after.map(|k| k + 1), plan, stats),
    )
}

fn anthropic(
    req: &Value,
    prompt: u64,
    (read, write): (u64, u64),
    plan: StreamPlan,
    tool: Option<&str>,
    stats: Arc<MockStats>,
) -> Response<MockBody> {
    let Some(model) = req["model"].as_str() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {
            "type": "invalid_request_error", "message": "model: Field required"}}),
        );
    };
    if req["max_tokens"].as_u64().is_none() {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {
            "type": "invalid_request_error", "message": "max_tokens: Field required"}}),
        );
    }
    let id = format!("msg_mock_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let tool_id = format!("toolu_mock_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let n = plan.chunks;
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if !req["stream"].as_bool().unwrap_or(false) {
        let block = match tool {
            Some(name) => {
                json!({"type": "tool_use", "id": tool_id, "name": name, "input": {"input": content(n)}})
            }
            None => json!({"type": "text", "text": content(n)}),
        };
        return json_response(
            StatusCode::OK,
            json!({
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [block],
                "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": prompt.saturating_sub(read + write), "output_tokens": n,
                          "cache_read_input_tokens": read, "cache_creation_input_tokens": write}
            }),
        );
    }
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": prompt.saturating_sub(read + write), "output_tokens": 1,
               "cache_read_input_tokens": read, "cache_creation_input_tokens": write}}}),
        match tool {
            Some(name) => {
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}})
            }
            None => {
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            }
        },
        json!({"type": "ping"}),
    ];
    let first_content = events.len();
    match tool {
        Some(_) => events.extend(tool_arguments(n).1.into_iter().map(|p| {
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}})
        })),
        None => events.extend((0..n).map(|i| {
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": content_piece(i)}})
        })),
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": n}}));
    events.push(json!({"type": "message_stop"}));
    let frames = events
        .iter()
        .map(|e| {
            Bytes::from(format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().unwrap_or_default()
            ))
        })
        .collect();
    let abort = plan.abort_after.map(|k| first_content + k);
    stream_response(
        "text/event-stream",
        frames_stream(frames, abort, plan, stats),
    )
}

fn gemini(
    model: &str,
    stream: bool,
    prompt: u64,
    plan: StreamPlan,
    tool: Option<&str>,
    stats: Arc<MockStats>,
) -> Response<MockBody> {
    let n = plan.chunks;
    let response_id = format!("mock{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let usage = |c: usize| json!({"promptTokenCount": prompt, "candidatesTokenCount": c, "totalTokenCount": prompt + c as u64});
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        c
    };
    let tool_part =
        |name: &str| json!([{"functionCall": {"name": name, "args": {"input": content(n)}}}]);
    if !stream {
        let parts = match tool {
            Some(name) => tool_part(name),
            None => json!([{"text": content(n)}]),
        };
        return json_response(
            StatusCode::OK,
            json!({
                "candidates": [candidate(parts, Some("STOP"))], "usageMetadata": usage(n),
                "modelVersion": model, "responseId": response_id
            }),
        );
    }
    let events: Vec<Value> = match tool {
        // Gemini streams a function call whole, in one event.
        Some(name) => vec![json!({"candidates": [candidate(tool_part(name), Some("STOP"))],
                                  "usageMetadata": usage(n), "modelVersion": model, "responseId": response_id})],
        None => (0..n.max(1))
            .map(|i| {
                let last = i + 1 >= n;
                let text = if n == 0 { String::new() } else { content_piece(i) };
                json!({"candidates": [candidate(json!([{"text": text}]), last.then_some("STOP"))],
                       "usageMetadata": if last { usage(n) } else { json!({"promptTokenCount": prompt}) },
                       "modelVersion": model, "responseId": response_id})
            })
            .collect(),
    };
    let frames = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
        .collect();
    stream_response(
        "text/event-stream",
        frames_stream(frames, plan.abort_after, plan, stats),
    )
}

fn gemini_embed(req: &Value) -> Response<MockBody> {
    let requests = req["requests"].as_array().cloned().unwrap_or_default();
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|r| {
            let text = r["content"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default();
            let seed = text
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            let values: Vec<f32> = (0..8)
                .map(|d| ((seed.rotate_left(d * 4) % 2000) as f32 / 1000.0) - 1.0)
                .collect();
            json!({"values": values})
        })
        .collect();
    json_response(StatusCode::OK, json!({"embeddings": embeddings}))
}

fn bedrock(
    stream: bool,
    prompt: u64,
    (read, write): (u64, u64),
    plan: StreamPlan,
    tool: Option<&str>,
    stats: Arc<MockStats>,
) -> Response<MockBody> {
    let n = plan.chunks;
    let tool_id = format!("tooluse_mock{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let usage = json!({"inputTokens": prompt.saturating_sub(read + write), "outputTokens": n,
                       "cacheReadInputTokens": read, "cacheWriteInputTokens": write,
                       "totalTokens": prompt + n as u64});
    if !stream {
        let block = match tool {
            Some(name) => {
                json!({"toolUse": {"toolUseId": tool_id, "name": name, "input": {"input": content(n)}}})
            }
            None => json!({"text": content(n)}),
        };
        return json_response(
            StatusCode::OK,
            json!({
                "output": {"message": {"role": "assistant", "content": [block]}},
                "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}
            }),
        );
    }
    let mut events = vec![("messageStart", json!({"role": "assistant", "p": "abc"}))];
    if let Some(name) = tool {
        events.push(("contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": tool_id, "name": name}}})));
    }
    let first_content = events.len();
    match tool {
        Some(_) => events.extend(tool_arguments(n).1.into_iter().map(|p| {
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": p}}}),
            )
        })),
        None => events.extend((0..n).map(|i| {
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": content_piece(i)}, "p": "abcdef"}),
            )
        })),
    }
    events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    events.push(("messageStop", json!({"stopReason": stop})));
    events.push((
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 1}}),
    ));
    let frames = events
        .iter()
        .map(|(kind, payload)| {
            Bytes::from(encode_event(
                &[
                    (":event-type", kind),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                payload.to_string().as_bytes(),
            ))
        })
        .collect();
    let abort = plan.abort_after.map(|k| first_content + k);
    stream_response(
        "application/vnd.amazon.eventstream",
        frames_stream(frames, abort, plan, stats),
    )
}

/// One `application/vnd.amazon.eventstream` message with string headers.
/// (Written here independently of sluice's decoder, so each checks the other.)
fn encode_event(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out[..8]);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Sends `frames` one at a time, each after `plan.chunk_delay`; resets the
/// connection instead of sending frame `abort_at`.
fn frames_stream(
    frames: Vec<Bytes>,
    abort_at: Option<usize>,
    plan: StreamPlan,
    stats: Arc<MockStats>,
) -> SseStream {
    let state = (frames.into_iter(), 0usize);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut frames, sent)| {
            let stats = stats.clone();
            async move {
                if sent == usize::MAX {
                    return None;
                }
                if !plan.chunk_delay.is_zero() {
                    tokio::time::sleep(plan.chunk_delay).await;
                }
                if abort_at == Some(sent) {
                    let reset = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "mock: aborted mid-stream",
                    );
                    return Some((Err(reset), (Vec::new().into_iter(), usize::MAX)));
                }
                let frame = frames.next()?;
                if frames.len() == 0 {
                    stats.streams_finished.fetch_add(1, Ordering::SeqCst);
                }
                Some((Ok(Frame::data(frame)), (frames, sent + 1)))
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_routes() {
        let h = Hints::default();
        let p = |path: &str, q: Option<&str>| ProviderRoute::parse("POST", path, q, &h);
        assert_eq!(p("/v1/messages", None), Some(ProviderRoute::Anthropic));
        assert_eq!(
            p("/v1/messages/count_tokens", None),
            Some(ProviderRoute::AnthropicCountTokens)
        );
        assert_eq!(
            p(
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                Some("alt=sse")
            ),
            Some(ProviderRoute::Gemini {
                model: "gemini-2.0-flash".into(),
                stream: true
            })
        );
        assert_eq!(
            p(
                "/openai/deployments/d1/chat/completions",
                Some("api-version=2024-10-21")
            ),
            Some(ProviderRoute::Azure {
                endpoint: "chat/completions".into(),
                versioned: true
            })
        );
        assert_eq!(
            p("/model/anthropic.claude-v2%3A1/converse-stream", None),
            Some(ProviderRoute::Bedrock { stream: true })
        );
        assert_eq!(p("/v1/chat/completions", None), None);
        let (whole, pieces) = tool_arguments(3);
        assert_eq!(pieces.concat(), whole);
        assert_eq!(whole, r#"{"input":"tok0 tok1 tok2 "}"#);
    }
}
