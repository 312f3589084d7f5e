//! The OpenAI request side of translation: a chat (or embeddings) request
//! read once, borrowing from the body, for adapters that must rebuild it in
//! another provider's format.
//!
//! Only the fields some provider can express are read; the rest (`n`,
//! `logprobs`, `seed`, `response_format`, ...) are ignored by translating
//! adapters. Content kinds no provider here accepts (audio, files) are
//! refused with [`ProviderError::Unsupported`] rather than dropped silently.
//!
//! Prompt-cache markers (`cache_control`, Anthropic's shape, as LiteLLM and
//! sluice's Messages dialect put them in a chat body) are read on text and
//! image parts, on tool definitions and on a whole message (meaning: after
//! the message's last block). They are kept as parsed JSON, not raw, since
//! parts are a serde-tagged enum, through which raw JSON cannot pass.

use crate::ProviderError;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// Serialises a translated request body.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(value).map_err(|e| ProviderError::Unsupported {
        detail: e.to_string(),
    })
}

/// `POST /v1/chat/completions`, as far as translation needs it.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(borrow, default)]
    pub stop: Option<Stop<'a>>,
    #[serde(borrow, default)]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default)]
    pub tool_choice: Option<ToolChoice<'a>>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(borrow, default)]
    pub user: Option<Cow<'a, str>>,
}

impl<'a> ChatRequest<'a> {
    /// Reads a chat request body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ProviderError> {
        serde_json::from_slice(body).map_err(|e| ProviderError::MalformedJson {
            detail: e.to_string(),
        })
    }

    /// `max_completion_tokens`, else `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The stop sequences as a list (possibly empty).
    pub fn stop_sequences(&self) -> Vec<&str> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.as_ref()],
            Some(Stop::Many(v)) => v.iter().map(|s| s.as_ref()).collect(),
        }
    }

    /// The tool definitions (empty when none were sent).
    pub fn tools(&self) -> &[Tool<'a>] {
        self.tools.as_deref().unwrap_or(&[])
    }

    /// The function name an OpenAI `tool_call_id` refers to, found in the
    /// assistant turns of this request (Gemini answers by name, not id).
    pub fn tool_name_for(&self, id: &str) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.tool_calls())
            .find(|c| c.id == id)
            .map(|c| c.function.name.as_ref())
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

/// Who speaks in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    User,
    Assistant,
    Tool,
    /// Legacy function results; treated like `tool`.
    Function,
}

/// One message of `messages`.
#[derive(Debug, Deserialize)]
pub(crate) struct Message<'a> {
    pub role: Role,
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    pub tool_call_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// A prompt-cache marker on the whole message: applies after its last
    /// block (content, tool call or tool result).
    #[serde(default)]
    pub cache_control: Option<Value>,
}

impl<'a> Message<'a> {
    /// The assistant's tool calls (empty for other roles).
    pub fn tool_calls(&self) -> &[ToolCall<'a>] {
        self.tool_calls.as_deref().unwrap_or(&[])
    }

    /// The content as parts, a plain string being one text part.
    pub fn parts(&self) -> Vec<PartRef<'_>> {
        self.marked_parts().into_iter().map(|(p, _)| p).collect()
    }

    /// The content as parts, each with its own prompt-cache marker (the
    /// message's own marker, [`Message::cache_control`], is not included).
    pub fn marked_parts(&self) -> Vec<(PartRef<'_>, Option<&Value>)> {
        match &self.content {
            None => Vec::new(),
            Some(Content::Text(t)) => vec![(PartRef::Text(t), None)],
            Some(Content::Parts(parts)) => parts
                .iter()
                .map(|p| match p {
                    Part::Text {
                        text,
                        cache_control,
                    } => (PartRef::Text(text), cache_control.as_ref()),
                    Part::ImageUrl {
                        image_url,
                        cache_control,
                    } => (PartRef::Image(&image_url.url), cache_control.as_ref()),
                    Part::Refusal { refusal } => (PartRef::Text(refusal), None),
                    Part::Other => (PartRef::Unsupported, None),
                })
                .collect(),
        }
    }

    /// The non-empty text parts of a system message (anything but text
    /// refused), for providers that take system instructions as text
    /// blocks; each with its prompt-cache marker, the message's own marker
    /// going on the last text.
    pub fn marked_system_texts(&self) -> Result<Vec<(&str, Option<&Value>)>, ProviderError> {
        let mut texts = Vec::new();
        for (part, mark) in self.marked_parts() {
            match part {
                PartRef::Text("") => {}
                PartRef::Text(t) => texts.push((t, mark)),
                PartRef::Image(_) | PartRef::Unsupported => {
                    return Err(ProviderError::Unsupported {
                        detail: "system messages must be text".into(),
                    })
                }
            }
        }
        if let (Some(mark), Some(last)) = (&self.cache_control, texts.last_mut()) {
            last.1.get_or_insert(mark);
        }
        Ok(texts)
    }

    /// The id of the tool call a `tool` (or legacy `function`) message
    /// answers: `tool_call_id`, else `name`, else empty.
    pub fn answered_call_id(&self) -> &str {
        self.tool_call_id
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or_default()
    }

    /// The text of the message, parts joined (images etc. refused).
    pub fn text(&self) -> Result<String, ProviderError> {
        let mut out = String::new();
        for part in self.parts() {
            match part {
                PartRef::Text(t) => out.push_str(t),
                PartRef::Image(_) | PartRef::Unsupported => {
                    return Err(ProviderError::Unsupported {
                        detail: "only text content is accepted in this message role".into(),
                    })
                }
            }
        }
        Ok(out)
    }
}

/// `content`: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

/// One content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Part<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ImageUrl {
        #[serde(borrow)]
        image_url: ImageUrl<'a>,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    Refusal {
        #[serde(borrow)]
        refusal: Cow<'a, str>,
    },
    /// `input_audio`, `file`, ...: no translating provider takes them.
    #[serde(other)]
    Other,
}

/// `image_url.url`: an `https:` URL or a `data:` URL.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

/// A content part, borrowed and flattened.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PartRef<'m> {
    Text(&'m str),
    Image(&'m str),
    Unsupported,
}

/// An image reference, decoded from an OpenAI `image_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Image<'m> {
    /// Inline bytes: media type and the base64 text (not decoded: every
    /// provider here takes base64 too).
    Base64 { media_type: &'m str, data: &'m str },
    /// A URL the provider fetches itself.
    Url(&'m str),
}

impl<'m> Image<'m> {
    /// Reads `data:<mime>;base64,<data>` or an `http(s)` URL.
    pub fn parse(url: &'m str) -> Result<Self, ProviderError> {
        if let Some(rest) = url.strip_prefix("data:") {
            let (meta, data) = rest.split_once(',').ok_or_else(bad_image)?;
            let media_type = meta.strip_suffix(";base64").ok_or_else(bad_image)?;
            return Ok(Image::Base64 { media_type, data });
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(Image::Url(url));
        }
        Err(bad_image())
    }
}

fn bad_image() -> ProviderError {
    ProviderError::Unsupported {
        detail: "image_url must be an http(s) URL or a base64 data: URL".into(),
    }
}

/// An assistant's tool call.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

/// The function half of a tool call; `arguments` is JSON text.
#[derive(Debug, Deserialize)]
pub(crate) struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub arguments: Cow<'a, str>,
}

impl FunctionCall<'_> {
    /// The arguments as a JSON object (`{}` when empty), for providers that
    /// want an object rather than text.
    pub fn arguments_object(&self) -> Result<Box<RawValue>, ProviderError> {
        let text = self.arguments.trim();
        let text = if text.is_empty() { "{}" } else { text };
        let raw =
            RawValue::from_string(text.to_string()).map_err(|_| ProviderError::Unsupported {
                detail: format!("tool call arguments of '{}' are not valid JSON", self.name),
            })?;
        if !raw.get().starts_with('{') {
            return Err(ProviderError::Unsupported {
                detail: format!(
                    "tool call arguments of '{}' must be a JSON object",
                    self.name
                ),
            });
        }
        Ok(raw)
    }
}

/// A tool definition.
#[derive(Debug, Deserialize)]
pub(crate) struct Tool<'a> {
    #[serde(borrow)]
    pub function: FunctionDef<'a>,
    /// A prompt-cache marker after this tool's definition (beside
    /// `function`, as Anthropic's Messages API and LiteLLM put it).
    #[serde(default)]
    pub cache_control: Option<Value>,
}

/// A function the model may call.
#[derive(Debug, Deserialize)]
pub(crate) struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub parameters: Option<&'a RawValue>,
}

/// The JSON schema used when a tool declares no parameters.
pub(crate) const EMPTY_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

/// [`EMPTY_SCHEMA`] as raw JSON, for providers that require a schema.
pub(crate) fn empty_schema() -> Result<&'static RawValue, ProviderError> {
    // A constant that parses; the error arm is unreachable in practice.
    serde_json::from_str(EMPTY_SCHEMA).map_err(|e| ProviderError::Unsupported {
        detail: e.to_string(),
    })
}

/// `tool_choice`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ToolChoice<'a> {
    /// `"none"`, `"auto"`, `"required"`.
    Mode(#[serde(borrow)] Cow<'a, str>),
    /// `{"type":"function","function":{"name":...}}`.
    Named {
        #[serde(borrow)]
        function: NamedFunction<'a>,
    },
}

/// The function a named `tool_choice` forces.
#[derive(Debug, Deserialize)]
pub(crate) struct NamedFunction<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// What `tool_choice` asks for, provider-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolMode<'m> {
    Auto,
    None,
    Required,
    Function(&'m str),
}

impl ToolChoice<'_> {
    /// The neutral form; unknown modes are refused.
    pub fn mode(&self) -> Result<ToolMode<'_>, ProviderError> {
        match self {
            ToolChoice::Mode(m) => match m.as_ref() {
                "auto" => Ok(ToolMode::Auto),
                "none" => Ok(ToolMode::None),
                "required" => Ok(ToolMode::Required),
                _ => Err(ProviderError::InvalidField {
                    field: "tool_choice",
                    expected: "\"none\", \"auto\", \"required\" or a named function",
                }),
            },
            ToolChoice::Named { function } => Ok(ToolMode::Function(&function.name)),
        }
    }
}

/// `POST /v1/embeddings`: the inputs, as text.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    pub input: EmbeddingInput<'a>,
    #[serde(default)]
    pub dimensions: Option<u64>,
}

/// `input`: a string or a list of strings (token arrays are refused).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum EmbeddingInput<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl<'a> EmbeddingsRequest<'a> {
    /// Reads an embeddings request body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ProviderError> {
        serde_json::from_slice(body).map_err(|_| ProviderError::InvalidField {
            field: "input",
            expected: "a string or an array of strings",
        })
    }

    /// The inputs as a list.
    pub fn inputs(&self) -> Vec<&str> {
        match &self.input {
            EmbeddingInput::One(s) => vec![s.as_ref()],
            EmbeddingInput::Many(v) => v.iter().map(|s| s.as_ref()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_chat_request() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"42"}],
            "stop":"END","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":{"type":"function","function":{"name":"f"}},"max_tokens":9}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.stop_sequences(), ["END"]);
        assert_eq!(r.max_output_tokens(), Some(9));
        assert_eq!(r.tool_name_for("call_1"), Some("f"));
        assert_eq!(
            r.tool_choice.as_ref().unwrap().mode().unwrap(),
            ToolMode::Function("f")
        );
        let parts = r.messages[1].parts();
        let PartRef::Image(url) = parts[1] else {
            panic!("expected an image")
        };
        assert_eq!(
            Image::parse(url).unwrap(),
            Image::Base64 {
                media_type: "image/png",
                data: "AAAA"
            }
        );
        let args = r.messages[2].tool_calls()[0]
            .function
            .arguments_object()
            .unwrap();
        assert_eq!(args.get(), r#"{"a":1}"#);
        assert_eq!(r.messages[3].text().unwrap(), "42");
    }

    #[test]
    fn refuses_what_cannot_be_translated() {
        assert!(Image::parse("ftp://x").is_err());
        let f = FunctionCall {
            name: "f".into(),
            arguments: "[1]".into(),
        };
        assert!(f.arguments_object().is_err());
        let empty = FunctionCall {
            name: "f".into(),
            arguments: "".into(),
        };
        assert_eq!(empty.arguments_object().unwrap().get(), "{}");
        let r = ChatRequest::parse(
            br#"{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#,
        )
        .unwrap();
        assert!(r.messages[0].text().is_err());
    }
}
