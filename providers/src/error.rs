//! The one error type of the providers crate.

/// Why a request cannot be routed. `proxy/src/error.rs` maps each variant to
/// the OpenAI error body and status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The body is not a JSON object.
    #[error("We could not parse the JSON body of your request: {detail}. The OpenAI API expects a JSON payload.")]
    MalformedJson {
        /// serde_json's description (position, expectation); holds no secrets.
        detail: String,
    },
    /// A routing field has the wrong type.
    #[error("Invalid type for '{field}': expected {expected}.")]
    InvalidField {
        /// The top-level field name.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// The body has no `"model"`.
    #[error("you must provide a model parameter")]
    MissingModel,
    /// No route serves this model name.
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    UnknownModel {
        /// The name the client sent.
        model: String,
    },
    /// The request uses something the target provider cannot express (an
    /// audio part, an image URL where only inline images are accepted, tool
    /// arguments that are not a JSON object). Answered with 400.
    #[error("This request cannot be sent to the selected provider: {detail}.")]
    Unsupported {
        /// What could not be translated; holds no secrets.
        detail: String,
    },
    /// The target provider has no such endpoint (e.g. embeddings on
    /// Anthropic). Answered with 400.
    #[error("The {endpoint} endpoint is not available for this model.")]
    UnsupportedEndpoint {
        /// The endpoint's label.
        endpoint: &'static str,
    },
    /// Signing the upstream request failed (Bedrock SigV4). An internal
    /// error: answered with 500 and a generic message.
    #[error("could not sign the upstream request: {detail}")]
    Signing {
        /// The signer's description; holds no secrets.
        detail: String,
    },
}

impl ProviderError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::MalformedJson { .. } => "malformed_json",
            ProviderError::InvalidField { .. } => "invalid_field",
            ProviderError::MissingModel => "missing_model",
            ProviderError::UnknownModel { .. } => "unknown_model",
            ProviderError::Unsupported { .. } => "unsupported_content",
            ProviderError::UnsupportedEndpoint { .. } => "unsupported_endpoint",
            ProviderError::Signing { .. } => "signing_failed",
        }
    }
}
