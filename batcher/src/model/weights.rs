//! The runner's weights: dense (safetensors) or quantized (GGUF) linear
//! layers, and loading both formats into one [`LlamaWeights`]. GGUF
//! matrices are held once, in one format for every batch size
//! ([`prepare_matrix`]: Q4_1 -> Q8_0, padded for candle's VNNI kernel).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::config::ModelConfig;
use crate::error::{BatcherError, Result};

/// A linear layer `y = x W^T (+ b)` over dense or quantized weights.
///
/// One weight format per layer, whatever the batch: a row's result does not
/// depend on how many other rows share the step (see [`GgufOptions`]).
#[derive(Debug, Clone)]
pub enum Linear {
    /// Dense `[out, in]` weight.
    Dense {
        /// The weight, `[out, in]`.
        weight: Tensor,
        /// Optional bias, `[out]`.
        bias: Option<Tensor>,
    },
    /// GGUF-quantized weight, multiplied through candle's quantized matmul
    /// (activations quantized per row, weights read once per row tile).
    Quantized {
        /// The quantized weight, `[out, in_padded]`: a converted matrix's
        /// columns are padded with zeros to a multiple of [`PAD_K_TO`].
        weight: QMatMul,
        /// `in_padded - in`: zero columns appended to the input to match.
        pad: usize,
        /// Optional bias, `[out]`.
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// Applies the layer to `x` of shape `[tokens, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = match self {
            Self::Dense { weight, bias } => (x.matmul(&weight.t()?)?, bias),
            Self::Quantized { weight, pad, bias } => {
                let y = if *pad > 0 {
                    weight.forward(&x.pad_with_zeros(1, 0, *pad)?)?
                } else {
                    weight.forward(x)?
                };
                (y, bias)
            }
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// `layers` applied to the same `x` (`[tokens, in]`): Q, K and V, or gate
/// and up. When all are quantized alike (same padding, no bias) the input is
/// padded and quantized once and candle runs them in one parallel region
/// (`QTensor::gemv_fused_shared_lhs`, AVX-512 VNNI); otherwise one by one.
pub fn forward_shared(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
    let mut tensors = Vec::with_capacity(layers.len());
    let mut common_pad = None;
    for layer in layers {
        match layer {
            Linear::Quantized {
                weight: QMatMul::QTensor(t),
                pad,
                bias: None,
            } if common_pad.is_none_or(|p| p == *pad) => {
                common_pad = Some(*pad);
                tensors.push(t.as_ref());
            }
            _ => break,
        }
    }
    if let (Some(pad), true) = (common_pad, tensors.len() == layers.len()) {
        let padded = if pad > 0 {
            x.pad_with_zeros(1, 0, pad)?
        } else {
            x.contiguous()?
        };
        if let Some(outs) = QTensor::gemv_fused_shared_lhs(&tensors, &padded)? {
            return Ok(outs);
        }
    }
    layers.iter().map(|l| l.forward(x)).collect()
}

/// The token embedding: dense rows, or quantized rows dequantized on lookup
/// (for a tied GGUF model the same tensor is also the output projection, so
/// it is held once).
#[derive(Debug, Clone)]
pub enum Embedding {
    /// Dense `[vocab, hidden]`.
    Dense(Tensor),
    /// Quantized `[vocab, hidden_padded]` (see [`Linear::Quantized`]).
    Quantized {
        /// The rows.
        table: Arc<QTensor>,
        /// `hidden`: the leading columns that are real.
        width: usize,
    },
}

impl Embedding {
    /// The rows of `ids` (`[tokens]` u32), `[tokens, hidden]` f32.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(t) => t.index_select(ids, 0)?,
            Self::Quantized { table, width } => {
                let rows = table.embedding(ids)?;
                if rows.dim(1)? == *width {
                    rows
                } else {
                    rows.narrow(1, 0, *width)?.contiguous()?
                }
            }
        })
    }
}

/// How GGUF weights are held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufOptions {
    /// The type that matrices stored in a type without a SIMD CPU kernel in
    /// candle ([`needs_requantizing`]: Q4_1, Q5_0, Q5_1, whose `vec_dot` is
    /// scalar) are converted to at load; the same weights then serve every
    /// batch size. Default `Some(Q8_0)`: AVX2/AVX-512-VNNI kernels, and it
    /// holds every Q4_1/Q5 value to within 1/254 of its block's largest
    /// magnitude (well under the 4- or 5-bit step). `None`: keep the file's types.
    pub requantize_to: Option<GgmlDType>,
}

impl Default for GgufOptions {
    fn default() -> Self {
        Self {
            requantize_to: Some(GgmlDType::Q8_0),
        }
    }
}

/// Whether candle's CPU matmul for `dtype` is scalar (no SIMD `vec_dot`),
/// so the matrix is better converted at load (candle 0.11 `k_quants.rs`).
pub fn needs_requantizing(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// Q8_0 matrices get their input width padded with zero columns to a
/// multiple of this: candle 0.11's fast x86 kernels (`repack_x86.rs`, 16
/// output columns per AVX-512 VNNI `vpdpbusd`, up to 4 rows sharing each
/// weight load) quantize activations in 256-value superblocks and take only
/// matrices whose width is a multiple of 256; others (SmolLM2's are 576
/// wide) fall to the per-dot-product Q8_0 kernel, about 8x slower per weight
/// on this CPU. The zeros change no result; they cost 1/3 more weight bytes
/// for a 576-wide matrix.
pub const PAD_K_TO: usize = 256;

/// Loads a GGUF matrix for the runner: converted to `to` when its own type
/// has no SIMD kernel ([`requantize`]), then, when it is Q8_0, padded to a
/// multiple of [`PAD_K_TO`] columns ([`pad_columns`]).
pub fn prepare_matrix(q: QTensor, to: Option<GgmlDType>, device: &Device) -> Result<QTensor> {
    let q = requantize(q, to, device)?;
    if q.dtype() == GgmlDType::Q8_0 && device.is_cpu() {
        pad_columns(q, PAD_K_TO)
    } else {
        Ok(q)
    }
}

/// `q` (`[rows, cols]`, on the CPU) with all-zero blocks appended to every
/// row up to a multiple of `multiple` columns; every GGML block type decodes
/// an all-zero block (zero scale) to zeros, so the appended columns are
/// exactly 0. `q` itself when already a multiple, or not a matrix.
pub fn pad_columns(q: QTensor, multiple: usize) -> Result<QTensor> {
    let (rows, cols) = match q.shape().dims() {
        [rows, cols] => (*rows, *cols),
        _ => return Ok(q),
    };
    let dtype = q.dtype();
    let padded = cols.div_ceil(multiple) * multiple;
    if padded == cols
        || !cols.is_multiple_of(dtype.block_size())
        || !padded.is_multiple_of(dtype.block_size())
    {
        return Ok(q);
    }
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let zeros = vec![0u8; (padded - cols) / dtype.block_size() * dtype.type_size()];
    let data = q.data()?;
    let mut out = Vec::with_capacity(rows * (row_bytes + zeros.len()));
    for row in data.chunks_exact(row_bytes) {
        out.extend_from_slice(row);
        out.extend_from_slice(&zeros);
    }
    Ok(QTensor::new(
        QStorage::from_data(Cow::Owned(out), &Device::Cpu, dtype)?,
        (rows, padded),
    )?)
}

/// Rows converted at a time by [`requantize`] (bounds the f32 scratch).
const REQUANTIZE_ROWS: usize = 1024;

/// `q` converted to `to` (via f32, [`REQUANTIZE_ROWS`] rows at a time, so the
/// transient f32 copy stays small), or `q` itself when its type has a SIMD
/// kernel ([`needs_requantizing`]), `to` is `None`, or it is not a CPU matrix.
pub fn requantize(q: QTensor, to: Option<GgmlDType>, device: &Device) -> Result<QTensor> {
    let Some(to) = to else { return Ok(q) };
    let (rows, cols) = match q.shape().dims() {
        [rows, cols] => (*rows, *cols),
        _ => return Ok(q),
    };
    if !needs_requantizing(q.dtype())
        || q.dtype() == to
        || !device.is_cpu()
        || !cols.is_multiple_of(to.block_size())
    {
        return Ok(q);
    }
    let from = q.dtype();
    let data = q.data()?;
    let row_bytes = cols / from.block_size() * from.type_size();
    let mut out = Vec::with_capacity(rows * cols / to.block_size() * to.type_size());
    for first in (0..rows).step_by(REQUANTIZE_ROWS) {
        let n = REQUANTIZE_ROWS.min(rows - first);
        let bytes = &data[first * row_bytes..(first + n) * row_bytes];
        let part = QTensor::new(
            QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, from)?,
            (n, cols),
        )?;
        let values = part.dequantize(&Device::Cpu)?;
        out.extend_from_slice(&QTensor::quantize(&values, to)?.data()?);
    }
    Ok(QTensor::new(
        QStorage::from_data(Cow::Owned(out), device, to)?,
        (rows, cols),
    )?)
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
    /// Token embedding, `[vocab, hidden]`.
    pub embed_tokens: Embedding,
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
            embed_tokens: Embedding::Dense(embed_tokens),
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
    /// linears, converted per [`GgufOptions`]; a tied output projection
    /// shares the embedding's tensor).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        config: &ModelConfig,
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        options: &GgufOptions,
    ) -> Result<Self> {
        let to = options.requantize_to;
        let mut qtensor = |name: &str| content.tensor(reader, name, device);
        let hidden = config.hidden_size;
        let quantized = |q: Arc<QTensor>, input: usize| -> Result<Linear> {
            let pad = q.shape().dims2()?.1.saturating_sub(input);
            Ok(Linear::Quantized {
                weight: QMatMul::from_arc(q)?,
                pad,
                bias: None,
            })
        };
        let embed_q = Arc::new(prepare_matrix(qtensor("token_embd.weight")?, to, device)?);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("blk.{i}");
            let mut linear = |name: &str| -> Result<Linear> {
                let weight = qtensor(&format!("{p}.{name}.weight"))?;
                let input = weight.shape().dims2()?.1;
                let mut layer = quantized(Arc::new(prepare_matrix(weight, to, device)?), input)?;
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
            let weight = prepare_matrix(qtensor("output.weight")?, to, device)?;
            quantized(Arc::new(weight), hidden)?
        } else {
            // Tied: one tensor for the lookup and the projection.
            quantized(embed_q.clone(), hidden)?
        };
        let embed_tokens = match embed_q.dtype() {
            // Float "quantized" types: a plain tensor (candle's QMatMul does the same).
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Embedding::Dense(embed_q.dequantize(device)?)
            }
            _ => Embedding::Quantized {
                table: embed_q,
                width: hidden,
            },
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }
}
