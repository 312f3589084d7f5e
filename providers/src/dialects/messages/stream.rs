//! The way back, as bytes arrive: [`MessagesWriter`] rewrites an OpenAI
//! `chat.completion.chunk` stream into Anthropic's event sequence, or
//! keeps a whole `chat.completion` body and rewrites it at the end.
//!
//! The stream is `message_start`, then per content block
//! `content_block_start` / `content_block_delta`… / `content_block_stop`
//! (text as `text_delta`, tool calls as `tool_use` blocks fed by
//! `input_json_delta`, a block closed before the next opens), then
//! `message_delta` (stop reason, usage) and `message_stop`. OpenAI streams
//! report usage only at the end, so `message_start` carries zero usage and
//! `message_delta` all four counts (the SDK takes them from there). Reasoning
//! deltas some OpenAI-compatible servers send are dropped.

use super::events::{
    Chunk, Delta, Empty, Event, StartBlock, StartMessage, StopDelta, ToolCallDelta,
};
use super::reply::{message_id, stop_reason, tool_use_id, whole_reply};
use super::{error_event, error_json};
use crate::wire::{SseDecoder, SseEvent};
use crate::Usage;
use bytes::{BufMut, Bytes, BytesMut};

/// Largest whole OpenAI body kept for rewriting; past it the reply is
/// answered with an error.
const MAX_WHOLE_BODY: usize = 64 * 1024 * 1024;

/// Rewrites OpenAI chat replies into Messages replies, as bytes arrive.
///
/// One writer serves one reply. For a stream, [`MessagesWriter::feed`]
/// returns the events each piece completes; [`MessagesWriter::finish`]
/// ends a stream only if the upstream said why it stopped (a
/// `finish_reason` without the `[DONE]` that normally ends it), else
/// returns just what is pending and leaves the ending to the caller's
/// [`MessagesWriter::close`] or [`super::error_event`]. For a whole
/// reply, `feed` keeps the body and `finish` returns the Message.
///
/// Stream chunks that do not parse are skipped (logged at debug); an
/// OpenAI error event becomes Anthropic's `event: error` and ends the
/// stream; only choice 0 is shown (a Message has one).
#[derive(Debug)]
pub struct MessagesWriter {
    /// Whether the client asked for SSE (else the body is rewritten whole).
    stream: bool,
    /// The model name reported to the client.
    model: String,
    /// Whole replies: the OpenAI body so far.
    body: Vec<u8>,
    /// Whole replies: the body grew past [`MAX_WHOLE_BODY`] and was dropped.
    body_overflowed: bool,
    /// Streams: splits the OpenAI SSE into events, across any chunking.
    sse: SseDecoder,
    /// Streams: what has been written so far.
    state: StreamState,
}

/// Where a stream stands.
#[derive(Debug, Default)]
struct StreamState {
    /// `message_start` was written.
    started: bool,
    /// The content block now open, if any.
    open: Option<OpenBlock>,
    /// The index the next content block gets.
    next_index: u32,
    /// OpenAI tool-call index -> the content block it was given.
    tool_blocks: Vec<(u64, u32)>,
    /// The Anthropic stop reason, once a `finish_reason` arrived.
    stop_reason: Option<&'static str>,
    /// The latest usage the upstream reported.
    usage: Usage,
    /// `message_stop` was written: nothing more is.
    done: bool,
    /// An error event was written: nothing more is.
    failed: bool,
}

/// An open content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text { index: u32 },
    Tool { index: u32 },
}

impl MessagesWriter {
    /// A writer for one reply. `stream`: the client asked for SSE;
    /// `model`: the model name to report.
    pub fn new(stream: bool, model: &str) -> Self {
        MessagesWriter {
            stream,
            model: model.to_string(),
            body: Vec::new(),
            body_overflowed: false,
            sse: SseDecoder::default(),
            state: StreamState::default(),
        }
    }

    /// Takes a piece of the OpenAI-shaped reply (SSE bytes split anywhere,
    /// or part of a whole JSON body); returns the Messages bytes to send
    /// now (possibly empty: whole bodies are only written by `finish`).
    pub fn feed(&mut self, openai: &[u8]) -> Bytes {
        if !self.stream {
            if self.body.len() + openai.len() > MAX_WHOLE_BODY {
                self.body_overflowed = true;
                self.body = Vec::new();
            } else if !self.body_overflowed {
                self.body.extend_from_slice(openai);
            }
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        if self.state.done || self.state.failed {
            return Bytes::new();
        }
        if self.sse.feed(openai).is_err() {
            self.fail(
                502,
                "The upstream stream sent an oversized event.",
                &mut out,
            );
            return out.freeze();
        }
        while let Some(event) = self.sse.next_event() {
            self.on_event(&event, &mut out);
        }
        out.freeze()
    }

    /// The reply ended. For a whole reply: the whole Message JSON (or
    /// Anthropic's error body when the reply was an error or unreadable).
    /// For a stream: the events of an unterminated last chunk, and the
    /// closing `message_delta`/`message_stop` only if a `finish_reason` was
    /// seen but `[DONE]` was not; a stream cut before that is left open
    /// for the caller to end with [`MessagesWriter::close`] or an error.
    pub fn finish(&mut self) -> Bytes {
        if !self.stream {
            if self.state.done || self.state.failed {
                return Bytes::new();
            }
            if self.body_overflowed {
                self.state.failed = true;
                return Bytes::from(error_json(502, "The upstream reply is too large."));
            }
            let (out, is_message) = whole_reply(&std::mem::take(&mut self.body), &self.model);
            if is_message {
                self.state.done = true;
            } else {
                self.state.failed = true;
            }
            return Bytes::from(out);
        }
        let mut out = BytesMut::new();
        if self.state.done || self.state.failed {
            return Bytes::new();
        }
        if let Some(event) = self.sse.finish() {
            self.on_event(&event, &mut out);
        }
        if let Some(reason) = self.state.stop_reason {
            self.end(reason, &mut out);
        }
        out.freeze()
    }

    /// Whether the stream's terminal `message_stop` was written (for a
    /// whole reply: whether `finish` wrote a Message, not an error).
    pub fn done(&self) -> bool {
        self.state.done
    }

    /// The events that end a stream sluice stops itself (cancel, budget
    /// cut): `message_start` if nothing was written yet, the open content
    /// block's `content_block_stop`, `message_delta` with `stop_reason`
    /// (e.g. `"end_turn"` or `"max_tokens"`) and the usage known so far,
    /// then `message_stop`. Empty once the stream has ended (or failed),
    /// and for whole replies, which the caller answers itself.
    pub fn close(&mut self, stop_reason: &str) -> Bytes {
        let mut out = BytesMut::new();
        if self.stream && !self.state.done && !self.state.failed {
            self.end(stop_reason, &mut out);
        }
        out.freeze()
    }

    /// Handles one OpenAI event.
    fn on_event(&mut self, event: &SseEvent, out: &mut BytesMut) {
        if self.state.done || self.state.failed {
            return;
        }
        let data = event.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            let reason = self.state.stop_reason.unwrap_or("end_turn");
            self.end(reason, out);
            return;
        }
        let chunk: Chunk<'_> = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "skipped an unreadable chat chunk");
                return;
            }
        };
        if let Some(error) = &chunk.error {
            let (status, message) = error.status_and_message();
            self.fail(status, message, out);
            return;
        }
        self.start(chunk.id.as_deref(), out);
        if let Some(usage) = chunk.usage {
            self.state.usage = usage.into();
        }
        // A Message has one choice; other choices (`n` > 1) are not shown.
        let Some(choice) = chunk.choices.into_iter().flatten().find(|c| c.index == 0) else {
            return;
        };
        if let Some(delta) = &choice.delta {
            for text in [&delta.content, &delta.refusal].into_iter().flatten() {
                self.text(text, out);
            }
            for call in delta.tool_calls.iter().flatten() {
                self.tool_call(call, out);
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.state.stop_reason = Some(stop_reason(reason));
        }
    }

    /// `message_start`, once.
    fn start(&mut self, chat_id: Option<&str>, out: &mut BytesMut) {
        if self.state.started {
            return;
        }
        self.state.started = true;
        let id = message_id(chat_id);
        Event::MessageStart {
            message: StartMessage {
                id: &id,
                kind: "message",
                role: "assistant",
                model: &self.model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage: Usage::default().into(),
            },
        }
        .write(out);
    }

    /// Closes the open block, if any.
    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some(OpenBlock::Text { index } | OpenBlock::Tool { index }) = self.state.open.take()
        {
            Event::ContentBlockStop { index }.write(out);
        }
    }

    /// Opens a block with `content_block`; returns its index.
    fn open_block(&mut self, content_block: StartBlock<'_>, out: &mut BytesMut) -> u32 {
        self.close_block(out);
        let index = self.state.next_index;
        self.state.next_index += 1;
        Event::ContentBlockStart {
            index,
            content_block,
        }
        .write(out);
        index
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        let index = match self.state.open {
            Some(OpenBlock::Text { index }) => index,
            _ => {
                let index = self.open_block(StartBlock::Text { text: "" }, out);
                self.state.open = Some(OpenBlock::Text { index });
                index
            }
        };
        Event::ContentBlockDelta {
            index,
            delta: Delta::TextDelta { text },
        }
        .write(out);
    }

    /// A tool-call delta: the first for an OpenAI index opens a `tool_use`
    /// block; arguments go to that call's block. Arguments for a call whose
    /// block was already closed (a server interleaving parallel calls) are
    /// still sent to its index, which the SDK accumulates by.
    fn tool_call(&mut self, call: &ToolCallDelta<'_>, out: &mut BytesMut) {
        let known = self
            .state
            .tool_blocks
            .iter()
            .find(|(openai, _)| *openai == call.index)
            .map(|(_, block)| *block);
        let function = call.function.as_ref();
        let index = match known {
            Some(index) => index,
            None => {
                let id = match call.id.as_deref() {
                    Some(id) if !id.is_empty() => id.to_string(),
                    _ => tool_use_id(),
                };
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
                let block = StartBlock::ToolUse {
                    id: &id,
                    name,
                    input: Empty {},
                };
                let index = self.open_block(block, out);
                self.state.open = Some(OpenBlock::Tool { index });
                self.state.tool_blocks.push((call.index, index));
                index
            }
        };
        let arguments = function.and_then(|f| f.arguments.as_deref());
        if let Some(partial_json) = arguments.filter(|a| !a.is_empty()) {
            Event::ContentBlockDelta {
                index,
                delta: Delta::InputJsonDelta { partial_json },
            }
            .write(out);
        }
    }

    /// The terminal sequence: closes the open block, `message_delta`,
    /// `message_stop`.
    fn end(&mut self, stop_reason: &str, out: &mut BytesMut) {
        self.start(None, out);
        self.close_block(out);
        Event::MessageDelta {
            delta: StopDelta {
                stop_reason,
                stop_sequence: None,
            },
            usage: self.state.usage.into(),
        }
        .write(out);
        Event::MessageStop.write(out);
        self.state.done = true;
    }

    /// An error event; nothing follows it.
    fn fail(&mut self, status: u16, message: &str, out: &mut BytesMut) {
        self.state.failed = true;
        out.put_slice(&error_event(status, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// An OpenAI stream as the crate's chunk writer and OpenAI write it:
    /// role chunk, text, two tool calls, finish, usage chunk, `[DONE]`.
    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"you\\\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":15,\"total_tokens\":135,\"prompt_tokens_details\":{\"cached_tokens\":100,\"cache_write_tokens\":12}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// The (event name, data) pairs of an Anthropic stream.
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(
            text.is_empty() || text.ends_with("\n\n"),
            "events end whole"
        );
        text.split_terminator("\n\n")
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name, "event name is the data's type");
                (name.to_string(), data)
            })
            .collect()
    }

    fn run(stream: &str, piece: usize) -> (Vec<u8>, MessagesWriter) {
        let mut w = MessagesWriter::new(true, "claude-x");
        let mut out = Vec::new();
        for p in stream.as_bytes().chunks(piece) {
            out.extend_from_slice(&w.feed(p));
        }
        out.extend_from_slice(&w.finish());
        (out, w)
    }

    #[test]
    fn writes_anthropics_event_sequence() {
        let (out, w) = run(OPENAI_STREAM, 7);
        assert!(w.done());
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(
            ev[0].1,
            json!({"type": "message_start", "message": {"id": "msg_abc", "type": "message",
                "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0,
                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}})
        );
        assert_eq!(
            ev[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            ev[3].1,
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "lo \"you\""}})
        );
        assert_eq!(
            ev[5].1,
            json!({"type": "content_block_start", "index": 1, "content_block":
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}})
        );
        assert_eq!(
            ev[7].1,
            json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})
        );
        assert_eq!(ev[9].1["index"], 2);
        assert_eq!(ev[11].1, json!({"type": "content_block_stop", "index": 2}));
        assert_eq!(
            ev[12].1,
            json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 8, "output_tokens": 15,
                    "cache_read_input_tokens": 100, "cache_creation_input_tokens": 12}})
        );
        assert_eq!(ev[13].1, json!({"type": "message_stop"}));
    }

    #[test]
    fn any_chunking_gives_the_same_bytes() {
        let (whole, _) = run(OPENAI_STREAM, OPENAI_STREAM.len());
        for piece in [1, 2, 3, 5, 64] {
            let (out, _) = run(OPENAI_STREAM, piece);
            assert_eq!(out, whole, "pieces of {piece}");
        }
    }

    #[test]
    fn a_mid_stream_error_ends_the_stream() {
        let stream = concat!(
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"The upstream provider is overloaded. Please retry.\",",
            "\"type\":\"server_error\",\"code\":\"upstream_overloaded\"}}\n\n",
            "data: [DONE]\n\n",
        );
        let (out, mut w) = run(stream, 4);
        let ev = events(&out);
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev[3].1,
            json!({"type": "error", "error": {"type": "overloaded_error",
                "message": "The upstream provider is overloaded. Please retry."}})
        );
        assert!(!w.done());
        assert!(w.close("end_turn").is_empty(), "nothing follows an error");
    }

    #[test]
    fn a_cut_stream_is_left_to_the_caller_and_closed_by_close() {
        let stream =
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        let (out, mut w) = run(stream, 10);
        assert!(!w.done());
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta"
            ]
        );
        let closing = w.close("max_tokens");
        let ev = events(&closing);
        assert_eq!(ev[0].1, json!({"type": "content_block_stop", "index": 0}));
        assert_eq!(ev[1].1["delta"]["stop_reason"], "max_tokens");
        assert_eq!(ev[2].0, "message_stop");
        assert!(w.done());
        assert!(w.close("end_turn").is_empty());
        assert!(w.finish().is_empty());
    }

    #[test]
    fn finish_ends_a_stream_that_said_why_it_stopped_without_done() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}",
        );
        let (out, w) = run(stream, 3);
        assert!(w.done());
        let ev = events(&out);
        assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "max_tokens");
        assert!(ev[0].1["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_"));
    }

    #[test]
    fn close_before_anything_still_writes_a_valid_stream() {
        let mut w = MessagesWriter::new(true, "m");
        let names: Vec<String> = events(&w.close("end_turn"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    }

    #[test]
    fn whole_replies_are_written_at_finish() {
        let body = br#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let mut w = MessagesWriter::new(false, "claude-x");
        for piece in body.chunks(5) {
            assert!(w.feed(piece).is_empty());
        }
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["content"], json!([{"type": "text", "text": "ok"}]));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["input_tokens"], 3);
        assert!(w.done());
        assert!(w.close("end_turn").is_empty());
    }
}
