//! The provider adapter API: one [`Provider`] per upstream, statically
//! dispatched over the wire formats sluice speaks.
//!
//! For each request the proxy calls [`Provider::build_request`] (method,
//! path, headers, body in the provider's format) and, once the upstream's
//! status is known, [`Provider::response_translator`], which it feeds the
//! response body piece by piece. Every method is a `match` over the
//! variants, each forwarding to that provider's [`WireFormat`]
//! implementation; this is the only module that names every provider.

use crate::anthropic::Anthropic;
use crate::azure::Azure;
use crate::bedrock::{self, Bedrock};
use crate::dialects::ClientDialect;
use crate::gemini::Gemini;
use crate::openai::OpenAiCompatible;
use crate::wire::{ReplyContext, ResponseTranslator, UpstreamRequest, WireFormat};
use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::{Bytes, BytesMut};
use sluice_config::UpstreamSettings;

/// Which wire format an upstream speaks, with the settings only that format
/// needs: config's validated upstream kind, used as is.
pub use sluice_config::UpstreamKind as ProviderKind;

pub use sluice_config::{find_preset, Preset, PRESETS};

/// An upstream's adapter: configuration and code in one enum, one variant
/// per `WireFormat` implementation (the trait in `wire/mod.rs`).
#[derive(Debug, Clone)]
pub enum Provider {
    /// OpenAI-compatible: the body passes through (model renamed).
    OpenAi(OpenAiCompatible),
    /// Azure OpenAI: OpenAI's format at deployment URLs.
    Azure(Azure),
    /// Anthropic Messages.
    Anthropic(Anthropic),
    /// Google Gemini.
    Gemini(Gemini),
    /// AWS Bedrock Converse.
    Bedrock(Bedrock),
}

impl Provider {
    /// The adapter for a configured upstream, as its `kind` says.
    pub fn from_settings(settings: &UpstreamSettings) -> Self {
        Provider::new(settings, settings.kind.clone())
    }

    /// Builds the adapter for one upstream from its validated settings
    /// (address, `api_key`, extra headers) and its kind.
    pub fn new(settings: &UpstreamSettings, kind: ProviderKind) -> Self {
        match kind {
            // `Local` (the built-in engine) speaks OpenAI's shape; the gateway
            // answers it in-process and never sends it over HTTP.
            ProviderKind::OpenAi | ProviderKind::Local(_) => {
                Provider::OpenAi(OpenAiCompatible::new(settings))
            }
            ProviderKind::Azure { api_version } => {
                Provider::Azure(Azure::new(settings, &api_version))
            }
            ProviderKind::Anthropic {
                version,
                default_max_tokens,
            } => Provider::Anthropic(Anthropic::new(settings, &version, default_max_tokens)),
            ProviderKind::Gemini => Provider::Gemini(Gemini::new(settings)),
            ProviderKind::Bedrock {
                region,
                access_key_id,
                secret_access_key,
                session_token,
            } => Provider::Bedrock(Bedrock::new(
                settings,
                bedrock::Credentials {
                    region,
                    access_key_id: access_key_id.expose().to_string(),
                    secret_access_key,
                    session_token,
                },
            )),
        }
    }

    /// A label for metrics and logs: `openai`, `azure`, `anthropic`, `gemini`, `bedrock`.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::OpenAi(p) => p.label(),
            Provider::Azure(p) => p.label(),
            Provider::Anthropic(p) => p.label(),
            Provider::Gemini(p) => p.label(),
            Provider::Bedrock(p) => p.label(),
        }
    }

    /// Whether replies pass through unchanged (OpenAI wire format upstream).
    pub fn is_passthrough(&self) -> bool {
        match self {
            Provider::OpenAi(p) => p.is_passthrough(),
            Provider::Azure(p) => p.is_passthrough(),
            Provider::Anthropic(p) => p.is_passthrough(),
            Provider::Gemini(p) => p.is_passthrough(),
            Provider::Bedrock(p) => p.is_passthrough(),
        }
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> &str {
        match self {
            Provider::OpenAi(p) => p.host_header(),
            Provider::Azure(p) => p.host_header(),
            Provider::Anthropic(p) => p.host_header(),
            Provider::Gemini(p) => p.host_header(),
            Provider::Bedrock(p) => p.host_header(),
        }
    }

    /// Turns the client's OpenAI request into the upstream's: `body` is the
    /// raw request, `fields` its parsed routing fields, `upstream_model` the
    /// name (or Azure deployment, or Bedrock model id) to call.
    pub fn build_request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Result<UpstreamRequest, ProviderError> {
        match self {
            Provider::OpenAi(p) => p.build_request(endpoint, body, fields, upstream_model),
            Provider::Azure(p) => p.build_request(endpoint, body, fields, upstream_model),
            Provider::Anthropic(p) => p.build_request(endpoint, body, fields, upstream_model),
            Provider::Gemini(p) => p.build_request(endpoint, body, fields, upstream_model),
            Provider::Bedrock(p) => p.build_request(endpoint, body, fields, upstream_model),
        }
    }

    /// The request for a client that speaks `dialect`, when this upstream
    /// speaks it too (Anthropic: Messages and `count_tokens`; OpenAI: the
    /// Responses API): the client's `body` untouched but for the model.
    /// `fields` are read from that body. `None`: translate through chat.
    pub fn native_request(
        &self,
        dialect: ClientDialect,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Option<UpstreamRequest> {
        match (self, dialect) {
            (Provider::Anthropic(p), ClientDialect::Messages | ClientDialect::CountTokens) => {
                Some(p.native(dialect, body, fields, upstream_model))
            }
            (Provider::OpenAi(p), ClientDialect::Responses) => {
                Some(p.native_responses(body, fields, upstream_model))
            }
            _ => None,
        }
    }

    /// Whether this upstream speaks `dialect` itself (then
    /// [`Provider::native_request`] sends the client's body as is).
    pub fn speaks(&self, dialect: ClientDialect) -> bool {
        matches!(
            (self, dialect),
            (
                Provider::Anthropic(_),
                ClientDialect::Messages | ClientDialect::CountTokens
            ) | (Provider::OpenAi(_), ClientDialect::Responses)
        )
    }

    /// The translator for a reply to a [`Provider::native_request`]: the
    /// body goes back untouched with the upstream's status, read on the
    /// side for usage.
    pub fn native_translator(
        &self,
        dialect: ClientDialect,
        reply: &ReplyContext,
        status: u16,
    ) -> ResponseTranslator {
        let reader = match dialect {
            ClientDialect::Responses => ResponseTranslator::responses_reader(reply, status),
            _ => self.response_translator(reply, status),
        };
        ResponseTranslator::observed(reader, status)
    }

    /// A translator for one response, created when its status is known.
    pub fn response_translator(&self, reply: &ReplyContext, status: u16) -> ResponseTranslator {
        match self {
            Provider::OpenAi(p) => p.response_translator(reply, status),
            Provider::Azure(p) => p.response_translator(reply, status),
            Provider::Anthropic(p) => p.response_translator(reply, status),
            Provider::Gemini(p) => p.response_translator(reply, status),
            Provider::Bedrock(p) => p.response_translator(reply, status),
        }
    }

    /// Classifies a complete error reply (`status` not 2xx) without
    /// streaming: for callers that read error bodies whole before deciding
    /// on failover.
    pub fn translate_error(&self, status: u16, body: &[u8]) -> UpstreamError {
        match self {
            Provider::OpenAi(p) => p.translate_error(status, body),
            Provider::Azure(p) => p.translate_error(status, body),
            Provider::Anthropic(p) => p.translate_error(status, body),
            Provider::Gemini(p) => p.translate_error(status, body),
            Provider::Bedrock(p) => p.translate_error(status, body),
        }
    }
}

/// Translates a whole reply in one call (tests, benches, and callers that
/// buffer): returns the client status and body.
pub fn translate_whole(
    provider: &Provider,
    reply: &ReplyContext,
    status: u16,
    body: Bytes,
) -> (u16, Bytes) {
    let mut t = provider.response_translator(reply, status);
    let mut out = BytesMut::new();
    out.extend_from_slice(&t.relay(body));
    out.extend_from_slice(&t.finish());
    (t.status(), out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::load_str;

    fn settings(yaml: &str) -> UpstreamSettings {
        load_str(yaml, &|_| None).unwrap().upstreams[0].clone()
    }

    #[test]
    fn openai_passes_through_and_rewords_auth_failures() {
        let s =
            settings("upstreams:\n  u: {base_url: 'https://api.openai.com/v1', api_key: sk-1}\n");
        let p = Provider::new(&s, ProviderKind::OpenAi);
        let body = Bytes::from_static(br#"{"model":"a","stream":true,"messages":[]}"#);
        let fields = RoutingFields::parse(&body).unwrap();
        let req = p
            .build_request(Endpoint::ChatCompletions, &body, &fields, "b")
            .unwrap();
        assert_eq!(req.path_and_query, "/v1/chat/completions");
        assert!(req.forward_client_headers);
        assert!(req.reply.strip_usage_chunk);
        assert_eq!(req.headers[0].1, "Bearer sk-1");
        assert!(req.headers[0].1.is_sensitive());
        let (status, out) = translate_whole(
            &p,
            &req.reply,
            401,
            Bytes::from_static(br#"{"error":{"message":"Incorrect API key provided: sk-1"}}"#),
        );
        assert_eq!(status, 502);
        assert!(!String::from_utf8_lossy(&out).contains("sk-1"));
        let t = p.response_translator(&req.reply, 200);
        assert_eq!(t.content_type(), None);
    }

    #[test]
    fn presets_cover_every_format() {
        for format in ["openai", "azure", "anthropic", "gemini", "bedrock"] {
            assert!(PRESETS.iter().any(|p| p.format == format));
        }
        assert_eq!(
            find_preset("groq").unwrap().base_url,
            Some("https://api.groq.com/openai/v1")
        );
    }
}
