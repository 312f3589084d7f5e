//! The mock's response bodies, in OpenAI's exact wire format.

use crate::MockStats;
use bytes::Bytes;
use futures_util::Stream;
use hyper::body::Frame;
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A reply the mock sends.
pub(crate) enum Reply {
    Json(Bytes),
    BadRequest(Bytes),
    Sse(SseStream),
}

pub(crate) type SseStream =
    Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;

/// How a streamed reply unfolds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamPlan {
    pub chunks: usize,
    pub chunk_delay: Duration,
    /// Leave `usage` out, as some OpenAI-compatible servers do (`x-mock-no-usage`).
    pub no_usage: bool,
    /// Abort the connection after this many content chunks.
    pub abort_after: Option<usize>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bytes_of(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

fn bad_request(message: &str) -> Reply {
    Reply::BadRequest(bytes_of(&json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": null
    }})))
}

/// OpenAI's error body for a status, as the real API words them.
pub(crate) fn error_body(status: http::StatusCode) -> Bytes {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", "rate_limit_exceeded"),
        s if s >= 500 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "mock_error"),
    };
    bytes_of(&json!({"error": {
        "message": format!("mock upstream returned {status}"),
        "type": kind, "param": null, "code": code
    }}))
}

/// The piece of content in streamed chunk `i`; a plain reply is their concatenation.
pub(crate) fn content_piece(i: usize) -> String {
    format!("tok{i} ")
}

/// The prompt tokens the mock reports for a request body.
pub(crate) fn prompt_tokens(body: &[u8]) -> u64 {
    // A deterministic stand-in: one token per four bytes of request.
    (body.len() as u64).div_ceil(4)
}

struct Parsed {
    model: String,
    stream: bool,
    include_usage: bool,
}

fn parse(body: &[u8]) -> Result<Parsed, Reply> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad_request("mock: body is not JSON"))?;
    let model = v["model"]
        .as_str()
        .ok_or_else(|| bad_request("mock: you must provide a model parameter"))?
        .to_string();
    Ok(Parsed {
        model,
        stream: v["stream"].as_bool().unwrap_or(false),
        include_usage: v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
    })
}

/// `POST /v1/chat/completions`.
pub(crate) fn chat(body: &[u8], plan: StreamPlan, stats: Arc<MockStats>) -> Reply {
    let req = match parse(body) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let id = format!("chatcmpl-mock-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let prompt = prompt_tokens(body);
    let created = now_s();
    if !req.stream {
        let content: String = (0..plan.chunks).map(content_piece).collect();
        let mut reply = json!({
            "id": id, "object": "chat.completion", "created": created, "model": req.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": plan.chunks,
                      "total_tokens": prompt + plan.chunks as u64}
        });
        if plan.no_usage {
            if let Some(map) = reply.as_object_mut() {
                map.remove("usage");
            }
        }
        return Reply::Json(bytes_of(&reply));
    }
    let include_usage = req.include_usage && !plan.no_usage;
    let usage_field = if include_usage {
        Some(Value::Null)
    } else {
        None
    };
    let chunk = move |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": req.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if let Some(u) = &usage_field {
            c["usage"] = u.clone();
        }
        c
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events
        .extend((0..plan.chunks).map(|i| chunk(json!({"content": content_piece(i)}), Value::Null)));
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": plan.chunks,
                               "total_tokens": prompt + plan.chunks as u64});
        events.push(last);
    }
    Reply::Sse(sse(events, plan, stats))
}

/// `POST /v1/completions`.
pub(crate) fn completion(body: &[u8], plan: StreamPlan, stats: Arc<MockStats>) -> Reply {
    let req = match parse(body) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let id = format!("cmpl-mock-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let prompt = prompt_tokens(body);
    let created = now_s();
    let choice = |text: String, finish: Value| {
        json!({"id": id, "object": "text_completion", "created": created, "model": req.model,
               "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
    };
    if !req.stream {
        let mut c = choice((0..plan.chunks).map(content_piece).collect(), json!("stop"));
        c["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": plan.chunks,
                            "total_tokens": prompt + plan.chunks as u64});
        return Reply::Json(bytes_of(&c));
    }
    let mut events: Vec<Value> = (0..plan.chunks)
        .map(|i| choice(content_piece(i), Value::Null))
        .collect();
    events.push(choice(String::new(), json!("stop")));
    Reply::Sse(sse(events, plan, stats))
}

/// `POST /v1/embeddings`: an 8-dimensional vector per input, derived from its text.
pub(crate) fn embeddings(body: &[u8]) -> Reply {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return bad_request("mock: body is not JSON"),
    };
    let Some(model) = v["model"].as_str() else {
        return bad_request("mock: you must provide a model parameter");
    };
    let inputs: Vec<String> = match &v["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(|i| i.to_string()).collect(),
        _ => return bad_request("mock: input must be a string or an array"),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let seed = text
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            let vector: Vec<f32> = (0..8)
                .map(|d| ((seed.rotate_left(d * 4) % 2000) as f32 / 1000.0) - 1.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    let tokens = prompt_tokens(body);
    Reply::Json(bytes_of(&json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    })))
}

/// `GET /v1/models`.
pub(crate) fn models() -> Bytes {
    bytes_of(&json!({"object": "list", "data": [
        {"id": "mock-model", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}
    ]}))
}

/// Frames `events` as SSE (`data: ...\n\n`), then `data: [DONE]`, one frame
/// per event, each after `plan.chunk_delay`; aborts if the plan says so.
fn sse(events: Vec<Value>, plan: StreamPlan, stats: Arc<MockStats>) -> SseStream {
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    // Content chunk k is frame k+1 for chat (role chunk first); abort after it.
    let abort_at = plan.abort_after.map(|k| k + 1);
    let state = (frames.into_iter(), 0usize);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut frames, sent)| {
            let stats = stats.clone();
            async move {
                if !plan.chunk_delay.is_zero() && sent != usize::MAX {
                    tokio::time::sleep(plan.chunk_delay).await;
                }
                if abort_at == Some(sent) {
                    let reset = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "mock: aborted mid-stream",
                    );
                    return Some((Err(reset), (Vec::new().into_iter(), usize::MAX)));
                }
                if sent == usize::MAX {
                    return None;
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
