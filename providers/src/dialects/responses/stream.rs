//! [`ResponsesWriter`]: chat replies rewritten into Responses replies as
//! their bytes arrive.
//!
//! A stream becomes `response.created`, `response.in_progress`, then per
//! output item `response.output_item.added`, its deltas and its `.done`
//! events, and finally `response.completed` (or `response.incomplete`)
//! carrying the whole Response. Output indexes count items in the order
//! they were added; each message has one content part (index 0). Text after
//! a tool call opens a new message item; a tool call closes the open
//! message. Every event carries an increasing `sequence_number`.

use super::reply::{self, Ending, ResponseShell};
use super::ResponsesRequest;
use crate::Usage;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// Largest chat body or unterminated SSE event held (16 MiB); past it the
/// reply is declared broken.
const MAX_HELD: usize = 16 * 1024 * 1024;

/// The parts of a `chat.completion.chunk` the writer reads.
#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChatChoice<'a>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChatDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    /// Rare and small: kept as trees for the tool-call path.
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

/// `response.output_text.delta`, the event written per token.
#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
    sequence_number: u64,
}

/// One output item while it streams.
#[derive(Debug)]
enum Item {
    Message {
        id: String,
        text: String,
        open: bool,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        /// The chat `tool_calls[].index` it came from.
        chat_index: u64,
        open: bool,
    },
}

impl Item {
    /// The item as the Response's `output` lists it.
    fn to_json(&self, status: &str) -> Value {
        match self {
            Item::Message { id, text, .. } => reply::message_item(id, text, status),
            Item::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                ..
            } => reply::function_call_item(id, call_id, name, arguments, status),
        }
    }
}

/// Rewrites OpenAI chat replies into Responses replies, as bytes arrive:
/// one per reply, made by the gateway with the id it chose for the
/// response. Feed it every piece of the chat reply, then call
/// [`ResponsesWriter::finish`] (or [`ResponsesWriter::close`] when sluice
/// stops the stream itself); [`ResponsesWriter::output_items`] then holds
/// what to store for a later `previous_response_id`.
#[derive(Debug)]
pub struct ResponsesWriter {
    /// Whether the client asked for the event stream.
    stream: bool,
    /// Id, model, creation time and echoed request fields.
    shell: ResponseShell,
    /// A whole body's pieces, or the unterminated tail of the SSE stream.
    held: Vec<u8>,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// Whether `response.created` and `response.in_progress` are out.
    started: bool,
    /// Output items in output-index order.
    items: Vec<Item>,
    /// The message item receiving text, if one is open.
    open_message: Option<usize>,
    /// The chat `finish_reason`, once seen.
    finish_reason: Option<String>,
    /// The chat usage (and reasoning tokens), once seen.
    usage: Option<(Usage, u64)>,
    /// Whether `response.completed` or `response.incomplete` was written.
    done: bool,
    /// Whether a terminal event of any kind (`response.failed` too) was written.
    ended: bool,
    /// The finished output items, for storing.
    output: Vec<Value>,
}

impl ResponsesWriter {
    /// A writer for one reply. `stream`: the client asked for SSE;
    /// `response_id`: the id to give the response (`resp_...`); `model`:
    /// the model to report; `request`: the client's request, whose fields
    /// the Response echoes.
    pub fn new(stream: bool, response_id: &str, model: &str, request: &ResponsesRequest) -> Self {
        ResponsesWriter {
            stream,
            shell: ResponseShell {
                id: response_id.to_string(),
                model: model.to_string(),
                created_at: crate::chunk::now_s(),
                echo: request.echo().clone(),
            },
            held: Vec::new(),
            sequence: 0,
            started: false,
            items: Vec::new(),
            open_message: None,
            finish_reason: None,
            usage: None,
            done: false,
            ended: false,
            output: Vec::new(),
        }
    }

    /// Takes a piece of the chat reply (SSE split anywhere, or part of a
    /// whole JSON body) and returns the Responses bytes ready to send
    /// (nothing, for a whole body, until [`ResponsesWriter::finish`]).
    pub fn feed(&mut self, openai: &[u8]) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        self.held.extend_from_slice(openai);
        if !self.stream {
            if self.held.len() > MAX_HELD {
                self.held.clear();
                return self.fail(502, "server_error", "The upstream reply was too large.");
            }
            return Bytes::new();
        }
        let mut out = String::new();
        while let Some((end, separator)) = event_boundary(&self.held) {
            let event: Vec<u8> = self.held.drain(..end + separator).take(end).collect();
            self.chat_event(&event, &mut out);
            if self.ended {
                self.held.clear();
                break;
            }
        }
        if self.held.len() > MAX_HELD {
            self.held.clear();
            out.push_str(&self.fail_text(502, "server_error", "An upstream event was too large."));
        }
        Bytes::from(out)
    }

    /// The rest, once the upstream has ended: for a whole body the Response
    /// JSON (an error body, or one that is not a chat completion, comes out
    /// unchanged); for a stream the closing events, or an `error` event and
    /// `response.failed` when the chat stream was cut before it finished.
    pub fn finish(&mut self) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        let held = std::mem::take(&mut self.held);
        if !self.stream {
            self.ended = true;
            return match reply::whole(&self.shell, &held) {
                Some((response, output)) => {
                    self.output = output;
                    self.done = true;
                    Bytes::from(response.to_string())
                }
                None => Bytes::from(held),
            };
        }
        let mut out = String::new();
        if !held.is_empty() {
            self.chat_event(&held, &mut out);
        }
        if !self.ended {
            if self.finish_reason.is_some() {
                self.complete(&mut out);
            } else {
                out.push_str(&self.fail_text(
                    502,
                    "server_error",
                    "The upstream ended the stream before it finished.",
                ));
            }
        }
        Bytes::from(out)
    }

    /// The output items (messages, function calls) to store for a later
    /// `previous_response_id`; filled once the response has ended.
    pub fn output_items(&self) -> &[Value] {
        &self.output
    }

    /// Whether the response ended well: `response.completed` (or
    /// `response.incomplete`) was written, or the whole Response body.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Ends a stream sluice stops itself (client cancel, budget cut): closes
    /// the open items, then writes `response.incomplete` (when `status` is
    /// `"incomplete"`, with `incomplete_details.reason` = `reason`, default
    /// `max_output_tokens`) or `response.completed`. For a whole body it
    /// returns the Response built from what arrived, with that status.
    pub fn close(&mut self, status: &str, reason: Option<&str>) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        let ending = match status {
            "incomplete" => Ending::Incomplete(reason.unwrap_or("max_output_tokens").to_string()),
            _ => Ending::Completed,
        };
        if !self.stream {
            self.ended = true;
            self.done = true;
            let response = self.shell.object(&ending, Vec::new(), None);
            return Bytes::from(response.to_string());
        }
        self.held.clear();
        let mut out = String::new();
        self.end(ending, &mut out);
        Bytes::from(out)
    }

    /// Ends the stream with a failure: an `error` event (see
    /// [`super::error_event`]) numbered in sequence, then `response.failed`
    /// with the items so far. For the gateway's own mid-stream errors.
    pub fn fail(&mut self, status: u16, code: &str, message: &str) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        Bytes::from(self.fail_text(status, code, message))
    }

    fn fail_text(&mut self, status: u16, code: &str, message: &str) -> String {
        let mut out = String::new();
        self.start(&mut out);
        let error = reply::error_payload(status, code, message, self.sequence);
        self.sequence += 1;
        out.push_str(&reply::sse_event(&error));
        let code = error
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("server_error");
        let ending = Ending::Failed {
            code: code.to_string(),
            message: message.to_string(),
        };
        self.output = self.items.iter().map(|i| i.to_json("incomplete")).collect();
        let response = self.shell.object(&ending, self.output.clone(), None);
        self.emit(
            json!({"type": "response.failed", "response": response}),
            &mut out,
        );
        self.ended = true;
        out
    }

    /// Writes one event with the next sequence number.
    fn emit(&mut self, mut payload: Value, out: &mut String) {
        payload["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.push_str(&reply::sse_event(&payload));
    }

    /// `response.created` and `response.in_progress`, once.
    fn start(&mut self, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.shell.object(&Ending::InProgress, Vec::new(), None);
        self.emit(
            json!({"type": "response.created", "response": response.clone()}),
            out,
        );
        self.emit(
            json!({"type": "response.in_progress", "response": response}),
            out,
        );
    }

    /// Reads one chat SSE event (without its blank line).
    fn chat_event(&mut self, event: &[u8], out: &mut String) {
        let mut data = Vec::new();
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(value) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            }
        }
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.complete(out);
            return;
        }
        // Typed and borrowed: one pass, no tree per token (the delta's text
        // is borrowed from `data` unless it has escapes).
        let Ok(chunk) = serde_json::from_slice::<ChatChunk<'_>>(&data) else {
            return;
        };
        self.start(out);
        if let Some(error) = &chunk.error {
            let text = |field: &str| error.get(field).and_then(Value::as_str).unwrap_or("");
            let code = match text("code") {
                "" => text("type"),
                code => code,
            };
            let message = match text("message") {
                "" => "The upstream failed.",
                message => message,
            };
            out.push_str(&self.fail_text(502, code, message));
            return;
        }
        if let Some(usage) = chunk.usage.as_ref().and_then(reply::chat_usage) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        if let Some(delta) = &choice.delta {
            if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                self.text(text, out);
            }
            for call in delta.tool_calls.iter().flatten() {
                self.tool_call(call, out);
            }
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            self.finish_reason = Some(reason.to_string());
        }
    }

    /// A text delta: into the open message, or a new one.
    fn text(&mut self, delta: &str, out: &mut String) {
        let index = match self.open_message {
            Some(index) => index,
            None => {
                let index = self.items.len();
                let id = self.shell.item_id("msg", index);
                let item = json!({"type": "message", "id": id, "status": "in_progress",
                                  "role": "assistant", "content": []});
                self.emit(
                    json!({"type": "response.output_item.added", "output_index": index,
                                 "item": item}),
                    out,
                );
                self.emit(
                    json!({"type": "response.content_part.added", "item_id": id,
                                 "output_index": index, "content_index": 0,
                                 "part": reply::output_text_part("")}),
                    out,
                );
                self.items.push(Item::Message {
                    id,
                    text: String::new(),
                    open: true,
                });
                self.open_message = Some(index);
                index
            }
        };
        if let Some(Item::Message { id, text, .. }) = self.items.get_mut(index) {
            text.push_str(delta);
            // The per-token event, written from a typed struct.
            let event = TextDelta {
                kind: "response.output_text.delta",
                item_id: id,
                output_index: index,
                content_index: 0,
                delta,
                logprobs: [],
                sequence_number: self.sequence,
            };
            if let Ok(json) = serde_json::to_string(&event) {
                self.sequence += 1;
                out.push_str("event: response.output_text.delta\ndata: ");
                out.push_str(&json);
                out.push_str("\n\n");
            }
        }
    }

    /// A chat tool-call delta: a new function call item, or arguments for
    /// one already open.
    fn tool_call(&mut self, call: &Value, out: &mut String) {
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let existing = self.items.iter().position(|item| {
            matches!(item, Item::FunctionCall { chat_index: i, open: true, .. } if *i == chat_index)
        });
        let index = match existing {
            Some(index) => index,
            None => {
                if let Some(message) = self.open_message.take() {
                    self.close_item(message, "completed", out);
                }
                let index = self.items.len();
                let id = self.shell.item_id("fc", index);
                let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
                let item = Item::FunctionCall {
                    id,
                    call_id: text(call.get("id")),
                    name: text(function.and_then(|f| f.get("name"))),
                    arguments: String::new(),
                    chat_index,
                    open: true,
                };
                let added = item.to_json("in_progress");
                self.items.push(item);
                self.emit(
                    json!({"type": "response.output_item.added", "output_index": index,
                                 "item": added}),
                    out,
                );
                index
            }
        };
        if arguments.is_empty() {
            return;
        }
        if let Some(Item::FunctionCall {
            id, arguments: all, ..
        }) = self.items.get_mut(index)
        {
            all.push_str(arguments);
            let id = id.clone();
            self.emit(
                json!({"type": "response.function_call_arguments.delta", "item_id": id,
                             "output_index": index, "delta": arguments}),
                out,
            );
        }
    }

    /// The `.done` events of item `index`, if it is open.
    fn close_item(&mut self, index: usize, status: &str, out: &mut String) {
        let Some(item) = self.items.get_mut(index) else {
            return;
        };
        let events = match item {
            Item::Message { open: false, .. } | Item::FunctionCall { open: false, .. } => return,
            Item::Message { id, text, open } => {
                *open = false;
                let part = reply::output_text_part(text);
                vec![
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": index,
                           "content_index": 0, "text": text, "logprobs": []}),
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": index,
                           "content_index": 0, "part": part}),
                ]
            }
            Item::FunctionCall {
                id,
                arguments,
                open,
                ..
            } => {
                *open = false;
                vec![
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                            "output_index": index, "arguments": arguments}),
                ]
            }
        };
        let done = item.to_json(status);
        for event in events {
            self.emit(event, out);
        }
        self.emit(
            json!({"type": "response.output_item.done", "output_index": index,
                         "item": done}),
            out,
        );
    }

    /// The chat stream finished: complete, or incomplete when it stopped at
    /// the token limit or a content filter.
    fn complete(&mut self, out: &mut String) {
        if self.ended {
            return;
        }
        let ending = match self.finish_reason.as_deref() {
            Some("length") => Ending::Incomplete("max_output_tokens".into()),
            Some("content_filter") => Ending::Incomplete("content_filter".into()),
            _ => Ending::Completed,
        };
        self.end(ending, out);
    }

    /// Closes every open item, then writes the terminal event.
    fn end(&mut self, ending: Ending, out: &mut String) {
        self.start(out);
        let status = match ending {
            Ending::Incomplete(_) => "incomplete",
            _ => "completed",
        };
        self.open_message = None;
        for index in 0..self.items.len() {
            self.close_item(index, status, out);
        }
        self.output = self.items.iter().map(|i| i.to_json(status)).collect();
        let usage = self
            .usage
            .as_ref()
            .map(|(usage, reasoning)| reply::usage_json(usage, *reasoning));
        let kind = match ending {
            Ending::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        let response = self
            .shell
            .object(&ending, self.output.clone(), usage.as_ref());
        self.emit(json!({"type": kind, "response": response}), out);
        self.done = true;
        self.ended = true;
    }
}

/// Where the first SSE event in `buf` ends, and its separator's length.
fn event_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| (i, 2));
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
