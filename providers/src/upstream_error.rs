//! A provider's error reply, classified and re-worded in OpenAI's shape.
//!
//! Every adapter reads its provider's error body into an [`UpstreamError`]:
//! a [`UpstreamErrorKind`] (which fixes the status and OpenAI `type`/`code`)
//! and a message. Messages of client-caused errors (bad request, not found,
//! too large, rate limited) are the provider's own words, so the caller can
//! fix the request; credential, server and overload errors get a fixed
//! message, so nothing about sluice's provider account (let alone its key)
//! reaches the client.

use bytes::Bytes;
use serde::Serialize;

/// What went wrong upstream, in the terms OpenAI clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The request was refused as invalid (400).
    BadRequest,
    /// The provider refused sluice's credentials (502: the gateway's fault, not the caller's).
    Auth,
    /// The model or resource does not exist upstream (404).
    NotFound,
    /// The request is too large for the provider (413).
    TooLarge,
    /// The provider rate-limited sluice (429).
    RateLimited,
    /// The provider is overloaded or unavailable (503).
    Overloaded,
    /// The provider failed (502).
    Server,
    /// The provider timed out (504).
    Timeout,
}

impl UpstreamErrorKind {
    /// Classifies a bare HTTP status (used when the body says nothing better).
    pub fn from_status(status: u16) -> Self {
        match status {
            401 | 403 => UpstreamErrorKind::Auth,
            404 => UpstreamErrorKind::NotFound,
            408 | 504 => UpstreamErrorKind::Timeout,
            413 => UpstreamErrorKind::TooLarge,
            429 => UpstreamErrorKind::RateLimited,
            503 | 529 => UpstreamErrorKind::Overloaded,
            400..=499 => UpstreamErrorKind::BadRequest,
            _ => UpstreamErrorKind::Server,
        }
    }

    /// The HTTP status sluice answers with.
    pub fn status(self) -> u16 {
        match self {
            UpstreamErrorKind::BadRequest => 400,
            UpstreamErrorKind::Auth | UpstreamErrorKind::Server => 502,
            UpstreamErrorKind::NotFound => 404,
            UpstreamErrorKind::TooLarge => 413,
            UpstreamErrorKind::RateLimited => 429,
            UpstreamErrorKind::Overloaded => 503,
            UpstreamErrorKind::Timeout => 504,
        }
    }

    /// OpenAI's `error.type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            UpstreamErrorKind::BadRequest
            | UpstreamErrorKind::NotFound
            | UpstreamErrorKind::TooLarge => "invalid_request_error",
            UpstreamErrorKind::RateLimited => "requests",
            UpstreamErrorKind::Auth
            | UpstreamErrorKind::Overloaded
            | UpstreamErrorKind::Server
            | UpstreamErrorKind::Timeout => "server_error",
        }
    }

    /// OpenAI's `error.code`; also a low-cardinality label for metrics.
    pub fn code(self) -> &'static str {
        match self {
            UpstreamErrorKind::BadRequest => "upstream_bad_request",
            UpstreamErrorKind::Auth => "upstream_auth_failed",
            UpstreamErrorKind::NotFound => "model_not_found",
            UpstreamErrorKind::TooLarge => "request_too_large",
            UpstreamErrorKind::RateLimited => "rate_limit_exceeded",
            UpstreamErrorKind::Overloaded => "upstream_overloaded",
            UpstreamErrorKind::Server => "upstream_error",
            UpstreamErrorKind::Timeout => "upstream_timeout",
        }
    }

    /// Whether the provider's own message may be shown to the client.
    fn keeps_message(self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::BadRequest
                | UpstreamErrorKind::NotFound
                | UpstreamErrorKind::TooLarge
                | UpstreamErrorKind::RateLimited
        )
    }

    /// The fixed message for kinds whose provider message is not shown.
    fn generic_message(self) -> &'static str {
        match self {
            UpstreamErrorKind::Auth => {
                "The upstream provider rejected the gateway's credentials. Contact the gateway operator."
            }
            UpstreamErrorKind::Overloaded => "The upstream provider is overloaded. Please retry.",
            UpstreamErrorKind::Timeout => "The upstream provider timed out.",
            _ => "The upstream provider returned an error.",
        }
    }
}

/// A provider error, ready to become an OpenAI error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// Its class; fixes status, type and code.
    pub kind: UpstreamErrorKind,
    /// What the client is told (already stripped of anything secret).
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// Longest provider message passed on.
const MAX_MESSAGE: usize = 1024;

impl UpstreamError {
    /// Builds the error; `provider_message` is kept only for client-caused
    /// kinds (and cut to a sane length), otherwise a fixed message is used.
    pub fn new(kind: UpstreamErrorKind, provider_message: Option<&str>) -> Self {
        let message = match provider_message {
            Some(m) if kind.keeps_message() && !m.is_empty() => {
                let mut end = m.len().min(MAX_MESSAGE);
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                m[..end].to_string()
            }
            _ => kind.generic_message().to_string(),
        };
        UpstreamError { kind, message }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// `{"error":{"message","type","param","code"}}`.
    pub fn openai_body(&self) -> Bytes {
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind.openai_type(),
                param: None,
                code: self.kind.code(),
            },
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The same body as one SSE event, for an error that arrives mid-stream.
    pub fn sse_event(&self) -> Bytes {
        let body = self.openai_body();
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    /// Reads an error reply in OpenAI's own shape (`{"error":{"message":..}}`,
    /// from OpenAI-compatible and Azure upstreams), classified by `status`.
    pub(crate) fn from_openai_body(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct E {
            error: Option<M>,
        }
        #[derive(serde::Deserialize)]
        struct M {
            message: Option<String>,
        }
        let message = serde_json::from_slice::<E>(body)
            .ok()
            .and_then(|e| e.error)
            .and_then(|m| m.message);
        UpstreamError::new(UpstreamErrorKind::from_status(status), message.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_as_documented() {
        let cases = [
            (400, 400),
            (401, 502),
            (403, 502),
            (404, 404),
            (413, 413),
            (422, 400),
            (429, 429),
            (500, 502),
            (503, 503),
            (529, 503),
            (504, 504),
        ];
        for (upstream, ours) in cases {
            assert_eq!(UpstreamErrorKind::from_status(upstream).status(), ours);
        }
    }

    #[test]
    fn auth_messages_are_generic_and_bodies_openai_shaped() {
        let e = UpstreamError::new(
            UpstreamErrorKind::Auth,
            Some("invalid x-api-key sk-ant-secret"),
        );
        let body: serde_json::Value = serde_json::from_slice(&e.openai_body()).unwrap();
        assert!(!body.to_string().contains("sk-ant"));
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], "upstream_auth_failed");
        assert!(body["error"]["param"].is_null());
        let e = UpstreamError::new(UpstreamErrorKind::BadRequest, Some("max_tokens: too big"));
        assert_eq!(e.message, "max_tokens: too big");
        assert!(e.sse_event().starts_with(b"data: {\"error\""));
    }
}
