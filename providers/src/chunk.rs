//! The common shape every translating adapter converts into, and its
//! rendering as OpenAI JSON: a whole [`Completion`] becomes a
//! `chat.completion` body; stream events go through a [`ChunkWriter`] that
//! writes `chat.completion.chunk` SSE events as they happen.

use crate::Usage;
use bytes::{BufMut, BytesMut};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most delivered text kept for counting a stream with no reported usage
/// (as in [`crate::UsageTracker`]).
const MAX_TRACKED_TEXT: usize = 4 * 1024 * 1024;

/// Why generation stopped, in OpenAI's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    /// OpenAI's `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// A tool call the model made, arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolCallOut {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A whole reply in the common shape.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    /// The provider's response id, if it gave one.
    pub id: Option<String>,
    /// The model the provider says answered, if it said.
    pub model: Option<String>,
    /// Text, thinking dropped.
    pub content: String,
    pub tool_calls: Vec<ToolCallOut>,
    pub finish: FinishReason,
    pub usage: Usage,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// `chatcmpl-<provider id>`, or a locally unique one.
pub(crate) fn completion_id(provider_id: Option<&str>) -> String {
    match provider_id {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!(
            "chatcmpl-sluice{:x}{:x}",
            now_s(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

/// Seconds since the epoch, for `created`.
pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: Details,
}

#[derive(Serialize)]
struct Details {
    cached_tokens: u64,
    /// Not OpenAI's: prompt-cache writes a translated upstream reported,
    /// so a client dialect that reports them (Anthropic's) can.
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn usage_json(u: Usage) -> UsageJson {
    UsageJson {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details: Details {
            cached_tokens: u.cached_prompt_tokens,
            cache_write_tokens: u.cache_write_tokens,
        },
    }
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl Completion {
    /// The `chat.completion` body; `fallback_model` names the model when
    /// the provider did not.
    pub fn to_openai(&self, fallback_model: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
            choices: [Choice<'a>; 1],
            usage: UsageJson,
        }
        #[derive(Serialize)]
        struct Choice<'a> {
            index: u32,
            message: Msg<'a>,
            logprobs: Option<()>,
            finish_reason: &'static str,
        }
        #[derive(Serialize)]
        struct Msg<'a> {
            role: &'static str,
            content: Option<&'a str>,
            refusal: Option<()>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            tool_calls: Vec<ToolCallJson<'a>>,
        }
        let id = completion_id(self.id.as_deref());
        let body = Body {
            id: &id,
            object: "chat.completion",
            created: now_s(),
            model: self.model.as_deref().unwrap_or(fallback_model),
            choices: [Choice {
                index: 0,
                message: Msg {
                    role: "assistant",
                    content: if self.content.is_empty() && !self.tool_calls.is_empty() {
                        None
                    } else {
                        Some(&self.content)
                    },
                    refusal: None,
                    tool_calls: self
                        .tool_calls
                        .iter()
                        .map(|c| ToolCallJson {
                            id: &c.id,
                            kind: "function",
                            function: FunctionJson {
                                name: &c.name,
                                arguments: &c.arguments,
                            },
                        })
                        .collect(),
                },
                logprobs: None,
                finish_reason: self.finish.as_str(),
            }],
            usage: usage_json(self.usage),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Writes one translated stream as OpenAI `chat.completion.chunk` events.
///
/// Adapters call it as their provider's events arrive; each call appends
/// complete SSE events to `out`, so nothing is held back. The terminal
/// sequence ([`ChunkWriter::end`]) is the finish chunk, the usage chunk
/// when the client asked for one, and `data: [DONE]`.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    model: String,
    include_usage: bool,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[{"index":0,"delta":`
    /// rendered on first use, once the provider's id is known.
    prefix: Vec<u8>,
    id: Option<String>,
    role_sent: bool,
    finish: Option<FinishReason>,
    usage: Usage,
    usage_seen: bool,
    done: bool,
    failed: bool,
    text: String,
}

impl ChunkWriter {
    /// A writer for a stream answering as `model`.
    pub fn new(model: &str, include_usage: bool) -> Self {
        ChunkWriter {
            model: model.to_string(),
            include_usage,
            prefix: Vec::new(),
            id: None,
            role_sent: false,
            finish: None,
            usage: Usage::default(),
            usage_seen: false,
            done: false,
            failed: false,
            text: String::new(),
        }
    }

    /// Uses the provider's id for the chunks (before the first is written).
    pub fn set_id(&mut self, provider_id: &str) {
        if self.prefix.is_empty() {
            self.id = Some(completion_id(Some(provider_id)));
        }
    }

    /// Names the model the provider says answered (before the first chunk).
    pub fn set_model(&mut self, model: &str) {
        if self.prefix.is_empty() && !model.is_empty() {
            self.model = model.to_string();
        }
    }

    fn prefix(&mut self) -> &[u8] {
        if self.prefix.is_empty() {
            let id = self.id.take().unwrap_or_else(|| completion_id(None));
            let mut p = Vec::with_capacity(128);
            p.extend_from_slice(b"data: {\"id\":");
            let _ = serde_json::to_writer(&mut p, &id);
            p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            p.extend_from_slice(now_s().to_string().as_bytes());
            p.extend_from_slice(b",\"model\":");
            let _ = serde_json::to_writer(&mut p, &self.model);
            p.extend_from_slice(b",\"choices\":[");
            self.prefix = p;
        }
        &self.prefix
    }

    /// Appends one chunk whose delta is `delta` (a JSON object).
    fn chunk(&mut self, delta: &[u8], finish: Option<FinishReason>, out: &mut BytesMut) {
        let prefix = self.prefix();
        out.reserve(prefix.len() + delta.len() + 64);
        out.put_slice(prefix);
        out.put_slice(b"{\"index\":0,\"delta\":");
        out.put_slice(delta);
        out.put_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => {
                out.put_u8(b'"');
                out.put_slice(f.as_str().as_bytes());
                out.put_u8(b'"');
            }
            None => out.put_slice(b"null"),
        }
        out.put_slice(b"}]}\n\n");
    }

    fn ensure_role(&mut self, out: &mut BytesMut) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(b"{\"role\":\"assistant\",\"content\":\"\"}", None, out);
        }
    }

    /// The first chunk (`role: assistant`), if not yet sent.
    pub fn start(&mut self, out: &mut BytesMut) {
        self.ensure_role(out);
    }

    /// A piece of text.
    pub fn text(&mut self, text: &str, out: &mut BytesMut) {
        if text.is_empty() || self.done {
            return;
        }
        self.ensure_role(out);
        if self.text.len() + text.len() <= MAX_TRACKED_TEXT {
            self.text.push_str(text);
        }
        let mut delta = Vec::with_capacity(text.len() + 16);
        delta.extend_from_slice(b"{\"content\":");
        let _ = serde_json::to_writer(&mut delta, text);
        delta.push(b'}');
        self.chunk(&delta, None, out);
    }

    /// The start of tool call number `index` (0-based among tool calls).
    pub fn tool_start(&mut self, index: u32, id: &str, name: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.ensure_role(out);
        let mut delta = Vec::with_capacity(96 + id.len() + name.len());
        delta.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        delta.extend_from_slice(index.to_string().as_bytes());
        delta.extend_from_slice(b",\"id\":");
        let _ = serde_json::to_writer(&mut delta, id);
        delta.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        let _ = serde_json::to_writer(&mut delta, name);
        delta.extend_from_slice(b",\"arguments\":\"\"}}]}");
        self.chunk(&delta, None, out);
    }

    /// A piece of tool call `index`'s arguments (JSON text, possibly partial).
    pub fn tool_args(&mut self, index: u32, args: &str, out: &mut BytesMut) {
        if args.is_empty() || self.done {
            return;
        }
        let mut delta = Vec::with_capacity(args.len() + 64);
        delta.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        delta.extend_from_slice(index.to_string().as_bytes());
        delta.extend_from_slice(b",\"function\":{\"arguments\":");
        let _ = serde_json::to_writer(&mut delta, args);
        delta.extend_from_slice(b"}}]}");
        self.chunk(&delta, None, out);
    }

    /// Records why generation stopped (sent by [`ChunkWriter::end`]).
    pub fn set_finish(&mut self, reason: FinishReason) {
        self.finish = Some(reason);
    }

    /// Whether a finish reason has been recorded.
    pub fn has_finish(&self) -> bool {
        self.finish.is_some()
    }

    /// Records the provider's usage (the latest report wins).
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = usage;
        self.usage_seen = true;
    }

    /// The usage recorded so far, mutable for providers that report it in parts.
    pub fn usage_mut(&mut self) -> &mut Usage {
        self.usage_seen = true;
        &mut self.usage
    }

    /// The terminal sequence: finish chunk, usage chunk if asked, `[DONE]`.
    /// Does nothing the second time or after an error.
    pub fn end(&mut self, out: &mut BytesMut) {
        if self.done || self.failed {
            return;
        }
        self.ensure_role(out);
        let finish = self.finish.unwrap_or(FinishReason::Stop);
        self.chunk(b"{}", Some(finish), out);
        if self.include_usage {
            let prefix = self.prefix().to_vec();
            out.put_slice(&prefix);
            out.put_slice(b"],\"usage\":");
            let mut u = Vec::with_capacity(128);
            let _ = serde_json::to_writer(&mut u, &usage_json(self.usage));
            out.put_slice(&u);
            out.put_slice(b"}\n\n");
        }
        out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// A mid-stream error event; nothing follows it.
    pub fn error(&mut self, error: &crate::UpstreamError, out: &mut BytesMut) {
        if self.done || self.failed {
            return;
        }
        self.failed = true;
        out.put_slice(&error.sse_event());
    }

    /// The provider's usage, if it reported any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage_seen.then_some(self.usage)
    }

    /// Text delivered so far.
    pub fn delivered_text(&self) -> &str {
        &self.text
    }

    /// Whether `[DONE]` was written.
    pub fn done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn events(out: &[u8]) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn writes_a_stream_openai_clients_can_read() {
        let mut w = ChunkWriter::new("claude", true);
        w.set_id("msg_1");
        let mut out = BytesMut::new();
        w.text("Hi \"there\"", &mut out);
        w.tool_start(0, "toolu_1", "get", &mut out);
        w.tool_args(0, "{\"a\":", &mut out);
        w.set_finish(FinishReason::ToolCalls);
        w.set_usage(Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            cached_prompt_tokens: 1,
            cache_write_tokens: 0,
        });
        w.end(&mut out);
        w.end(&mut out);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let ev = events(&out);
        assert_eq!(ev.len(), 6);
        assert_eq!(ev[0]["id"], "chatcmpl-msg_1");
        assert_eq!(ev[0]["object"], "chat.completion.chunk");
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "Hi \"there\"");
        assert_eq!(
            ev[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "get"
        );
        assert_eq!(
            ev[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(ev[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[5]["choices"], serde_json::json!([]));
        assert_eq!(ev[5]["usage"]["total_tokens"], 7);
        assert_eq!(ev[5]["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
        assert_eq!(w.delivered_text(), "Hi \"there\"");
        assert!(w.done());
    }

    #[test]
    fn renders_a_completion() {
        let c = Completion {
            id: None,
            model: None,
            content: String::new(),
            tool_calls: vec![ToolCallOut {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish: FinishReason::ToolCalls,
            usage: Usage::default(),
        };
        let v: Value = serde_json::from_slice(&c.to_openai("m")).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m");
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["type"],
            "function"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }
}
