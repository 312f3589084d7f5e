//! Azure OpenAI: OpenAI's wire format at deployment URLs
//! (`{base}/openai/deployments/{deployment}/chat/completions?api-version=...`),
//! the key in an `api-key` header. The upstream model name is the deployment;
//! bodies and replies pass through as for OpenAI.

use crate::wire::{
    encode_segment, Base, ReplyContext, ResponseTranslator, UpstreamRequest, WireFormat,
};
use crate::{Endpoint, ProviderError, RoutingFields, UpstreamError};
use bytes::Bytes;
use sluice_config::UpstreamSettings;

/// The `api-version` used when config gives none (Azure's latest GA at writing).
pub const DEFAULT_API_VERSION: &str = sluice_config::AZURE_DEFAULT_API_VERSION;

/// An Azure OpenAI resource.
#[derive(Debug, Clone)]
pub struct Azure {
    base: Base,
    /// Already percent-encoded.
    api_version: String,
}

impl Azure {
    /// Builds the adapter: `api-key` from `api_key`, the given `api-version`.
    pub fn new(settings: &UpstreamSettings, api_version: &str) -> Self {
        Azure {
            base: Base::new(settings, Some(("api-key", ""))),
            api_version: encode_segment(api_version),
        }
    }

    /// The path and query for `endpoint` on `deployment`.
    pub fn path(&self, endpoint: Endpoint, deployment: &str) -> String {
        format!(
            "{}/openai/deployments/{}{}?api-version={}",
            self.base.path_prefix,
            encode_segment(deployment),
            endpoint.suffix(),
            self.api_version
        )
    }
}

impl WireFormat for Azure {
    fn label(&self) -> &'static str {
        "azure"
    }

    fn is_passthrough(&self) -> bool {
        true
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
        Ok(UpstreamRequest::passthrough(
            endpoint,
            body,
            fields,
            upstream_model,
            self.path(endpoint, upstream_model),
            self.base.headers.clone(),
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
    use crate::{Provider, ProviderKind, RoutingFields};
    use bytes::Bytes;
    use sluice_config::load_str;

    #[test]
    fn deployment_urls_and_api_key_header() {
        let config = load_str(
            "upstreams:\n  az: {base_url: 'https://res.openai.azure.com', api_key: azk}\n",
            &|_| None,
        )
        .unwrap();
        let p = Provider::new(
            &config.upstreams[0],
            ProviderKind::Azure {
                api_version: DEFAULT_API_VERSION.into(),
            },
        );
        let body = Bytes::from_static(br#"{"model":"gpt-4o","messages":[]}"#);
        let fields = RoutingFields::parse(&body).unwrap();
        let req = p
            .build_request(Endpoint::ChatCompletions, &body, &fields, "my-gpt4o")
            .unwrap();
        assert_eq!(
            req.path_and_query,
            "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(req.headers[0].0, "api-key");
        assert_eq!(req.headers[0].1, "azk");
        assert!(req.forward_client_headers);
        assert_eq!(p.host_header(), "res.openai.azure.com");
        assert!(p.is_passthrough());
    }
}
