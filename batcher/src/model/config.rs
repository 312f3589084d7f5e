//! The model shape the runner needs, read from an HF `config.json` or from
//! GGUF metadata.

use serde::{Deserialize, Serialize};

use crate::error::{BatcherError, Result};

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// HF layout: dimension `i` pairs with `i + head_dim / 2` (`rotate_half`).
    Half,
    /// GGUF/llama.cpp layout: adjacent dimensions pair up (Q/K rows permuted at conversion).
    Interleaved,
}

/// A Llama-family decoder's shape (Llama, SmolLM, TinyLlama, Qwen2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Longest position the RoPE tables cover.
    pub max_position_embeddings: usize,
    /// The LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Q/K/V projections carry a bias (Qwen2).
    pub attention_bias: bool,
    /// RoPE dimension pairing.
    pub rope_style: RopeStyle,
    /// Token ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
}

/// `config.json` as Hugging Face writes it; only the fields we use.
#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f32 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}

impl ModelConfig {
    /// Parses an HF `config.json`. Refuses architectures or options the
    /// runner does not implement (rope scaling, sliding windows).
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let raw: HfConfig =
            serde_json::from_str(json).map_err(|e| BatcherError::Config(e.to_string()))?;
        let model_type = raw.model_type.as_deref().unwrap_or("llama");
        if !matches!(model_type, "llama" | "qwen2" | "mistral") {
            return Err(BatcherError::Config(format!(
                "model_type {model_type:?} is not a Llama-family decoder"
            )));
        }
        if raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(BatcherError::Config("rope_scaling is not supported".into()));
        }
        let eos_token_ids = match raw.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|n| n as u32)
                .collect(),
            _ => Vec::new(),
        };
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1)),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: raw.attention_bias.unwrap_or(model_type == "qwen2"),
            rope_style: RopeStyle::Half,
            eos_token_ids,
            bos_token_id: raw.bos_token_id,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the shape is self-consistent.
    pub fn validate(&self) -> Result<()> {
        let heads = self.num_attention_heads;
        let kv = self.num_key_value_heads;
        if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            return Err(BatcherError::Config(format!(
                "num_attention_heads {heads} must be a positive multiple of num_key_value_heads {kv}"
            )));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(BatcherError::Config(
                "head_dim must be even and positive".into(),
            ));
        }
        Ok(())
    }

    /// Query heads sharing one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Width of one token's K (or V) across all KV heads.
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm_style_config_parses() {
        let json = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,
            "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
            "num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000,
            "max_position_embeddings":8192,"tie_word_embeddings":true,
            "bos_token_id":1,"eos_token_id":2,"rope_scaling":null}"#;
        let c = ModelConfig::from_hf_json(json).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.group_size(), 3);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert!(!c.attention_bias);
    }

    #[test]
    fn non_llama_is_refused() {
        let json = r#"{"model_type":"gpt2","vocab_size":1,"hidden_size":2,
            "intermediate_size":2,"num_hidden_layers":1,"num_attention_heads":1}"#;
        assert!(ModelConfig::from_hf_json(json).is_err());
    }
}
