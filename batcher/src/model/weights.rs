//! The runner's weights: dense (safetensors) or quantized (GGUF) linear
//! layers, and loading both formats into one [`LlamaWeights`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::config::ModelConfig;
use crate::error::{BatcherError, Result};

/// A linear layer `y = x W^T (+ b)` over dense or quantized weights.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Dense `[out, in]` weight.
    Dense {
        /// The weight, `[out, in]`.
        weight: Tensor,
        /// Optional bias, `[out]`.
        bias: Option<Tensor>,
    },
    /// GGUF-quantized weight, multiplied through candle's quantized matmul.
    Quantized {
        /// The quantized weight, `[out, in]`.
        weight: QMatMul,
        /// The same weight dequantized, used for batches of at least
        /// `dense_min_rows` rows: candle's quantized CPU matmul costs the same
        /// per row at any batch size, while a dense GEMM reuses each weight
        /// across rows. `None`: always quantized.
        dense: Option<Tensor>,
        /// Smallest row count that takes the dense path.
        dense_min_rows: usize,
        /// Optional bias, `[out]`.
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// Applies the layer to `x` of shape `[tokens, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = match self {
            Self::Dense { weight, bias } => (x.matmul(&weight.t()?)?, bias),
            Self::Quantized {
                weight,
                dense,
                dense_min_rows,
                bias,
            } => match dense {
                Some(w) if x.dim(0)? >= *dense_min_rows => (x.matmul(&w.t()?)?, bias),
                _ => (weight.forward(x)?, bias),
            },
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// How GGUF weights are held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufOptions {
    /// Also keep an f32 copy of every quantized matrix and use it for steps
    /// of at least this many rows (large batches, prefill); smaller steps use
    /// the quantized matmul. Costs 4 bytes per weight of memory. `None`:
    /// quantized only.
    pub dense_min_rows: Option<usize>,
}

impl Default for GgufOptions {
    fn default() -> Self {
        Self {
            dense_min_rows: Some(2),
        }
    }
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// RMSNorm before attention.
    pub input_norm: Tensor,
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Attention output projection.
    pub o_proj: Linear,
    /// RMSNorm before the MLP.
    pub post_attention_norm: Tensor,
    /// MLP gate projection.
    pub gate_proj: Linear,
    /// MLP up projection.
    pub up_proj: Linear,
    /// MLP down projection.
    pub down_proj: Linear,
}

/// Every weight of a Llama-family decoder.
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    /// Token embedding, `[vocab, hidden]` (dense, for row lookup).
    pub embed_tokens: Tensor,
    /// Decoder layers.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm.
    pub norm: Tensor,
    /// Output projection to the vocabulary.
    pub lm_head: Linear,
}

impl LlamaWeights {
    /// Builds the weights from tensors keyed by HF names (`model.layers.0...`).
    pub fn from_hf_tensors(
        config: &ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let mut take = |name: &str| -> Result<Tensor> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| BatcherError::Config(format!("missing tensor {name}")))?;
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let embed_tokens = take("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, bias: bool| -> Result<Linear> {
                Ok(Linear::Dense {
                    weight: take(&format!("{p}.{name}.weight"))?,
                    bias: if bias {
                        Some(take(&format!("{p}.{name}.bias"))?)
                    } else {
                        None
                    },
                })
            };
            let b = config.attention_bias;
            let q_proj = linear("self_attn.q_proj", b)?;
            let k_proj = linear("self_attn.k_proj", b)?;
            let v_proj = linear("self_attn.v_proj", b)?;
            let o_proj = linear("self_attn.o_proj", false)?;
            let gate_proj = linear("mlp.gate_proj", false)?;
            let up_proj = linear("mlp.up_proj", false)?;
            let down_proj = linear("mlp.down_proj", false)?;
            layers.push(LayerWeights {
                input_norm: take(&format!("{p}.input_layernorm.weight"))?,
                post_attention_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                gate_proj,
                up_proj,
                down_proj,
            });
        }
        let norm = take("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            take("lm_head.weight")?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head: Linear::Dense {
                weight: lm_head,
                bias: None,
            },
        })
    }

    /// Reads `model.safetensors` from an HF model directory.
    pub fn load_safetensors(config: &ModelConfig, dir: &Path, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
        Self::from_hf_tensors(config, tensors, device)
    }

    /// Builds the weights from a GGUF file's `llama` tensors (quantized
    /// linears; see [`GgufOptions`] for the dense copies used by large batches).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        config: &ModelConfig,
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        options: &GgufOptions,
    ) -> Result<Self> {
        let mut qtensor = |name: &str| content.tensor(reader, name, device);
        let quantized = |q: QTensor, dense: Option<Tensor>| -> Result<Linear> {
            let dense = match (options.dense_min_rows, dense) {
                (None, _) => None,
                (Some(_), Some(d)) => Some(d),
                (Some(_), None) => Some(q.dequantize(device)?),
            };
            Ok(Linear::Quantized {
                weight: QMatMul::from_qtensor(q)?,
                dense,
                dense_min_rows: options.dense_min_rows.unwrap_or(usize::MAX),
                bias: None,
            })
        };
        let embed_q = qtensor("token_embd.weight")?;
        let embed_tokens = embed_q.dequantize(device)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("blk.{i}");
            let mut linear = |name: &str| -> Result<Linear> {
                let mut layer = quantized(qtensor(&format!("{p}.{name}.weight"))?, None)?;
                let bias_name = format!("{p}.{name}.bias");
                if content.tensor_infos.contains_key(&bias_name) {
                    if let Linear::Quantized { bias, .. } = &mut layer {
                        *bias = Some(qtensor(&bias_name)?.dequantize(device)?);
                    }
                }
                Ok(layer)
            };
            let q_proj = linear("attn_q")?;
            let k_proj = linear("attn_k")?;
            let v_proj = linear("attn_v")?;
            let o_proj = linear("attn_output")?;
            let gate_proj = linear("ffn_gate")?;
            let up_proj = linear("ffn_up")?;
            let down_proj = linear("ffn_down")?;
            let mut norm = |name: &str| -> Result<Tensor> {
                Ok(qtensor(&format!("{p}.{name}.weight"))?.dequantize(device)?)
            };
            layers.push(LayerWeights {
                input_norm: norm("attn_norm")?,
                post_attention_norm: norm("ffn_norm")?,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                gate_proj,
                up_proj,
                down_proj,
            });
        }
        let norm = qtensor("output_norm.weight")?.dequantize(device)?;
        let lm_head = if content.tensor_infos.contains_key("output.weight") {
            quantized(qtensor("output.weight")?, None)?
        } else {
            // Tied: the dense copy is the embedding we already hold.
            quantized(embed_q, Some(embed_tokens.clone()))?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }
}
