//! AWS Bedrock's Converse API: `POST {base}/model/{modelId}/converse` and
//! `/converse-stream` (binary event stream, see [`crate::eventstream`]),
//! signed with SigV4 (service `bedrock`), base defaulting to
//! `https://bedrock-runtime.{region}.amazonaws.com`.
//!
//! Requests (`request.rs`): system messages become `system` blocks, tool
//! calls `toolUse`, tool results `toolResult` blocks of a user turn
//! (consecutive turns of one role merged), `tools` a `toolConfig`
//! (`tool_choice: none` cannot be expressed and is sent as no choice),
//! images inline `bytes` (Converse takes no image URLs: those are refused
//! with 400).
//!
//! Replies (`response.rs`, `stream.rs`): `reasoningContent` blocks are
//! dropped. Usage: prompt = `inputTokens` + `cacheReadInputTokens` +
//! `cacheWriteInputTokens`, cached = `cacheReadInputTokens`. The stream's
//! usage arrives in its last event (`metadata`), after `messageStop`, so
//! the OpenAI terminal chunks are written then (or when the upstream ends).

mod request;
mod response;
mod stream;

use crate::chat::{to_json, ChatRequest};
use crate::wire::{
    encode_segment, Base, ReplyContext, ReplyFormat, ResponseTranslator, StreamFormat,
    UpstreamRequest, WireFormat,
};
use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use sluice_config::{Secret, UpstreamSettings};
use std::time::SystemTime;

/// How Bedrock replies are read.
const REPLY: ReplyFormat = ReplyFormat {
    whole: response::response,
    error: response::error,
    stream: StreamFormat::EventStream(stream::on_message),
};

/// The SigV4 service name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";

/// The regional endpoint, for config to use when no `base_url` is given.
pub fn default_base_url(region: &str) -> String {
    sluice_config::bedrock_base_url(region)
}

/// Static AWS credentials and the region they sign for.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Access key id (not secret, but kept out of logs all the same).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// A Bedrock runtime endpoint.
#[derive(Debug, Clone)]
pub struct Bedrock {
    base: Base,
    credentials: Credentials,
}

impl Bedrock {
    /// Builds the adapter; no key header (requests are signed instead).
    pub fn new(settings: &UpstreamSettings, credentials: Credentials) -> Self {
        Bedrock {
            base: Base::new(settings, None),
            credentials,
        }
    }

    /// The path and body for one request.
    fn request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        stream: bool,
        model: &str,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        if endpoint != Endpoint::ChatCompletions {
            return Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint.label(),
            });
        }
        let chat = ChatRequest::parse(body)?;
        let out = request::to_converse(&chat)?;
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        let path = format!(
            "{}/model/{}/{action}",
            self.base.path_prefix,
            encode_segment(model)
        );
        Ok((path, to_json(&out)?))
    }

    /// The fixed headers plus `content-type` and the SigV4 headers
    /// (`authorization`, `x-amz-date`, `x-amz-security-token`) for `body`
    /// sent to `path` at `now`.
    fn signed_headers(
        &self,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ProviderError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let signing = |e: &dyn std::fmt::Display| ProviderError::Signing {
            detail: e.to_string(),
        };
        let scheme = if self.base.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}{path}", self.base.host_header);
        let content_type = "application/json";
        let c = &self.credentials;
        let identity = aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_string(),
            c.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "sluice-config",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&c.region)
            .name(SIGNING_SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing(&e))?
            .into();
        let request = SignableRequest::new(
            "POST",
            url,
            std::iter::once(("content-type", content_type)),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing(&e))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| signing(&e))?
            .into_parts();
        let mut headers = self.base.headers.clone();
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        ));
        for (name, value) in instructions.headers() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| signing(&e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| signing(&e))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(headers)
    }
}

impl WireFormat for Bedrock {
    fn label(&self) -> &'static str {
        "bedrock"
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
        let headers = self.signed_headers(&path, &out, SystemTime::now())?;
        Ok(UpstreamRequest::translated(
            endpoint,
            fields,
            upstream_model,
            path,
            headers,
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
    use super::*;
    use serde_json::{json, Value};
    use sluice_config::load_str;

    fn bedrock() -> Bedrock {
        let config = load_str(
            "upstreams:\n  b: {base_url: 'https://bedrock-runtime.us-east-1.amazonaws.com'}\n",
            &|_| None,
        )
        .unwrap();
        Bedrock::new(
            &config.upstreams[0],
            Credentials {
                region: "us-east-1".into(),
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: None,
            },
        )
    }

    #[test]
    fn builds_and_signs_a_converse_request() {
        let b = bedrock();
        let body = br#"{"model":"x","max_tokens":20,"stop":["END"],"messages":[
            {"role":"system","content":"sys"},{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}"#;
        let (path, out) = b
            .request(
                Endpoint::ChatCompletions,
                body,
                true,
                "anthropic.claude-3-haiku-20240307-v1:0",
            )
            .unwrap();
        assert_eq!(
            path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["system"], json!([{"text": "sys"}]));
        assert_eq!(
            v["messages"][0],
            json!({"role": "user", "content": [{"text": "hi"}]})
        );
        assert_eq!(
            v["inferenceConfig"],
            json!({"maxTokens": 20, "stopSequences": ["END"]})
        );
        assert_eq!(v["toolConfig"]["toolChoice"], json!({"auto": {}}));
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
            "object"
        );
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let headers = b.signed_headers(&path, &out, t).unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-amz-date").as_deref(), Some("20150830T123600Z"));
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request"
        ));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date"));
        assert!(!auth.contains("wJalr"));
        // Same input, same signature; another body, another one.
        assert_eq!(b.signed_headers(&path, &out, t).unwrap(), headers);
        assert_ne!(b.signed_headers(&path, b"{}", t).unwrap(), headers);
    }

    #[test]
    fn refuses_image_urls_and_other_endpoints() {
        let b = bedrock();
        let body = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        assert!(matches!(
            b.request(Endpoint::ChatCompletions, body, false, "m"),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(matches!(
            b.request(Endpoint::Embeddings, b"{}", false, "m"),
            Err(ProviderError::UnsupportedEndpoint { .. })
        ));
    }
}
