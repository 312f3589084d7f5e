//! The one error type of the config crate.

/// Why a configuration could not be loaded. Each variant names the key path
/// (`models[1].name`) where the problem sits, so `sluice check-config` can
/// point at the exact line to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given on the command line.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("config is not valid YAML: {0}")]
    Syntax(String),
    /// A value has the wrong type, or a key is unknown or missing.
    #[error("{path}: {message}")]
    Invalid {
        /// Key path, e.g. `upstreams.openai.base_url`.
        path: String,
        /// What serde found wrong.
        message: String,
    },
    /// A `${VAR}` reference names an environment variable that is not set.
    #[error("{path}: environment variable {var} is not set (referenced as ${{{var}}})")]
    MissingEnv {
        /// Key path of the string holding the reference.
        path: String,
        /// The variable name.
        var: String,
    },
    /// The values parse but do not make sense together.
    #[error("{path}: {message}")]
    Validation {
        /// Key path of the offending value.
        path: String,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Syntax(_) => "syntax",
            ConfigError::Invalid { .. } => "invalid",
            ConfigError::MissingEnv { .. } => "missing_env",
            ConfigError::Validation { .. } => "validation",
        }
    }

    pub(crate) fn validation(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Validation {
            path: path.into(),
            message: message.into(),
        }
    }
}
