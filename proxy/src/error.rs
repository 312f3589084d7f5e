//! The one mapping from a failed request to what the client sees.
//!
//! Every error becomes OpenAI's body `{"error": {"message", "type", "param",
//! "code"}}` with the status OpenAI would use. A stream that already sent its
//! headers gets the same body as an SSE `data:` event ([`GatewayError::sse_event`]),
//! so streamed and plain failures look alike to an SDK. Messages never carry
//! upstream text, addresses or credentials; the detail is logged once, by the
//! caller, at the boundary.

use bytes::Bytes;
use sluice_providers::ProviderError;

/// Why sluice answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request body was refused while routing (bad JSON, unknown model...).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The body exceeds `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client's body could not be read (it hung up or sent bad framing).
    #[error("could not read the request body")]
    BodyRead,
    /// No such endpoint.
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The upstream could not be reached, refused, or broke the exchange.
    #[error("upstream {upstream} failed: {cause}")]
    UpstreamUnavailable {
        /// Configured upstream name (safe to show: it is the operator's label).
        upstream: String,
        /// Short, fixed description of the failure class.
        cause: &'static str,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} timed out: {phase}")]
    UpstreamTimeout {
        /// Configured upstream name.
        upstream: String,
        /// Which timeout fired.
        phase: &'static str,
    },
}

impl GatewayError {
    /// The HTTP status OpenAI would use for this failure.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Provider(ProviderError::UnknownModel { .. })
            | GatewayError::Provider(ProviderError::MissingModel) => 404,
            GatewayError::Provider(_) | GatewayError::BodyRead => 400,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::UnknownRoute { .. } => 404,
            GatewayError::UpstreamUnavailable { .. } => 502,
            GatewayError::UpstreamTimeout { .. } => 504,
        }
    }

    /// A low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Provider(e) => e.kind(),
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::BodyRead => "body_read",
            GatewayError::UnknownRoute { .. } => "unknown_route",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.status() {
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            GatewayError::Provider(ProviderError::UnknownModel { .. })
            | GatewayError::Provider(ProviderError::MissingModel) => Some("model_not_found"),
            GatewayError::Provider(ProviderError::MalformedJson { .. }) => Some("invalid_json"),
            GatewayError::Provider(ProviderError::InvalidField { .. }) => Some("invalid_type"),
            GatewayError::BodyTooLarge { .. } => Some("request_too_large"),
            GatewayError::BodyRead => None,
            GatewayError::UnknownRoute { .. } => Some("unknown_url"),
            GatewayError::UpstreamUnavailable { .. } => Some("upstream_unavailable"),
            GatewayError::UpstreamTimeout { .. } => Some("upstream_timeout"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            GatewayError::Provider(ProviderError::UnknownModel { .. })
            | GatewayError::Provider(ProviderError::MissingModel) => Some("model"),
            GatewayError::Provider(ProviderError::InvalidField { field, .. }) => Some(field),
            _ => None,
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.openai_type(),
                "param": self.param(),
                "code": self.code(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The same body as an SSE event followed by `[DONE]`, for a stream whose
    /// headers are already sent; OpenAI's SDKs raise it as an `APIError`.
    pub fn sse_event(&self) -> Bytes {
        let body = self.body();
        let mut event = Vec::with_capacity(body.len() + 32);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        Bytes::from(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_openai_shape() {
        let e = GatewayError::Provider(ProviderError::UnknownModel { model: "x".into() });
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(e.status(), 404);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        let e = GatewayError::UpstreamTimeout {
            upstream: "u".into(),
            phase: "first byte",
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            (e.status(), v["error"]["type"].as_str()),
            (504, Some("server_error"))
        );
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn sse_event_carries_the_same_body() {
        let e = GatewayError::UpstreamUnavailable {
            upstream: "u".into(),
            cause: "reset",
        };
        let event = e.sse_event();
        let text = std::str::from_utf8(&event).unwrap();
        let data = text
            .strip_prefix("data: ")
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        assert_eq!(data.as_bytes(), &e.body()[..]);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
