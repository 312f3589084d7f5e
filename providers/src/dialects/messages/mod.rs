//! Anthropic's Messages API as a client dialect: clients of the Anthropic
//! SDK call `POST /v1/messages`, and every upstream that is not Anthropic's
//! own is reached through the chat-completions hub.
//!
//! The way in is [`to_chat`] (and [`count_tokens_to_chat`] for
//! `/v1/messages/count_tokens`), in `request.rs`. The way back is a
//! [`MessagesWriter`] (in `stream.rs`) fed the OpenAI-shaped reply as it
//! arrives: a whole `chat.completion` body becomes one Message (built in
//! `reply.rs`), a `chat.completion.chunk` stream becomes Anthropic's event
//! sequence. Errors, whole or mid-stream, go through [`error_body`] and
//! [`error_event`], so both carry the same type for the same status.
//!
//! Prompt-cache markers (`cache_control`) travel on the chat body's text
//! and image parts and tool definitions, where the Anthropic and Bedrock
//! adapters read them.

mod chat_body;
mod events;
mod messages_body;
mod reply;
mod request;
mod stream;

pub use request::{count_tokens_to_chat, to_chat};
pub use stream::MessagesWriter;

use bytes::Bytes;
use serde::Serialize;

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        // 400 and the other client errors.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The status an OpenAI-shaped error (its `type` and `code`, as OpenAI
/// and sluice's own translated errors write them) stands for, when only
/// the body is known (a mid-stream error event, a whole error body).
fn status_of_openai_error(kind: Option<&str>, code: Option<&str>) -> u16 {
    match (kind, code) {
        (_, Some("rate_limit_exceeded"))
        | (Some("requests" | "tokens" | "rate_limit_error"), _) => 429,
        (_, Some("insufficient_quota")) | (Some("insufficient_quota"), _) => 429,
        (_, Some("upstream_overloaded")) | (Some("overloaded_error"), _) => 503,
        (_, Some("request_too_large")) => 413,
        (_, Some("model_not_found")) | (Some("not_found_error"), _) => 404,
        (_, Some("invalid_api_key")) | (Some("authentication_error"), _) => 401,
        (Some("permission_error"), _) => 403,
        (Some("invalid_request_error"), _) => 400,
        _ => 500,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

fn error_json(status: u16, message: &str) -> Vec<u8> {
    let body = ErrorBody {
        kind: "error",
        error: ErrorDetail {
            kind: error_type(status),
            message,
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Anthropic's error body for an HTTP status and message:
/// `{"type":"error","error":{"type":..,"message":..}}`, the type being the
/// one Anthropic uses for that status (400 `invalid_request_error`, 401
/// `authentication_error`, 403 `permission_error`, 404 `not_found_error`,
/// 413 `request_too_large`, 429 `rate_limit_error`, 503/529
/// `overloaded_error`, other 5xx `api_error`).
pub fn error_body(status: u16, message: &str) -> Bytes {
    Bytes::from(error_json(status, message))
}

/// The same error as the SSE event that ends a stream:
/// `event: error\ndata: {...}\n\n`.
pub fn error_event(status: u16, message: &str) -> Bytes {
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(&error_json(status, message));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn error_types_follow_anthropic_by_status() {
        let cases = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (529, "overloaded_error"),
        ];
        for (status, kind) in cases {
            let v: Value = serde_json::from_slice(&error_body(status, "no \"way\"")).unwrap();
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": kind, "message": "no \"way\""}}),
                "{status}"
            );
        }
    }

    #[test]
    fn the_stream_error_event_carries_the_same_body() {
        let event = error_event(429, "slow down");
        let text = std::str::from_utf8(&event).unwrap();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|d| d.strip_suffix("\n\n"))
            .unwrap();
        assert_eq!(data.as_bytes(), &error_body(429, "slow down")[..]);
    }

    #[test]
    fn openai_error_types_map_to_statuses() {
        assert_eq!(status_of_openai_error(Some("requests"), None), 429);
        assert_eq!(
            status_of_openai_error(Some("server_error"), Some("upstream_overloaded")),
            503
        );
        assert_eq!(
            status_of_openai_error(Some("invalid_request_error"), Some("model_not_found")),
            404
        );
        assert_eq!(
            status_of_openai_error(Some("invalid_request_error"), None),
            400
        );
        assert_eq!(status_of_openai_error(None, None), 500);
    }
}
