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
    /// No sequence with this id is known to the engine.
    #[error("unknown sequence {0}")]
    UnknownSequence(u64),
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
            Self::UnknownSequence(_) => "unknown_sequence",
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, BatcherError>;
