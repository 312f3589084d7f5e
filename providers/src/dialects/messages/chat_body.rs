//! The chat-completions body [`super::to_chat`] writes, borrowing from the
//! Messages request it is built from. `cache_control` rides on text and
//! image parts and on tool definitions (outside `function`), where the
//! Anthropic and Bedrock adapters read it; OpenAI-compatible upstreams
//! ignore the unknown field.

use serde::Serialize;
use serde_json::value::RawValue;

/// The chat-completions body sent on to the adapters.
#[derive(Serialize)]
pub(super) struct ChatBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<&'a str>,
    pub(super) messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<ChatTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<ChatToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parallel_tool_calls: Option<bool>,
}

/// `stream_options`: usage is always asked for, so the stream can report it.
#[derive(Serialize)]
pub(super) struct StreamOptions {
    pub(super) include_usage: bool,
}

/// One chat message, tagged by `role`.
#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub(super) enum ChatMessage<'a> {
    System {
        content: ChatContent<'a>,
    },
    User {
        content: ChatContent<'a>,
    },
    Assistant {
        /// `null` when the turn is only tool calls.
        content: Option<ChatContent<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ChatToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
        /// A `tool_result` block's marker, on the whole message (which the
        /// adapters apply after the tool result).
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
}

/// `content`: a string or a list of parts.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum ChatContent<'a> {
    Text(&'a str),
    Parts(Vec<ChatPart<'a>>),
}

/// One content part, with its prompt-cache marker.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ChatPart<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    ImageUrl {
        image_url: ChatImageUrl,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
}

/// `image_url`: an `https:` or a `data:` URL.
#[derive(Serialize)]
pub(super) struct ChatImageUrl {
    pub(super) url: String,
}

/// A tool definition.
/// One of an assistant message's `tool_calls`.
#[derive(Serialize)]
pub(super) struct ChatToolCall<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: ChatFunctionCall<'a>,
}

/// A tool call's function; `arguments` is the input object as JSON text.
#[derive(Serialize)]
pub(super) struct ChatFunctionCall<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: &'a str,
}

#[derive(Serialize)]
pub(super) struct ChatTool<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: ChatFunctionDef<'a>,
    /// Not OpenAI's: the prompt-cache marker, read by the Anthropic and
    /// Bedrock adapters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cache_control: Option<&'a RawValue>,
}

/// A tool definition's function; `parameters` is the input schema.
#[derive(Serialize)]
pub(super) struct ChatFunctionDef<'a> {
    pub(super) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parameters: Option<&'a RawValue>,
}

/// `tool_choice`: a mode, or a named function.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum ChatToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: ChatNamedFunction<'a>,
    },
}

/// The function a named `tool_choice` forces.
#[derive(Serialize)]
pub(super) struct ChatNamedFunction<'a> {
    pub(super) name: &'a str,
}
