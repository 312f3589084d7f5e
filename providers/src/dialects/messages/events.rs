//! The two wire shapes a stream is rewritten between: the Anthropic
//! events [`super::MessagesWriter`] writes, and the OpenAI
//! `chat.completion.chunk` events it reads.

use super::reply::{OpenAiError, UsageOut};
use crate::usage::WireUsage;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One Anthropic stream event; its `type` is also the SSE event name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Event<'a> {
    MessageStart {
        message: StartMessage<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopDelta<'a>,
        usage: UsageOut,
    },
    MessageStop,
}

impl Event<'_> {
    /// The SSE event name, which is also the data's `type`.
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }

    /// Appends `event: <type>\ndata: <json>\n\n`.
    pub(super) fn write(&self, out: &mut BytesMut) {
        out.put_slice(b"event: ");
        out.put_slice(self.name().as_bytes());
        out.put_slice(b"\ndata: ");
        let mut w = out.writer();
        // Serialising these types into memory cannot fail.
        let _ = serde_json::to_writer(&mut w, self);
        let out = w.into_inner();
        out.put_slice(b"\n\n");
    }
}

/// `message_start`'s message: no content yet, zero usage.
#[derive(Serialize)]
pub(super) struct StartMessage<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) role: &'static str,
    pub(super) model: &'a str,
    pub(super) content: [(); 0],
    pub(super) stop_reason: Option<()>,
    pub(super) stop_sequence: Option<()>,
    pub(super) usage: UsageOut,
}

/// `content_block_start`'s block, empty.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StartBlock<'a> {
    Text {
        text: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

/// `{}`: a tool block's input before its deltas.
#[derive(Serialize)]
pub(super) struct Empty {}

/// `content_block_delta`'s delta.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

/// `message_delta`'s delta.
#[derive(Serialize)]
pub(super) struct StopDelta<'a> {
    pub(super) stop_reason: &'a str,
    pub(super) stop_sequence: Option<()>,
}

/// One `chat.completion.chunk`, or an error event.
#[derive(Deserialize)]
pub(super) struct Chunk<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
    #[serde(default)]
    pub(super) error: Option<OpenAiError>,
}

/// One of a chunk's `choices`.
#[derive(Deserialize)]
pub(super) struct ChunkChoice<'a> {
    #[serde(default)]
    pub(super) index: u32,
    #[serde(borrow, default)]
    pub(super) delta: Option<ChunkDelta<'a>>,
    #[serde(borrow, default)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
}

/// A choice's `delta`.
#[derive(Deserialize)]
pub(super) struct ChunkDelta<'a> {
    #[serde(borrow, default)]
    pub(super) content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

/// One tool call's piece in a delta, keyed by its `index`.
#[derive(Deserialize)]
pub(super) struct ToolCallDelta<'a> {
    #[serde(default)]
    pub(super) index: u64,
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) function: Option<FunctionDelta<'a>>,
}

/// A tool call piece's name (first piece) and arguments text.
#[derive(Deserialize)]
pub(super) struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) arguments: Option<Cow<'a, str>>,
}
