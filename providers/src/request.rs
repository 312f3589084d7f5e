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
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    /// Answers asked for (`n`, default 1): each may cost `max_tokens`. A
    /// value that is not a positive whole number counts as 1 here and is
    /// left for the upstream to refuse.
    pub choices: u64,
    /// Byte range of the model's JSON string (quotes included) in the body.
    model_span: Range<usize>,
    /// Byte range of the `stream_options` value, if present.
    stream_options_span: Option<Range<usize>>,
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
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Deepest nesting of arrays and objects accepted (serde_json's own limit
/// for typed values; it skips unknown fields without one, so a body nested
/// 100,000 deep would otherwise pass through to the upstream).
const MAX_NESTING: usize = 128;

/// Whether `body` nests arrays and objects deeper than `limit`, brackets
/// inside strings aside. One pass over the bytes.
fn nested_deeper_than(body: &[u8], limit: usize) -> bool {
    // Fewer opening brackets than the limit cannot nest past it: counted
    // with memchr's vectorised search, this settles nearly every body
    // without the byte-by-byte walk below.
    let opening = memchr::memchr_iter(b'[', body).count() + memchr::memchr_iter(b'{', body).count();
    if opening <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn span_of(body: &[u8], raw: &RawValue) -> Range<usize> {
    // A RawValue borrowed from `body` lies inside it.
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
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
        if nested_deeper_than(body, MAX_NESTING) {
            return Err(ProviderError::MalformedJson {
                detail: format!("the JSON is nested deeper than {MAX_NESTING} levels"),
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
        let include_usage = match fields.stream_options.map(RawValue::get) {
            None | Some("null") => false,
            Some(raw) => {
                serde_json::from_str::<StreamOptions>(raw)
                    .map_err(|_| ProviderError::InvalidField {
                        field: "stream_options",
                        expected: "an object",
                    })?
                    .include_usage
                    == Some(true)
            }
        };
        Ok(RoutingFields {
            model,
            stream,
            max_tokens: fields.max_completion_tokens.or(fields.max_tokens),
            include_usage,
            choices: fields
                .n
                .and_then(|raw| raw.get().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(1),
            model_span: span_of(body, raw_model),
            stream_options_span: fields.stream_options.map(|raw| span_of(body, raw)),
        })
    }

    /// `body` with only its model renamed to `upstream_model` (by splicing,
    /// every other byte as the client sent it): a body in a client
    /// dialect's own shape going to an upstream that speaks that dialect.
    pub fn with_model(&self, body: &Bytes, upstream_model: &str) -> Bytes {
        if upstream_model == self.model {
            return body.clone();
        }
        // A `String` always serialises.
        let quoted = serde_json::to_string(upstream_model).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..self.model_span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[self.model_span.end..]);
        Bytes::from(out)
    }

    /// The body to send upstream, and whether sluice asked for usage on the
    /// client's behalf. Only two edits are ever made, each by splicing so
    /// every other byte stays as the client sent it: the model is renamed to
    /// `upstream_model`, and a stream that did not ask for usage gets
    /// `stream_options.include_usage: true` (so its tokens can be counted;
    /// the usage chunk is then dropped on the way back). With neither edit
    /// the body itself is returned, not copied.
    pub fn body_for_upstream(&self, body: &Bytes, upstream_model: &str) -> (Bytes, bool) {
        let mut edits: Vec<(Range<usize>, String)> = Vec::with_capacity(2);
        if upstream_model != self.model {
            // A `String` always serialises.
            let quoted = serde_json::to_string(upstream_model).unwrap_or_default();
            edits.push((self.model_span.clone(), quoted));
        }
        let ask_usage = self.stream && !self.include_usage;
        if ask_usage {
            match &self.stream_options_span {
                Some(span) => {
                    let mut options: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_slice(&body[span.clone()]).unwrap_or_default();
                    options.insert("include_usage".into(), serde_json::Value::Bool(true));
                    let text = serde_json::Value::Object(options).to_string();
                    edits.push((span.clone(), text));
                }
                None => {
                    // Just before the object's closing brace (parse proved it is there).
                    let close = body.iter().rposition(|b| *b == b'}').unwrap_or(body.len());
                    let empty = body[..close]
                        .iter()
                        .rev()
                        .find(|b| !b.is_ascii_whitespace())
                        == Some(&b'{');
                    let text = if empty { "" } else { "," };
                    edits.push((
                        close..close,
                        format!("{text}\"stream_options\":{{\"include_usage\":true}}"),
                    ));
                }
            }
        }
        if edits.is_empty() {
            return (body.clone(), false);
        }
        edits.sort_by_key(|(range, _)| range.start);
        let extra: usize = edits.iter().map(|(_, t)| t.len()).sum();
        let mut out = Vec::with_capacity(body.len() + extra);
        let mut at = 0;
        for (range, text) in edits {
            out.extend_from_slice(&body[at..range.start]);
            out.extend_from_slice(text.as_bytes());
            at = range.end;
        }
        out.extend_from_slice(&body[at..]);
        (Bytes::from(out), ask_usage)
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
        let choices = |body: &[u8]| RoutingFields::parse(body).unwrap().choices;
        assert_eq!(choices(br#"{"model":"m"}"#), 1);
        assert_eq!(choices(br#"{"model":"m","n":10000}"#), 10000);
        assert_eq!(choices(br#"{"model":"m","n":"2"}"#), 1);
        assert_eq!(choices(br#"{"model":"m","n":0}"#), 1);
    }

    #[test]
    fn rewrites_only_the_model_value() {
        let body = Bytes::from_static(
            br#"{ "model" : "fast", "messages":[{"content":"model \"fast\""}] }"#,
        );
        let f = RoutingFields::parse(&body).unwrap();
        let (out, asked) = f.body_for_upstream(&body, "llama/3 \"8b\"");
        assert!(!asked);
        assert_eq!(
            &out[..],
            br#"{ "model" : "llama/3 \"8b\"", "messages":[{"content":"model \"fast\""}] }"#
        );
        // Unchanged name: the very same bytes, no copy.
        let (same, _) = f.body_for_upstream(&body, "fast");
        assert_eq!(same.as_ptr(), body.as_ptr());
    }

    #[test]
    fn streams_are_asked_for_usage() {
        let upstream = |raw: &'static str| {
            let body = Bytes::from_static(raw.as_bytes());
            let f = RoutingFields::parse(&body).unwrap();
            let (out, asked) = f.body_for_upstream(&body, "up");
            (String::from_utf8(out.to_vec()).unwrap(), asked)
        };
        assert_eq!(
            upstream(r#"{"model":"m","stream":true}"#),
            (
                r#"{"model":"up","stream":true,"stream_options":{"include_usage":true}}"#
                    .to_string(),
                true
            )
        );
        assert_eq!(
            upstream(r#"{"stream":true,"stream_options":{"x":1},"model":"m"} "#),
            (
                r#"{"stream":true,"stream_options":{"include_usage":true,"x":1},"model":"up"} "#
                    .to_string(),
                true
            )
        );
        let (out, asked) =
            upstream(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(!asked);
        assert!(out.contains(r#""include_usage":true"#));
        assert_eq!(
            upstream(r#"{"model":"m"}"#),
            (r#"{"model":"up"}"#.to_string(), false)
        );
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

    #[test]
    fn deep_nesting_is_refused_but_brackets_in_strings_are_not_nesting() {
        let deep = format!(
            r#"{{"model":"m","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(
            RoutingFields::parse(deep.as_bytes()),
            Err(ProviderError::MalformedJson { .. })
        ));
        let text = format!(r#"{{"model":"m","x":"{}\\\"["}}"#, "[".repeat(500));
        assert_eq!(RoutingFields::parse(text.as_bytes()).unwrap().model, "m");
    }
}
