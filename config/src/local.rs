//! Upstreams of kind `local`: the built-in inference engine (`batcher/`),
//! run inside sluice. What the model is, where it runs, how large its KV
//! cache and batches are, and what its tokens cost.

use crate::ledger::DecimalText;
use crate::raw::RawUpstream;
use crate::ConfigError;
use std::fmt;
use std::path::PathBuf;

/// The model file sluice serves when it runs without a config file, relative
/// to the working directory (`batcher/scripts/fetch-smollm2.sh` puts it there).
pub const DEFAULT_LOCAL_MODEL_PATH: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The client-visible model name of [`DEFAULT_LOCAL_MODEL_PATH`] in the
/// embedded defaults.
pub const DEFAULT_LOCAL_MODEL_NAME: &str = "smollm2-135m-instruct";

/// The kind name of the built-in engine in config.
pub(crate) const LOCAL_KIND: &str = "local";

/// Where a local model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDevice {
    /// The CPU (the default).
    Cpu,
    /// The CUDA GPU with this index (`cuda:0`).
    Cuda(usize),
}

impl LocalDevice {
    /// Parses `cpu` or `cuda:N`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "cpu" {
            return Ok(LocalDevice::Cpu);
        }
        text.strip_prefix("cuda:")
            .and_then(|index| index.parse().ok())
            .map(LocalDevice::Cuda)
            .ok_or_else(|| {
                format!("expected \"cpu\" or \"cuda:N\" with N a GPU index (cuda:0), got {text:?}")
            })
    }
}

impl fmt::Display for LocalDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalDevice::Cpu => f.write_str("cpu"),
            LocalDevice::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// How large the KV cache is, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// This many KV blocks (`kv_cache_blocks`).
    Blocks(usize),
    /// As many blocks as fit in this many bytes (`kv_cache_bytes`).
    Bytes(u64),
}

/// A validated `local` upstream: everything the engine needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelSettings {
    /// A GGUF file or an HF model folder, as written (relative paths are
    /// relative to the working directory). Not checked to exist here: the
    /// engine reports a missing file when it loads it.
    pub model: PathBuf,
    /// Where the model runs.
    pub device: LocalDevice,
    /// KV cache size; `None`: the engine sizes it from a memory budget.
    pub kv_cache: Option<KvCacheSize>,
    /// Most sequences decoded together (at least 1).
    pub max_sequences: usize,
    /// Most tokens (prefill and decode) in one engine step (at least 1).
    pub max_tokens_per_step: usize,
    /// Most requests waiting beyond `max_sequences` before the engine
    /// answers overloaded.
    pub max_waiting: usize,
    /// Threads for the CPU kernels; 0 means every core.
    pub threads: usize,
    /// A Jinja chat template file that replaces the model's own.
    pub chat_template: Option<PathBuf>,
    /// USD per million prompt tokens, a checked non-negative decimal.
    pub price_input: DecimalText,
    /// USD per million completion tokens, a checked non-negative decimal.
    pub price_output: DecimalText,
}

/// Default of `max_sequences`.
const DEFAULT_MAX_SEQUENCES: usize = 64;
/// Default of `max_tokens_per_step`.
const DEFAULT_MAX_TOKENS_PER_STEP: usize = 512;

/// The message for a remote-only key on a `local` upstream.
const NOT_FOR_LOCAL: &str = "does not apply to kind local: the model runs inside sluice, \
     with no network address, credentials or headers; remove this key";

/// Validates the keys of a `kind: local` upstream; `at(key)` gives a key's path.
pub(crate) fn local_settings(
    up: &RawUpstream,
    at: &dyn Fn(&str) -> String,
) -> Result<LocalModelSettings, ConfigError> {
    let remote_only = [
        ("base_url", up.base_url.is_some()),
        ("api_key", up.api_key.is_some()),
        ("api_key_file", up.api_key_file.is_some()),
        ("headers", !up.headers.is_empty()),
        ("ca_file", up.ca_file.is_some()),
        ("api_version", up.api_version.is_some()),
        ("anthropic_version", up.anthropic_version.is_some()),
        ("default_max_tokens", up.default_max_tokens.is_some()),
        ("region", up.region.is_some()),
        ("aws_access_key_id", up.aws_access_key_id.is_some()),
        ("aws_secret_access_key", up.aws_secret_access_key.is_some()),
        ("aws_session_token", up.aws_session_token.is_some()),
    ];
    if let Some((key, _)) = remote_only.iter().find(|(_, given)| *given) {
        return Err(ConfigError::validation(at(key), NOT_FOR_LOCAL));
    }
    let model = up
        .model
        .clone()
        .ok_or_else(|| ConfigError::validation(at("model"), "is required for kind local"))?;
    if model.as_os_str().is_empty() {
        return Err(ConfigError::validation(at("model"), "must not be empty"));
    }
    let device = match &up.device {
        Some(text) => {
            LocalDevice::parse(text).map_err(|m| ConfigError::validation(at("device"), m))?
        }
        None => LocalDevice::Cpu,
    };
    let kv_cache = match (up.kv_cache_blocks, up.kv_cache_bytes) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::validation(
                at("kv_cache_bytes"),
                "give either kv_cache_blocks or kv_cache_bytes, not both",
            ))
        }
        (Some(0), None) => {
            return Err(ConfigError::validation(
                at("kv_cache_blocks"),
                "must be at least 1",
            ))
        }
        (None, Some(0)) => {
            return Err(ConfigError::validation(
                at("kv_cache_bytes"),
                "must be at least 1",
            ))
        }
        (Some(blocks), None) => Some(KvCacheSize::Blocks(blocks)),
        (None, Some(bytes)) => Some(KvCacheSize::Bytes(bytes)),
        (None, None) => None,
    };
    let positive = |value: Option<usize>, default: usize, key: &str| match value {
        Some(0) => Err(ConfigError::validation(at(key), "must be at least 1")),
        other => Ok(other.unwrap_or(default)),
    };
    let max_sequences = positive(up.max_sequences, DEFAULT_MAX_SEQUENCES, "max_sequences")?;
    let max_tokens_per_step = positive(
        up.max_tokens_per_step,
        DEFAULT_MAX_TOKENS_PER_STEP,
        "max_tokens_per_step",
    )?;
    if let Some(path) = &up.chat_template {
        if path.as_os_str().is_empty() {
            return Err(ConfigError::validation(
                at("chat_template"),
                "must not be empty",
            ));
        }
    }
    let (price_input, price_output) = match &up.price {
        Some(price) => (
            crate::ledger::checked_decimal(&price.input, at("price.input"))?,
            crate::ledger::checked_decimal(&price.output, at("price.output"))?,
        ),
        None => (DecimalText::zero(), DecimalText::zero()),
    };
    Ok(LocalModelSettings {
        model,
        device,
        kv_cache,
        max_sequences,
        max_tokens_per_step,
        max_waiting: up.max_waiting.unwrap_or(max_sequences * 4),
        threads: up.threads.unwrap_or(0),
        chat_template: up.chat_template.clone(),
        price_input,
        price_output,
    })
}

/// Refuses the `local`-only keys on an upstream of another kind, so that
/// they are never silently ignored.
pub(crate) fn refuse_local_keys(
    up: &RawUpstream,
    kind: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let local_only = [
        ("model", up.model.is_some()),
        ("device", up.device.is_some()),
        ("kv_cache_blocks", up.kv_cache_blocks.is_some()),
        ("kv_cache_bytes", up.kv_cache_bytes.is_some()),
        ("max_sequences", up.max_sequences.is_some()),
        ("max_waiting", up.max_waiting.is_some()),
        ("max_tokens_per_step", up.max_tokens_per_step.is_some()),
        ("threads", up.threads.is_some()),
        ("chat_template", up.chat_template.is_some()),
        ("price", up.price.is_some()),
    ];
    match local_only.iter().find(|(_, given)| *given) {
        Some((key, _)) => Err(ConfigError::validation(
            at(key),
            format!("is only for kind local, not {kind}; the upstream serves its own model"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::{load_str, UpstreamBaseUrl, UpstreamKind};

    fn load(yaml: &str) -> Result<crate::Config, ConfigError> {
        load_str(yaml, &|name| (name == "KEY").then(|| "sk-test".to_string()))
    }

    fn error_of(yaml: &str) -> String {
        load(yaml).unwrap_err().to_string()
    }

    fn local_of(config: &crate::Config) -> &LocalModelSettings {
        match &config.upstreams[0].kind {
            UpstreamKind::Local(settings) => settings,
            other => panic!("not local: {other:?}"),
        }
    }

    #[test]
    fn a_full_local_upstream_is_validated() {
        let yaml = r#"
upstreams:
  engine:
    kind: local
    model: models/smol.gguf
    device: cuda:1
    kv_cache_blocks: 2048
    max_sequences: 8
    max_tokens_per_step: 256
    threads: 2
    chat_template: templates/chatml.jinja
    price: {input: "0.05", output: 0.1}
models:
  - {name: smol, upstream: engine}
"#;
        let config = load(yaml).unwrap();
        let up = &config.upstreams[0];
        assert_eq!(up.base_url, UpstreamBaseUrl::in_process());
        assert!(up.api_key.is_none() && up.headers.is_empty());
        assert_eq!(
            local_of(&config),
            &LocalModelSettings {
                model: "models/smol.gguf".into(),
                device: LocalDevice::Cuda(1),
                kv_cache: Some(KvCacheSize::Blocks(2048)),
                max_sequences: 8,
                max_tokens_per_step: 256,
                max_waiting: 32,
                threads: 2,
                chat_template: Some("templates/chatml.jinja".into()),
                price_input: DecimalText("0.05".into()),
                price_output: DecimalText("0.1".into()),
            }
        );
        assert_eq!(config.models[0].steps[0].targets[0].upstream, 0);
    }

    #[test]
    fn a_minimal_local_upstream_gets_the_defaults() {
        let config =
            load("upstreams:\n  e: {kind: local, model: m.gguf, kv_cache_bytes: 1000}\n").unwrap();
        let local = local_of(&config);
        assert_eq!(local.device, LocalDevice::Cpu);
        assert_eq!(local.kv_cache, Some(KvCacheSize::Bytes(1000)));
        assert_eq!(
            (
                local.max_sequences,
                local.max_tokens_per_step,
                local.threads
            ),
            (64, 512, 0)
        );
        assert_eq!(local.chat_template, None);
        assert_eq!(local.price_input, DecimalText("0".into()));
        assert_eq!(local.price_output, DecimalText("0".into()));
        let config = load("upstreams:\n  e: {kind: local, model: m.gguf}\n").unwrap();
        assert_eq!(local_of(&config).kv_cache, None);
    }

    #[test]
    fn the_model_is_required() {
        assert_eq!(
            error_of("upstreams:\n  e: {kind: local}\n"),
            "upstreams.e.model: is required for kind local"
        );
    }

    #[test]
    fn both_kv_cache_sizes_are_refused() {
        let err = error_of(
            "upstreams:\n  e: {kind: local, model: m.gguf, kv_cache_blocks: 10, kv_cache_bytes: 1000}\n",
        );
        assert_eq!(
            err,
            "upstreams.e.kv_cache_bytes: give either kv_cache_blocks or kv_cache_bytes, not both"
        );
        let err = error_of("upstreams:\n  e: {kind: local, model: m.gguf, kv_cache_blocks: 0}\n");
        assert_eq!(err, "upstreams.e.kv_cache_blocks: must be at least 1");
    }

    #[test]
    fn remote_keys_are_refused_on_local() {
        for (line, key) in [
            ("base_url: http://127.0.0.1:8000/v1", "base_url"),
            ("api_key: ${KEY}", "api_key"),
            ("api_key_file: /run/secrets/key", "api_key_file"),
            ("headers: {X-Team: a}", "headers"),
            ("region: us-east-1", "region"),
        ] {
            let err = error_of(&format!(
                "upstreams:\n  e:\n    kind: local\n    model: m.gguf\n    {line}\n"
            ));
            assert!(
                err.starts_with(&format!("upstreams.e.{key}: does not apply to kind local")),
                "{err}"
            );
        }
    }

    #[test]
    fn local_keys_are_refused_on_remote_kinds() {
        let err = error_of("upstreams:\n  a: {base_url: 'http://x', model: m.gguf}\n");
        assert!(
            err.starts_with("upstreams.a.model: is only for kind local, not openai"),
            "{err}"
        );
        let err = error_of("upstreams:\n  a: {kind: groq, api_key: k, price: {input: 1}}\n");
        assert!(
            err.starts_with("upstreams.a.price: is only for kind local, not groq"),
            "{err}"
        );
    }

    #[test]
    fn bad_devices_are_refused() {
        for device in ["cuda:x", "cuda", "gpu", "cuda:-1", "CPU"] {
            let err = error_of(&format!(
                "upstreams:\n  e: {{kind: local, model: m.gguf, device: '{device}'}}\n"
            ));
            assert_eq!(
                err,
                format!(
                    "upstreams.e.device: expected \"cpu\" or \"cuda:N\" with N a GPU index (cuda:0), got {device:?}"
                )
            );
        }
        assert_eq!(LocalDevice::parse("cuda:3"), Ok(LocalDevice::Cuda(3)));
        assert_eq!(LocalDevice::Cuda(3).to_string(), "cuda:3");
    }

    #[test]
    fn bad_counts_and_prices_are_refused() {
        let err = error_of("upstreams:\n  e: {kind: local, model: m.gguf, max_sequences: 0}\n");
        assert_eq!(err, "upstreams.e.max_sequences: must be at least 1");
        let err =
            error_of("upstreams:\n  e: {kind: local, model: m.gguf, max_tokens_per_step: 0}\n");
        assert_eq!(err, "upstreams.e.max_tokens_per_step: must be at least 1");
        let err = error_of(
            "upstreams:\n  e: {kind: local, model: m.gguf, price: {input: '-1', output: 0}}\n",
        );
        assert!(
            err.starts_with("upstreams.e.price.input: expected a non-negative price"),
            "{err}"
        );
        let err = error_of("upstreams:\n  e: {kind: local, model: m.gguf, price: {inptu: 1}}\n");
        assert!(
            err.starts_with("upstreams.e.price.inptu: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_kind_names_its_path_and_the_valid_kinds() {
        let err = error_of("upstreams:\n  e: {kind: locl, model: m.gguf}\n");
        assert!(
            err.starts_with("upstreams.e.kind: unknown kind \"locl\"; valid kinds: openai, groq"),
            "{err}"
        );
        assert!(err.contains("bedrock, local"), "{err}");
    }
}
