//! The Messages request body as [`super::to_chat`] reads it, borrowing
//! from the client's bytes.
//!
//! Blocks are read as flat structs keyed by their `type` (not as a
//! serde-tagged enum) because `cache_control` is kept as raw JSON, and
//! serde cannot hand raw JSON through a tagged or untagged enum; fields
//! that are a string or a list of blocks are read raw for the same reason
//! and decoded by their first character.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// `POST /v1/messages` (and `/v1/messages/count_tokens`), as far as a chat
/// request can express it. `top_k`, `thinking`, `service_tier` and the
/// like have no chat equivalent and are not read.
#[derive(Deserialize)]
pub(super) struct MessagesRequest<'a> {
    #[serde(borrow, default)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) max_tokens: Option<u64>,
    #[serde(borrow, default)]
    pub(super) system: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) messages: Vec<MessageIn<'a>>,
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    #[serde(default)]
    pub(super) top_p: Option<f64>,
    #[serde(borrow, default)]
    pub(super) stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub(super) metadata: Option<MetadataIn<'a>>,
    #[serde(default)]
    pub(super) stream: Option<bool>,
    #[serde(borrow, default)]
    pub(super) tools: Option<Vec<ToolIn<'a>>>,
    #[serde(borrow, default)]
    pub(super) tool_choice: Option<ToolChoiceIn<'a>>,
}

/// `metadata`: only `user_id` has a chat equivalent (`user`).
#[derive(Deserialize)]
pub(super) struct MetadataIn<'a> {
    #[serde(borrow, default)]
    pub(super) user_id: Option<Cow<'a, str>>,
}

/// One turn: `user` or `assistant`, content a string or blocks (raw).
#[derive(Deserialize)]
pub(super) struct MessageIn<'a> {
    #[serde(borrow)]
    pub(super) role: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) content: &'a RawValue,
}

/// One content block, every kind's fields side by side.
#[derive(Deserialize)]
pub(super) struct BlockIn<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) source: Option<SourceIn<'a>>,
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) tool_use_id: Option<Cow<'a, str>>,
    /// A `tool_result`'s content: a string or blocks (raw).
    #[serde(borrow, default)]
    pub(super) content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) cache_control: Option<&'a RawValue>,
}

/// An image's `source`: `base64` (media_type, data) or `url`.
#[derive(Deserialize)]
pub(super) struct SourceIn<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) media_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) data: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) url: Option<Cow<'a, str>>,
}

/// A tool definition; `type` absent or `custom` for client tools.
#[derive(Deserialize)]
pub(super) struct ToolIn<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) input_schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) cache_control: Option<&'a RawValue>,
}

/// `tool_choice`: `auto`, `any`, `none`, or `tool` with a `name`.
#[derive(Deserialize)]
pub(super) struct ToolChoiceIn<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) disable_parallel_tool_use: Option<bool>,
}
