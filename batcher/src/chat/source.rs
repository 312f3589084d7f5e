//! Where a model's chat template, its special tokens and its extra stop ids
//! come from: GGUF metadata, or an HF folder's `tokenizer_config.json`
//! (`chat_template.jinja` beside it) and `generation_config.json`. A
//! configured template file wins over the model's own.

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::Tokenizer;

use super::{ChatTemplate, SpecialTokens};
use crate::error::{BatcherError, Result};

/// Reads a file as text, naming it in the error.
fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| BatcherError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a JSON file, or `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| BatcherError::Config(format!("{}: {e}", path.display())))
}

/// A token's text from its id, through the tokenizer.
fn token_text(tokenizer: Option<&Tokenizer>, id: Option<u32>) -> Option<String> {
    tokenizer?.id_to_token(id?)
}

/// Builds the template from `source`, or from the override file when given.
fn template(
    own: Option<String>,
    override_path: Option<&Path>,
    special: SpecialTokens,
) -> Result<Option<ChatTemplate>> {
    let source = match override_path {
        Some(path) => Some(read_text(path)?),
        None => own,
    };
    match source {
        Some(source) => Ok(Some(ChatTemplate::new(source, special)?)),
        None => Ok(None),
    }
}

/// The chat template of a GGUF file (`tokenizer.chat_template`), with its
/// BOS/EOS text looked up by id (`tokenizer.ggml.bos_token_id`,
/// `tokenizer.ggml.eos_token_id`).
pub(crate) fn gguf_chat_template(
    content: &gguf_file::Content,
    tokenizer: &Tokenizer,
    override_path: Option<&Path>,
) -> Result<Option<ChatTemplate>> {
    let id = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
    let special = SpecialTokens {
        bos_token: token_text(Some(tokenizer), id("tokenizer.ggml.bos_token_id")),
        eos_token: token_text(Some(tokenizer), id("tokenizer.ggml.eos_token_id")),
    };
    let own = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    template(own, override_path, special)
}

/// What an HF folder says about chatting: `tokenizer_config.json`.
#[derive(Debug, Default)]
pub(crate) struct HfChatFiles {
    /// The template source, if the folder has one.
    template: Option<String>,
    /// The special tokens' text.
    special: SpecialTokens,
}

/// A special token in `tokenizer_config.json`: a string, or an object with
/// its `content`.
fn special_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(text) => Some(text.clone()),
        other => other.get("content")?.as_str().map(str::to_string),
    }
}

/// `chat_template` in `tokenizer_config.json`: a string, or a list of
/// `{name, template}` of which `default` is taken.
fn config_template(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// Reads `tokenizer_config.json` (and `chat_template.jinja`, which newer
/// `transformers` write instead of the key). Missing tokens fall back to the
/// text of `config.json`'s `bos_token_id` / first `eos_token_id`.
pub(crate) fn hf_chat_files(
    dir: &Path,
    tokenizer: Option<&Tokenizer>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
) -> Result<HfChatFiles> {
    let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(serde_json::Value::Null);
    let mut template = config_template(&config);
    let jinja = dir.join("chat_template.jinja");
    if template.is_none() && jinja.exists() {
        template = Some(read_text(&jinja)?);
    }
    let special = SpecialTokens {
        bos_token: special_token(&config, "bos_token").or_else(|| token_text(tokenizer, bos_id)),
        eos_token: special_token(&config, "eos_token").or_else(|| token_text(tokenizer, eos_id)),
    };
    Ok(HfChatFiles { template, special })
}

impl HfChatFiles {
    /// The id of the EOS text, when the tokenizer knows it (a chat model's
    /// end-of-turn token, which `config.json` may not list).
    pub(crate) fn eos_id(&self, tokenizer: Option<&Tokenizer>) -> Option<u32> {
        tokenizer?.token_to_id(self.special.eos_token.as_deref()?)
    }

    /// The template, or the override file's when given.
    pub(crate) fn into_template(
        self,
        override_path: Option<&Path>,
    ) -> Result<Option<ChatTemplate>> {
        template(self.template, override_path, self.special)
    }
}

/// Every id in `generation_config.json`'s `eos_token_id` (a number or a
/// list); none when the file or key is missing.
pub(crate) fn generation_config_eos(dir: &Path) -> Result<Vec<u32>> {
    let Some(config) = read_json(&dir.join("generation_config.json"))? else {
        return Ok(Vec::new());
    };
    let id = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    Ok(match config.get("eos_token_id") {
        Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(id).collect(),
        Some(one) => id(one).into_iter().collect(),
        None => Vec::new(),
    })
}
