//! Typed sluice configuration.
//!
//! Start at [`load_file`] / [`load_str`]: a YAML document is parsed into the raw
//! types of [`raw`] (every field documented with its default, unknown keys
//! refused), `${VAR}` references are expanded from the environment, and the
//! result is validated into [`Config`]. Every error names the exact key path
//! (`models[2].target.upstream: ...`). [`Config::embedded_defaults`] builds the
//! configuration sluice runs with when no file is given. Upstreams of kind
//! `local` (the built-in engine) are validated in `local.rs` into
//! [`LocalModelSettings`].

mod access;
mod edge;
mod env;
mod error;
mod ledger;
mod local;
mod observability;
mod presets;
pub mod raw;
mod raw_access;
mod raw_routing;
mod routing;
mod secret;
mod streams;
mod tls;
mod validated;

pub use access::{
    key_from_spec, tenant_policy, AccessSettings, Budget, BudgetPeriod, JwtSettings, KeySettings,
    Limits, Priority, TenantSettings,
};
pub use edge::EdgeLimits;
pub use error::ConfigError;
pub use ledger::{DecimalText, Durability, LedgerConfig, RawLedger, RawPrice};
pub use local::{
    KvCacheSize, LocalDevice, LocalModelSettings, DEFAULT_LOCAL_MODEL_NAME,
    DEFAULT_LOCAL_MODEL_PATH,
};
pub use observability::{
    traces_url, AccessField, AccessLogSettings, LoggingSettings, RawAccessLog, RawLogging,
    RawTracing, TracingSettings,
};
pub use presets::{
    bedrock_base_url, find_preset, Preset, ANTHROPIC_DEFAULT_MAX_TOKENS, ANTHROPIC_DEFAULT_VERSION,
    AZURE_DEFAULT_API_VERSION, PRESETS,
};
pub use routing::{Balance, BreakerSettings, ModelRoute, RouteStep, RouteTarget, RoutingSettings};
pub use secret::Secret;
pub use streams::{RawStreams, StreamSettings};
pub use tls::{CertFiles, RawSniCert, RawTls, ServerTls, SniCert};
pub use validated::{
    Config, LogFormat, ServerSettings, UpstreamBaseUrl, UpstreamKind, UpstreamSettings,
    WILDCARD_MODEL,
};

use std::path::Path;

/// Reads, interpolates and validates the YAML config file at `path`, reading
/// `${VAR}` references from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, &|name| std::env::var(name).ok())
}

/// Parses, interpolates and validates a YAML config held in memory.
///
/// `lookup_env` resolves `${VAR}` references; tests pass a closure over a map
/// so they never touch the process environment.
pub fn load_str(
    text: &str,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    if document.is_null() {
        // An empty file means "all defaults".
        document = serde_yaml_ng::Value::Mapping(Default::default());
    }
    env::interpolate(&mut document, lookup_env)?;
    let raw: raw::RawConfig =
        serde_path_to_error::deserialize(document).map_err(|e| ConfigError::Invalid {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    Config::from_raw(raw)
}
