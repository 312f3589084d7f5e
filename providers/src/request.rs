//! Reading only what routing needs from an OpenAI request body.
//!
//! The body stays raw bytes; one pass of serde_json validates it and picks out
//! `model` and `stream` (every other field is skipped, not built). The model's
//! byte span is remembered so the name can be rewritten by splicing, leaving
//! every other byte exactly as the client sent it.

use crate::ProviderError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::ops::Range;

/// The fields of an OpenAI request body that sluice routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingFields {
    /// The client's `"model"`.
    pub model: String,
    /// `"stream": true` asks for server-sent events.
    pub stream: bool,
    /// `max_completion_tokens`, else `max_tokens`: the most the reply may cost.
    pub max_tokens: Option<u64>,
    /// Byte range of the model's JSON string (quotes included) in the body.
    model_span: Range<usize>,
}

#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

impl RoutingFields {
    /// Validates `body` as a JSON object and extracts the routing fields.
    pub fn parse(body: &[u8]) -> Result<Self, ProviderError> {
        // serde would also accept a JSON array for a struct; OpenAI bodies are objects.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ProviderError::MalformedJson {
                detail: "expected a JSON object".to_string(),
            });
        }
        let fields: Borrowed<'_> =
            serde_json::from_slice(body).map_err(|e| ProviderError::MalformedJson {
                detail: e.to_string(),
            })?;
        let raw_model = fields.model.ok_or(ProviderError::MissingModel)?;
        let model: String =
            serde_json::from_str(raw_model.get()).map_err(|_| ProviderError::InvalidField {
                field: "model",
                expected: "a string",
            })?;
        if model.is_empty() {
            return Err(ProviderError::MissingModel);
        }
        let stream = match fields.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ProviderError::InvalidField {
                    field: "stream",
                    expected: "a boolean",
                })
            }
        };
        // The RawValue borrows from `body`, so its address lies inside it.
        let start = raw_model.get().as_ptr() as usize - body.as_ptr() as usize;
        let model_span = start..start + raw_model.get().len();
        Ok(RoutingFields {
            model,
            stream,
            max_tokens: fields.max_completion_tokens.or(fields.max_tokens),
            model_span,
        })
    }

    /// The body to send upstream: `body` itself when the model name is
    /// unchanged (no copy), else `body` with only the model value replaced.
    pub fn body_for_model(&self, body: &Bytes, upstream_model: &str) -> Bytes {
        if upstream_model == self.model {
            return body.clone();
        }
        // A `String` always serialises; the fallback is unreachable but keeps
        // this path free of panics.
        let quoted = serde_json::to_string(upstream_model).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..self.model_span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[self.model_span.end..]);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_model_and_stream() {
        let f = RoutingFields::parse(
            br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true}"#,
        )
        .unwrap();
        assert_eq!(f.model, "gpt-4o");
        assert!(f.stream);
        let f = RoutingFields::parse(br#"{"model":"m","stream":null}"#).unwrap();
        assert!(!f.stream);
        assert_eq!(f.max_tokens, None);
        let f = RoutingFields::parse(br#"{"model":"m","max_tokens":50}"#).unwrap();
        assert_eq!(f.max_tokens, Some(50));
        let f = RoutingFields::parse(br#"{"model":"m","max_tokens":50,"max_completion_tokens":9}"#)
            .unwrap();
        assert_eq!(f.max_tokens, Some(9));
    }

    #[test]
    fn rewrites_only_the_model_value() {
        let body = Bytes::from_static(
            br#"{ "model" : "fast", "messages":[{"content":"model \"fast\""}] }"#,
        );
        let f = RoutingFields::parse(&body).unwrap();
        let out = f.body_for_model(&body, "llama/3 \"8b\"");
        assert_eq!(
            &out[..],
            br#"{ "model" : "llama/3 \"8b\"", "messages":[{"content":"model \"fast\""}] }"#
        );
        // Unchanged name: the very same bytes, no copy.
        let same = f.body_for_model(&body, "fast");
        assert_eq!(same.as_ptr(), body.as_ptr());
    }

    #[test]
    fn escaped_model_names_are_decoded() {
        let f = RoutingFields::parse(br#"{"model":"gpt\u002d4o"}"#).unwrap();
        assert_eq!(f.model, "gpt-4o");
    }

    #[test]
    fn refuses_bad_bodies() {
        assert!(matches!(
            RoutingFields::parse(b"{\"model\": \"x\""),
            Err(ProviderError::MalformedJson { .. })
        ));
        assert!(matches!(
            RoutingFields::parse(b"[1,2]"),
            Err(ProviderError::MalformedJson { .. })
        ));
        assert!(matches!(
            RoutingFields::parse(b""),
            Err(ProviderError::MalformedJson { .. })
        ));
        assert_eq!(
            RoutingFields::parse(b"{\"messages\":[]}"),
            Err(ProviderError::MissingModel)
        );
        assert_eq!(
            RoutingFields::parse(b"{\"model\":7}"),
            Err(ProviderError::InvalidField {
                field: "model",
                expected: "a string"
            })
        );
        assert_eq!(
            RoutingFields::parse(b"{\"model\":\"m\",\"stream\":\"yes\"}"),
            Err(ProviderError::InvalidField {
                field: "stream",
                expected: "a boolean"
            })
        );
    }
}
