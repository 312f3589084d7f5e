//! Azure OpenAI: OpenAI's wire format at deployment URLs
//! (`{base}/openai/deployments/{deployment}/chat/completions?api-version=...`),
//! the key in an `api-key` header. The upstream model name is the deployment;
//! bodies and replies pass through as for OpenAI.

use crate::adapter::{encode_segment, Base};
use crate::Endpoint;
use sluice_config::UpstreamSettings;

/// The `api-version` used when config gives none (Azure's latest GA at writing).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// An Azure OpenAI resource.
#[derive(Debug, Clone)]
pub struct Azure {
    pub(crate) base: Base,
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
