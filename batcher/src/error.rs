//! The crate's one error type.

/// Everything that can go wrong inside the batcher.
#[derive(Debug, thiserror::Error)]
pub enum BatcherError {
    /// A candle tensor operation failed (shape mismatch, device error, bad file).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A model or tokenizer file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A model's `config.json` (or GGUF metadata) is missing or malformed.
    #[error("invalid model config: {0}")]
    Config(String),
    /// The tokenizer could not be built or failed to encode/decode.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A request was refused before it reached the scheduler.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The KV cache can never hold this request, even when empty.
    #[error("request needs {needed} KV blocks but the cache has only {capacity}")]
    TooLong {
        /// Blocks the request would need.
        needed: usize,
        /// Blocks in the whole pool.
        capacity: usize,
    },
    /// The engine's request queue is full (back-pressure).
    #[error("engine queue is full")]
    QueueFull,
    /// The engine thread has stopped (shut down or crashed).
    #[error("engine has stopped")]
    EngineStopped,
    /// A model step panicked; its sequences were failed, the engine went on.
    #[error("a model step panicked: {0}")]
    StepPanicked(String),
    /// No sequence with this id is known to the engine.
    #[error("unknown sequence {0}")]
    UnknownSequence(u64),
    /// A chat template could not be loaded or rendered.
    #[error("chat template: {0}")]
    Chat(#[from] ChatError),
}

impl BatcherError {
    /// A short, low-cardinality label for metrics (`sluice_batcher_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tensor(_) => "tensor",
            Self::Io { .. } => "io",
            Self::Config(_) => "config",
            Self::Tokenizer(_) => "tokenizer",
            Self::InvalidRequest(_) => "invalid_request",
            Self::TooLong { .. } => "too_long",
            Self::QueueFull => "queue_full",
            Self::EngineStopped => "engine_stopped",
            Self::StepPanicked(_) => "step_panicked",
            Self::UnknownSequence(_) => "unknown_sequence",
            Self::Chat(_) => "chat",
        }
    }
}

/// Why a chat conversation could not be turned into a prompt
/// ([`crate::chat::ChatTemplate::render`]). Every message is safe to show to
/// an API client: the gateway answers 400 with it. Nested in
/// [`BatcherError::Chat`] where a crate-wide error is wanted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// `messages` (or `tools`) is not shaped as OpenAI's Chat Completions API
    /// says: not an array, a message without a role, an unknown role.
    #[error("{path}: {reason}")]
    InvalidMessages {
        /// Where, e.g. `messages[2].role`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A content part that is not text (an image, audio, a file).
    #[error(
        "{path}: this model takes text only; content parts of type {part_type:?} are not supported"
    )]
    UnsupportedContent {
        /// Where, e.g. `messages[1].content[0]`.
        path: String,
        /// The part's `type`.
        part_type: String,
    },
    /// `tools` were given but the model's chat template has no place for them.
    #[error("this model's chat template does not support tools")]
    ToolsUnsupported,
    /// The model has no chat template (and none was configured).
    #[error("this model has no chat template; send a plain prompt instead")]
    NoTemplate,
    /// The template refused the conversation through `raise_exception`
    /// (e.g. roles that do not alternate); the template's own message.
    #[error("the chat template refused the conversation: {0}")]
    Refused(String),
    /// Rendering failed for another reason (a construct the template engine
    /// does not support, a value of an unexpected type).
    #[error("the chat template could not render the conversation: {0}")]
    Render(String),
    /// The template source does not parse (found when the model is loaded).
    #[error("the chat template does not parse: {0}")]
    InvalidTemplate(String),
}

impl ChatError {
    /// A short, low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidMessages { .. } => "invalid_messages",
            Self::UnsupportedContent { .. } => "unsupported_content",
            Self::ToolsUnsupported => "tools_unsupported",
            Self::NoTemplate => "no_template",
            Self::Refused(_) => "template_refused",
            Self::Render(_) => "template_render",
            Self::InvalidTemplate(_) => "invalid_template",
        }
    }

    /// A [`ChatError::InvalidMessages`] at `path`.
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidMessages {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, BatcherError>;
