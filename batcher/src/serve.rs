//! Serving a model for the gateway: load it, size and start its engine, and
//! turn a request's messages into prompt tokens. The gateway calls only this
//! module (and the engine's handle), so candle stays inside this crate.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use tokenizers::Tokenizer;

use crate::chat::{encode_chat_prompt, ChatTemplate};
use crate::engine::{Engine, EngineConfig, EngineHandle};
use crate::error::ChatError;
use crate::error::{BatcherError, Result};
use crate::model::{load_model, ModelConfig};
use crate::scheduler::SchedulerConfig;

/// KV cache memory when the config gives no size (f32 K and V).
pub const DEFAULT_KV_CACHE_BYTES: u64 = 512 * 1024 * 1024;
/// Tokens per KV block.
pub const BLOCK_SIZE: usize = 16;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU (the default, and what tests run on).
    Cpu,
    /// CUDA device `n` (needs the `cuda` cargo feature).
    Cuda(usize),
}

/// How large the KV cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// A number of blocks of 16 tokens.
    Blocks(usize),
    /// A memory budget, turned into blocks for the model's shape.
    Bytes(u64),
}

/// What to serve and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// A GGUF file or an HF model folder.
    pub model: PathBuf,
    /// Where it runs.
    pub device: DeviceChoice,
    /// KV cache size; [`DEFAULT_KV_CACHE_BYTES`] when `None`.
    pub kv_cache: Option<KvCacheSize>,
    /// Sequences in one batch at most.
    pub max_sequences: usize,
    /// Tokens (prefill and decode) in one step at most.
    pub max_tokens_per_step: usize,
    /// CPU threads for the model's kernels; 0 = one per core.
    pub threads: usize,
    /// A Jinja file that replaces the model's own chat template.
    pub chat_template: Option<PathBuf>,
}

/// Why a prompt could not be built: the client's problem (a 400), or the
/// model's (no template, tokenizer failure).
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The messages do not fit the template (images to a text model, tools
    /// to a template without tools, a bad shape); safe to show the client.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The prompt is longer than the model's context.
    #[error("the prompt has {tokens} tokens; this model's context is {context} tokens")]
    TooLong {
        /// Prompt tokens.
        tokens: usize,
        /// The model's context.
        context: usize,
    },
    /// The tokenizer failed (logged; a 500).
    #[error(transparent)]
    Model(#[from] BatcherError),
}

/// A model with its engine running, ready to take requests.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The engine's handle.
    engine: EngineHandle,
    /// For prompts (the engine keeps its own copy for detokenizing).
    tokenizer: Arc<Tokenizer>,
    /// The chat template, when the model has one.
    chat: Option<Arc<ChatTemplate>>,
    /// Tokens the model can attend to.
    context_tokens: usize,
}

impl ServedModel {
    /// Loads the model, sizes its KV cache and starts the engine thread.
    pub fn start(options: &ServeOptions) -> Result<Self> {
        if options.threads > 0 {
            // The global pool can be built once per process; a second
            // served model keeps the first one's.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(options.threads)
                .build_global();
        }
        let device = match options.device {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda(n) => Device::new_cuda(n)?,
        };
        let model = load_model(&options.model, &device, options.chat_template.as_deref())?;
        let tokenizer = model.tokenizer.clone().ok_or_else(|| {
            BatcherError::Config(format!(
                "{} has no tokenizer (tokenizer.json)",
                options.model.display()
            ))
        })?;
        let shape = model.runner.config().clone();
        let num_blocks = match options
            .kv_cache
            .unwrap_or(KvCacheSize::Bytes(DEFAULT_KV_CACHE_BYTES))
        {
            KvCacheSize::Blocks(n) => n,
            KvCacheSize::Bytes(bytes) => (bytes / block_bytes(&shape)).max(1) as usize,
        };
        let scheduler = SchedulerConfig {
            block_size: BLOCK_SIZE,
            num_blocks,
            max_num_seqs: options.max_sequences,
            max_tokens_per_step: options.max_tokens_per_step,
            // Decodes go first in every step; a prefill takes what is left.
            max_prefill_chunk: options.max_tokens_per_step,
            ..SchedulerConfig::default()
        };
        let chat = model.chat.clone().map(Arc::new);
        let engine = Engine::start(
            model,
            EngineConfig {
                scheduler,
                ..EngineConfig::default()
            },
        )?;
        tracing::info!(
            model = %options.model.display(),
            kv_blocks = num_blocks,
            kv_tokens = num_blocks * BLOCK_SIZE,
            context = shape.max_position_embeddings,
            chat_template = chat.is_some(),
            "local model ready"
        );
        Ok(ServedModel {
            engine,
            tokenizer: Arc::new(tokenizer),
            chat,
            context_tokens: shape.max_position_embeddings,
        })
    }

    /// The engine's handle (submit, cancel, pause, resume, stats).
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// Tokens the model can attend to.
    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// One token's text, as OpenAI's `logprobs` show it (special tokens
    /// included; a partial UTF-8 character decodes lossily).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    /// Prompt tokens for an OpenAI Chat Completions `messages` array (and
    /// `tools`), rendered with the model's chat template.
    pub fn chat_prompt(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
    ) -> std::result::Result<Vec<u32>, PromptError> {
        let template = self.chat.as_deref().ok_or(ChatError::NoTemplate)?;
        let rendered = template.render(messages, tools, true)?;
        let ids = encode_chat_prompt(&self.tokenizer, template, &rendered)?;
        self.fits(ids)
    }

    /// Prompt tokens for plain text (`/v1/completions`), with the
    /// tokenizer's own special tokens (a BOS where the model wants one).
    pub fn text_prompt(&self, text: &str) -> std::result::Result<Vec<u32>, PromptError> {
        let ids = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| BatcherError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec();
        self.fits(ids)
    }

    fn fits(&self, ids: Vec<u32>) -> std::result::Result<Vec<u32>, PromptError> {
        if ids.len() >= self.context_tokens {
            return Err(PromptError::TooLong {
                tokens: ids.len(),
                context: self.context_tokens,
            });
        }
        Ok(ids)
    }
}

/// Bytes of one KV block for `shape`: K and V, every layer, f32.
fn block_bytes(shape: &ModelConfig) -> u64 {
    let per_token = 2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim * 4;
    (per_token * BLOCK_SIZE) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::{scratch_dir, write_tiny_model};

    fn options(dir: PathBuf) -> ServeOptions {
        ServeOptions {
            model: dir,
            device: DeviceChoice::Cpu,
            kv_cache: Some(KvCacheSize::Bytes(1 << 20)),
            max_sequences: 4,
            max_tokens_per_step: 64,
            threads: 0,
            chat_template: None,
        }
    }

    #[test]
    fn a_byte_budget_becomes_blocks_for_the_models_shape() {
        let shape = crate::model::tiny::tiny_config(true);
        let per_block = block_bytes(&shape);
        assert_eq!(
            per_block,
            (2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim * 4 * 16)
                as u64
        );
    }

    #[test]
    fn the_tiny_model_serves_a_chat_prompt() {
        let dir = write_tiny_model(&scratch_dir("serve-chat"), 7, true).unwrap();
        let served = ServedModel::start(&options(dir)).unwrap();
        let messages = serde_json::json!([{"role": "user", "content": "hello"}]);
        let ids = served.chat_prompt(&messages, None).unwrap();
        assert!(!ids.is_empty());
        let image = serde_json::json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}
        ]}]);
        assert!(matches!(
            served.chat_prompt(&image, None),
            Err(PromptError::Chat(_))
        ));
        let long = "hello ".repeat(served.context_tokens() + 1);
        assert!(matches!(
            served.text_prompt(&long),
            Err(PromptError::TooLong { .. })
        ));
    }
}
