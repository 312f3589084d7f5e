//! OpenAI's Responses API (`POST /v1/responses`) as a client dialect.
//!
//! Start at [`ResponsesRequest::parse`]: the gateway reads what it needs to
//! route and store a request (model, stream, store, `previous_response_id`,
//! the input as items). For an OpenAI-compatible upstream the body passes
//! through untouched and [`ResponsesUsage`] reads usage from the reply. For
//! every other upstream [`to_chat`] turns the request (with the stored items
//! of earlier turns) into a chat-completions request, the hub shape every
//! adapter reads, and [`ResponsesWriter`] rewrites the chat reply — a whole
//! `chat.completion` or its `chat.completion.chunk` stream — into a Response
//! object or the Responses event stream.
//!
//! Files: `request.rs` (parsing and [`to_chat`]), `reply.rs` (the Response
//! object and its items, shared by whole and streamed replies), `stream.rs`
//! (the event stream), `usage.rs` ([`ResponsesUsage`]).

mod reply;
mod request;
mod stream;
mod usage;

pub use reply::error_event;
pub use request::to_chat;
pub use stream::ResponsesWriter;
pub use usage::ResponsesUsage;

use crate::ProviderError;
use serde_json::{Map, Value};

/// What the gateway needs from a Responses request before converting it,
/// read once from the client's body by [`ResponsesRequest::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    /// The model the client asked for.
    pub model: String,
    /// Whether the client asked for the event stream (`stream: true`).
    pub stream: bool,
    /// Whether the client wants the response stored for a later
    /// `previous_response_id` (`store`, default `true`).
    pub store: bool,
    /// The earlier response this one continues, if any.
    pub previous_response_id: Option<String>,
    /// The request's `input` as items: a string becomes one user message
    /// item; a list is kept as sent.
    pub input_items: Vec<Value>,
    /// The system instructions of this request (never carried over from an
    /// earlier response).
    pub instructions: Option<String>,
    /// The request fields a Response object echoes back (`tools`,
    /// `tool_choice`, `temperature`, ...), with the API's defaults filled in.
    echo: Map<String, Value>,
}

impl ResponsesRequest {
    /// Reads a Responses request body. Fails with
    /// [`ProviderError::MalformedJson`] when it is not a JSON object,
    /// [`ProviderError::MissingModel`] without a model, and
    /// [`ProviderError::InvalidField`] when a field read here has the wrong
    /// type.
    pub fn parse(body: &[u8]) -> Result<Self, ProviderError> {
        let object = request::parse_object(body)?;
        Self::from_object(&object)
    }

    /// Reads the fields from an already parsed body.
    fn from_object(object: &Map<String, Value>) -> Result<Self, ProviderError> {
        let model = match object.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(ProviderError::MissingModel)
            }
            Some(_) => {
                return Err(ProviderError::InvalidField {
                    field: "model",
                    expected: "a string",
                })
            }
        };
        Ok(ResponsesRequest {
            model,
            stream: optional_bool(object, "stream")?.unwrap_or(false),
            store: optional_bool(object, "store")?.unwrap_or(true),
            previous_response_id: optional_string(object, "previous_response_id")?,
            input_items: request::input_items(object.get("input"))?,
            instructions: optional_string(object, "instructions")?,
            echo: reply::echoed_fields(object),
        })
    }

    /// The request fields a Response object carries back.
    fn echo(&self) -> &Map<String, Value> {
        &self.echo
    }
}

/// A boolean field, absent or `null` as `None`.
fn optional_bool(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<bool>, ProviderError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ProviderError::InvalidField {
            field,
            expected: "a boolean",
        }),
    }
}

/// A string field, absent or `null` as `None`.
fn optional_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ProviderError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProviderError::InvalidField {
            field,
            expected: "a string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_string_input_becomes_one_user_message_item() {
        let r = ResponsesRequest::parse(br#"{"model":"m","input":"hi","instructions":"be brief"}"#)
            .unwrap();
        assert_eq!(r.model, "m");
        assert!(!r.stream);
        assert!(r.store);
        assert_eq!(r.previous_response_id, None);
        assert_eq!(r.instructions.as_deref(), Some("be brief"));
        assert_eq!(
            r.input_items,
            vec![json!({"type":"message","role":"user","content":"hi"})]
        );
    }

    #[test]
    fn reads_stream_store_and_previous_response_id() {
        let r = ResponsesRequest::parse(
            br#"{"model":"m","input":[{"role":"user","content":"x"}],"stream":true,"store":false,"previous_response_id":"resp_1"}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert!(!r.store);
        assert_eq!(r.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(r.input_items.len(), 1);
    }

    #[test]
    fn refuses_a_missing_model_and_wrong_types() {
        assert_eq!(
            ResponsesRequest::parse(br#"{"input":"x"}"#),
            Err(ProviderError::MissingModel)
        );
        assert_eq!(
            ResponsesRequest::parse(br#"{"model":"m","stream":"yes"}"#),
            Err(ProviderError::InvalidField {
                field: "stream",
                expected: "a boolean"
            })
        );
        assert!(matches!(
            ResponsesRequest::parse(b"[1]"),
            Err(ProviderError::MalformedJson { .. })
        ));
    }
}
