//! The upstream `kind`s sluice knows: each one's wire format, default base
//! URL and whether it needs a key, and the defaults of the wire formats'
//! own settings (the one place they are written; `providers/` re-exports
//! them). OpenAI-compatible vendors are data here, sharing the one OpenAI
//! implementation in `providers/`; `local` is the built-in engine (see
//! `local.rs`).

/// A named default for an upstream `kind`: its wire format and base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The `kind` value in config.
    pub name: &'static str,
    /// The wire format: `openai`, `azure`, `anthropic`, `gemini`, `bedrock`,
    /// or `local` (the built-in engine, which speaks OpenAI's shape in-process).
    pub format: &'static str,
    /// `base_url` when config gives none (`None`: it must be given; for
    /// Bedrock it is derived from the region, see [`bedrock_base_url`]; a
    /// `local` upstream has none and refuses one).
    pub base_url: Option<&'static str>,
    /// Whether an `api_key` is needed.
    pub needs_api_key: bool,
}

const fn preset(
    name: &'static str,
    format: &'static str,
    base_url: Option<&'static str>,
    needs_api_key: bool,
) -> Preset {
    Preset {
        name,
        format,
        base_url,
        needs_api_key,
    }
}

/// Every upstream `kind` sluice knows. OpenAI-compatible vendors are data:
/// a base URL and Bearer auth over the one OpenAI implementation.
pub const PRESETS: &[Preset] = &[
    preset("openai", "openai", Some("https://api.openai.com/v1"), true),
    preset(
        "groq",
        "openai",
        Some("https://api.groq.com/openai/v1"),
        true,
    ),
    preset("mistral", "openai", Some("https://api.mistral.ai/v1"), true),
    preset(
        "deepseek",
        "openai",
        Some("https://api.deepseek.com/v1"),
        true,
    ),
    preset(
        "together",
        "openai",
        Some("https://api.together.xyz/v1"),
        true,
    ),
    preset(
        "openrouter",
        "openai",
        Some("https://openrouter.ai/api/v1"),
        true,
    ),
    preset("vllm", "openai", Some("http://127.0.0.1:8000/v1"), false),
    preset("ollama", "openai", Some("http://127.0.0.1:11434/v1"), false),
    preset("tgi", "openai", Some("http://127.0.0.1:8080/v1"), false),
    preset("sluice", "openai", None, true),
    preset("azure", "azure", None, true),
    preset(
        "anthropic",
        "anthropic",
        Some("https://api.anthropic.com/v1"),
        true,
    ),
    preset(
        "gemini",
        "gemini",
        Some("https://generativelanguage.googleapis.com/v1beta"),
        true,
    ),
    preset("bedrock", "bedrock", None, false),
    preset("local", "local", None, false),
];

/// Looks up a `kind` in [`PRESETS`].
pub fn find_preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Bedrock's runtime endpoint for `region`.
pub fn bedrock_base_url(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// Azure's `api-version` when config gives none (Azure's latest GA at writing).
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Anthropic's `anthropic-version` header when config gives none.
pub const ANTHROPIC_DEFAULT_VERSION: &str = "2023-06-01";

/// Anthropic's `max_tokens` when neither the client nor config gives one
/// (Anthropic requires the field).
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u64 = 4096;
