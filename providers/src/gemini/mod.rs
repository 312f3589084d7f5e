//! Google Gemini (Generative Language API): `POST {base}/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` and `:batchEmbedContents`, base defaulting
//! to `https://generativelanguage.googleapis.com/v1beta`; key in `x-goog-api-key`.
//!
//! Requests (`request.rs`): `assistant` turns become `model` turns,
//! `system`/`developer` messages the `systemInstruction`, tools
//! `functionDeclarations` (their `parameters` passed as given: Gemini
//! accepts an OpenAPI subset of JSON Schema), tool results
//! `functionResponse` parts named after the call they answer (looked up by
//! `tool_call_id` in the request's assistant turns; a result that is not a
//! JSON object is wrapped as `{"content": text}`). Image URLs go as
//! `fileData` (Gemini fetches only URLs it supports), data URLs as
//! `inlineData`.
//!
//! Replies (`response.rs`, `stream.rs`): Gemini gives calls no ids, so
//! sluice makes them (`call_...`). `thought` parts are dropped. A `STOP`
//! with function calls is `tool_calls`; safety-like finish reasons and a
//! blocked prompt are `content_filter`. Usage: prompt = `promptTokenCount`
//! (cached included), completion = `candidatesTokenCount` +
//! `thoughtsTokenCount` (OpenAI counts reasoning as completion), cached =
//! `cachedContentTokenCount`.

mod request;
mod response;
mod stream;

use crate::chat::{to_json, ChatRequest, EmbeddingsRequest};
use crate::wire::{
    encode_segment, Base, ReplyContext, ReplyFormat, ResponseTranslator, StreamFormat,
    UpstreamRequest, WireFormat,
};
use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::Bytes;
use sluice_config::UpstreamSettings;

/// How Gemini replies are read.
const REPLY: ReplyFormat = ReplyFormat {
    whole: response::response,
    error: response::error,
    stream: StreamFormat::Sse(stream::on_event),
};

/// A Gemini upstream.
#[derive(Debug, Clone)]
pub struct Gemini {
    base: Base,
}

impl Gemini {
    /// Builds the adapter: `x-goog-api-key` from `api_key`.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut base = Base::new(settings, Some(("x-goog-api-key", "")));
        base.push_static("content-type", "application/json");
        Gemini { base }
    }

    /// The path (with query) and body for one request.
    fn request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        stream: bool,
        model: &str,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let at = format!("{}/models/{}", self.base.path_prefix, encode_segment(model));
        match endpoint {
            Endpoint::ChatCompletions => {
                let chat = ChatRequest::parse(body)?;
                let req = request::to_generate(&chat)?;
                let path = if stream {
                    format!("{at}:streamGenerateContent?alt=sse")
                } else {
                    format!("{at}:generateContent")
                };
                Ok((path, to_json(&req)?))
            }
            Endpoint::Embeddings => {
                let e = EmbeddingsRequest::parse(body)?;
                let name = format!("models/{model}");
                let req = request::to_batch_embed(&e, &name);
                Ok((format!("{at}:batchEmbedContents"), to_json(&req)?))
            }
            Endpoint::Completions => Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint.label(),
            }),
        }
    }
}

impl WireFormat for Gemini {
    fn label(&self) -> &'static str {
        "gemini"
    }

    fn host_header(&self) -> &str {
        &self.base.host_header
    }

    fn build_request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (path, out) = self.request(endpoint, body, fields.stream, upstream_model)?;
        Ok(UpstreamRequest::translated(
            endpoint,
            fields,
            upstream_model,
            path,
            self.base.headers.clone(),
            out,
        ))
    }

    fn response_translator(&self, reply: &ReplyContext, status: u16) -> ResponseTranslator {
        ResponseTranslator::translated(reply, status, REPLY)
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> UpstreamError {
        response::error(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::response::response;
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn embeddings_go_as_batch_embed_contents() {
        let config = sluice_config::load_str(
            "upstreams:\n  g: {base_url: 'https://generativelanguage.googleapis.com/v1beta', api_key: k}\n",
            &|_| None,
        )
        .unwrap();
        let g = Gemini::new(&config.upstreams[0]);
        let (path, body) = g
            .request(
                Endpoint::Embeddings,
                br#"{"model":"e","input":["a","b"],"dimensions":8}"#,
                false,
                "models/text-embedding-004",
            )
            .unwrap();
        assert_eq!(path, "/v1beta/models/text-embedding-004:batchEmbedContents");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["requests"][1],
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8})
        );
        let reply = ReplyContext {
            endpoint: Endpoint::Embeddings,
            stream: false,
            include_usage: false,
            strip_usage_chunk: false,
            model: "text-embedding-004".into(),
        };
        let (out, usage) = response(
            &reply,
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3]}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(
            v["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.3]})
        );
        assert_eq!(usage, None);
    }
}
