//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, TGI, another
//! sluice): the request goes out as the client sent it, with the target's
//! base path, credentials and extra headers.

use crate::wire::{ReplyContext, ResponseTranslator, UpstreamRequest, WireFormat};
use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::Bytes;
use sluice_config::UpstreamSettings;

/// Headers a client sends that must not travel upstream: hop-by-hop headers
/// (RFC 9110 §7.6.1), the client's own credentials (a sluice key, never the
/// provider's), and framing that sluice sets itself.
pub const CLIENT_HEADERS_NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "api-key",
    "x-api-key",
    "expect",
    "http2-settings",
];

/// How to address one OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    path_prefix: String,
    host_header: String,
    /// Pre-rendered `Bearer <key>`; kept out of `Debug` by [`sluice_config::Secret`].
    authorization: Option<sluice_config::Secret>,
    extra_headers: Vec<(String, String)>,
    /// The same headers, parsed once for the wire (the key marked sensitive).
    wire_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl OpenAiCompatible {
    /// Builds the adapter from validated upstream settings.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let url = &settings.base_url;
        let default_port = if url.tls { 443 } else { 80 };
        let host_header = if url.port == default_port {
            url.authority()
                .rsplit_once(':')
                .map_or_else(|| url.host.clone(), |(h, _)| h.to_string())
        } else {
            url.authority()
        };
        let mut adapter = OpenAiCompatible {
            path_prefix: url.path_prefix.clone(),
            host_header,
            authorization: settings
                .api_key
                .as_ref()
                .map(|k| sluice_config::Secret::new(format!("Bearer {}", k.expose()))),
            extra_headers: settings.headers.clone(),
            wire_headers: Vec::new(),
        };
        // Names and values were validated at config load; none is dropped here.
        adapter.wire_headers = adapter
            .headers()
            .filter_map(|(k, v)| {
                let mut value = http::HeaderValue::from_str(v).ok()?;
                value.set_sensitive(k == "authorization");
                Some((http::HeaderName::from_bytes(k.as_bytes()).ok()?, value))
            })
            .collect();
        adapter
    }

    /// [`Self::headers`], ready for the wire.
    pub fn wire_headers(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.wire_headers
    }

    /// The request path upstream, e.g. `/v1/chat/completions`.
    pub fn path(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.path_prefix, endpoint.suffix())
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> &str {
        &self.host_header
    }

    /// Headers the upstream needs on every request: credentials first, then
    /// the configured extras. Values were validated at config load.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.authorization
            .iter()
            .map(|a| ("authorization", a.expose()))
            .chain(
                self.extra_headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
    }
}

impl OpenAiCompatible {
    /// A Responses API request passed through: the client's body with the
    /// model renamed, to `{base}/responses`, the client's headers too.
    /// `identity` encoding keeps the reply readable for usage.
    pub(crate) fn native_responses(
        &self,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> UpstreamRequest {
        let mut headers = self.wire_headers.clone();
        headers.push((
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        ));
        UpstreamRequest {
            method: http::Method::POST,
            path_and_query: format!("{}{RESPONSES_SUFFIX}", self.path_prefix),
            headers,
            forward_client_headers: true,
            body: fields.with_model(body, upstream_model),
            reply: ReplyContext::new(Endpoint::ChatCompletions, fields, upstream_model),
        }
    }
}

/// The Responses API, below an OpenAI base URL.
const RESPONSES_SUFFIX: &str = "/responses";

impl WireFormat for OpenAiCompatible {
    fn label(&self) -> &'static str {
        "openai"
    }

    fn is_passthrough(&self) -> bool {
        true
    }

    fn host_header(&self) -> &str {
        &self.host_header
    }

    fn build_request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest::passthrough(
            endpoint,
            body,
            fields,
            upstream_model,
            self.path(endpoint),
            self.wire_headers.clone(),
        ))
    }

    fn response_translator(&self, reply: &ReplyContext, status: u16) -> ResponseTranslator {
        ResponseTranslator::passthrough(reply, status)
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> UpstreamError {
        UpstreamError::from_openai_body(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::load_str;

    fn adapter(yaml: &str) -> OpenAiCompatible {
        let config = load_str(yaml, &|_| None).unwrap();
        OpenAiCompatible::new(&config.upstreams[0])
    }

    #[test]
    fn builds_paths_host_and_headers() {
        let a = adapter(
            "upstreams:\n  u:\n    base_url: https://api.example.com/openai/v1/\n    api_key: sk-1\n    headers: {X-Org: o}\n",
        );
        assert_eq!(
            a.path(Endpoint::ChatCompletions),
            "/openai/v1/chat/completions"
        );
        assert_eq!(a.host_header(), "api.example.com");
        let headers: Vec<_> = a.headers().collect();
        assert_eq!(
            headers,
            vec![("authorization", "Bearer sk-1"), ("x-org", "o")]
        );
        assert!(!format!("{a:?}").contains("sk-1"));
    }

    #[test]
    fn non_default_port_is_kept_in_host() {
        let a = adapter("upstreams:\n  u: {base_url: 'http://127.0.0.1:9000'}\n");
        assert_eq!(a.host_header(), "127.0.0.1:9000");
        assert_eq!(a.path(Endpoint::Embeddings), "/embeddings");
        assert_eq!(a.headers().count(), 0);
    }
}
