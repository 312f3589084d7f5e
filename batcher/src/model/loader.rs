//! Loading a model (and its tokenizer) from disk: an HF directory
//! (`config.json`, `model.safetensors`, optional `tokenizer.json`) or a GGUF
//! file (quantized weights; tokenizer rebuilt from the GGUF metadata).

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::Device;
use tokenizers::Tokenizer;

use super::config::{ModelConfig, RopeStyle};
use super::llama::LlamaRunner;
use super::weights::{GgufOptions, LlamaWeights};
use crate::error::{BatcherError, Result};

/// A runner plus the tokenizer that came with it (if any).
#[derive(Debug)]
pub struct LoadedModel {
    /// The model, ready to run.
    pub runner: LlamaRunner,
    /// Its tokenizer; `None` for a directory without `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BatcherError + '_ {
    move |source| BatcherError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Loads an HF model directory onto `device`.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let json = std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
    let config = ModelConfig::from_hf_json(&json)?;
    let weights = LlamaWeights::load_safetensors(&config, dir, device)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.exists() {
        Some(
            Tokenizer::from_file(&tokenizer_path)
                .map_err(|e| BatcherError::Tokenizer(e.to_string()))?,
        )
    } else {
        None
    };
    Ok(LoadedModel {
        runner: LlamaRunner::new(config, weights, device)?,
        tokenizer,
    })
}

/// Reads the model shape from GGUF metadata (`llama.*` keys).
pub fn gguf_config(content: &gguf_file::Content) -> Result<ModelConfig> {
    let get = |key: &str| {
        content
            .metadata
            .get(key)
            .ok_or_else(|| BatcherError::Config(format!("GGUF metadata lacks {key}")))
    };
    let arch = get("general.architecture")?
        .to_string()
        .map_err(|e| BatcherError::Config(e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(BatcherError::Config(format!(
            "GGUF architecture {arch:?} is not llama"
        )));
    }
    let num = |key: &str| -> Result<usize> {
        Ok(get(key)?
            .to_u32()
            .map_err(|e| BatcherError::Config(e.to_string()))? as usize)
    };
    let float = |key: &str| -> Result<f32> {
        get(key)?
            .to_f32()
            .map_err(|e| BatcherError::Config(e.to_string()))
    };
    let hidden_size = num("llama.embedding_length")?;
    let num_attention_heads = num("llama.attention.head_count")?;
    let head_dim = match num("llama.rope.dimension_count") {
        Ok(d) => d,
        Err(_) => hidden_size / num_attention_heads.max(1),
    };
    let vocab_size = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|info| info.shape.dims()[0])
        .ok_or_else(|| BatcherError::Config("GGUF lacks token_embd.weight".into()))?;
    let eos = num("tokenizer.ggml.eos_token_id").ok().map(|e| e as u32);
    let config = ModelConfig {
        vocab_size,
        hidden_size,
        intermediate_size: num("llama.feed_forward_length")?,
        num_hidden_layers: num("llama.block_count")?,
        num_attention_heads,
        num_key_value_heads: num("llama.attention.head_count_kv").unwrap_or(num_attention_heads),
        head_dim,
        rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
        rope_theta: float("llama.rope.freq_base").unwrap_or(10_000.0),
        max_position_embeddings: num("llama.context_length").unwrap_or(2048),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        attention_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        rope_style: RopeStyle::Interleaved,
        eos_token_ids: eos.into_iter().collect(),
        bos_token_id: num("tokenizer.ggml.bos_token_id").ok().map(|b| b as u32),
    };
    config.validate()?;
    Ok(config)
}

/// Loads a GGUF file onto `device`, with the tokenizer from its metadata,
/// with the default [`GgufOptions`].
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_gguf_with(path, device, &GgufOptions::default())
}

/// Loads a GGUF file onto `device` with explicit [`GgufOptions`].
pub fn load_gguf_with(path: &Path, device: &Device, options: &GgufOptions) -> Result<LoadedModel> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let content = gguf_file::Content::read(&mut file)?;
    let config = gguf_config(&content)?;
    let weights = LlamaWeights::from_gguf(&config, &content, &mut file, device, options)?;
    let tokenizer = Tokenizer::from_gguf(&content)?;
    Ok(LoadedModel {
        runner: LlamaRunner::new(config, weights, device)?,
        tokenizer: Some(tokenizer),
    })
}
