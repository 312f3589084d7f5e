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
}

impl ProviderError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::MalformedJson { .. } => "malformed_json",
            ProviderError::InvalidField { .. } => "invalid_field",
            ProviderError::MissingModel => "missing_model",
            ProviderError::UnknownModel { .. } => "unknown_model",
        }
    }
}
