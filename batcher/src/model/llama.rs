//! The packed Llama runner: one forward pass over a [`PackedBatch`] of
//! variable-length chunks (no padding), with per-token RoPE positions,
//! attention over each sequence's own cached blocks, and logits only for the
//! rows that will be sampled.

use candle_core::{DType, Device, Tensor};

use super::attention::paged_attention;
use super::batch::PackedBatch;
use super::config::{ModelConfig, RopeStyle};
use super::cpu_attention::paged_attention_cpu;
use super::weights::{forward_shared, LlamaWeights};
use crate::error::Result;
use crate::kv_cache::KvCache;

/// Which paged-attention implementation a runner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Gather each sequence's K/V rows with candle ops; runs on any device.
    Gather,
    /// One fused CPU kernel per layer, batch- and chunk-invariant (CPU, f32 only).
    Cpu,
}

/// A Llama-family decoder ready to run packed batches on one device.
#[derive(Debug, Clone)]
pub struct LlamaRunner {
    /// Model shape.
    config: ModelConfig,
    /// All weights, on `device`.
    weights: LlamaWeights,
    /// RoPE cosines, `[max_positions, head_dim / 2]`.
    cos: Tensor,
    /// RoPE sines, `[max_positions, head_dim / 2]`.
    sin: Tensor,
    /// Where the weights and the cache live.
    device: Device,
    /// Paged-attention implementation.
    attention: AttentionKernel,
}

impl LlamaRunner {
    /// Wraps loaded weights; precomputes the RoPE tables.
    pub fn new(config: ModelConfig, weights: LlamaWeights, device: &Device) -> Result<Self> {
        config.validate()?;
        let half = config.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_theta
                    .powf(2.0 * i as f32 / config.head_dim as f32)
            })
            .collect();
        let max_pos = config.max_position_embeddings;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = positions.broadcast_mul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            config,
            weights,
            device: device.clone(),
            attention: if device.is_cpu() {
                AttentionKernel::Cpu
            } else {
                AttentionKernel::Gather
            },
        })
    }

    /// The same runner with another attention implementation (tests compare them).
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.attention = kernel;
        self
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache> {
        KvCache::new(
            &self.config,
            num_blocks,
            block_size,
            DType::F32,
            &self.device,
        )
    }

    /// Runs one step: writes the batch's K/V into `cache` and returns logits
    /// `[batch.num_logits, vocab]` for the rows marked `wants_logits`, in order.
    pub fn forward(&self, batch: &PackedBatch, cache: &KvCache) -> Result<Tensor> {
        let c = &self.config;
        let t = batch.num_tokens;
        let eps = c.rms_norm_eps as f32;
        let cos = self.cos.index_select(&batch.positions, 0)?.unsqueeze(1)?;
        let sin = self.sin.index_select(&batch.positions, 0)?.unsqueeze(1)?;
        let rope = |x: Tensor, heads: usize| -> Result<Tensor> {
            let x = x.reshape((t, heads, 1, c.head_dim))?;
            let y = match c.rope_style {
                RopeStyle::Half => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
            };
            Ok(y.reshape((t, heads, c.head_dim))?)
        };
        let mut x = self.weights.embed_tokens.lookup(&batch.token_ids)?;
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.input_norm, eps)?;
            let [q, k, v]: [Tensor; 3] =
                forward_shared(&[&layer.q_proj, &layer.k_proj, &layer.v_proj], &h)?
                    .try_into()
                    .map_err(|_| candle_core::Error::Msg("expected 3 projections".into()))?;
            let q = rope(q, c.num_attention_heads)?;
            let k = rope(k, c.num_key_value_heads)?.reshape((t, c.kv_width()))?;
            cache.write(i, &batch.write_index, &k, &v)?;
            let attn = match cache.layer(i) {
                Some((keys, values)) => match self.attention {
                    AttentionKernel::Cpu => {
                        paged_attention_cpu(&q, keys, values, batch, c.num_key_value_heads)?
                    }
                    AttentionKernel::Gather => {
                        paged_attention(&q, keys, values, batch, c.num_key_value_heads)?
                    }
                },
                None => {
                    return Err(
                        candle_core::Error::Msg("KV cache has too few layers".into()).into(),
                    )
                }
            };
            x = (x + layer.o_proj.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.post_attention_norm, eps)?;
            let [gate, up]: [Tensor; 2] = forward_shared(&[&layer.gate_proj, &layer.up_proj], &h)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("expected 2 projections".into()))?;
            let mlp = layer
                .down_proj
                .forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
            x = (x + mlp)?;
        }
        if batch.num_logits == 0 {
            return Ok(Tensor::zeros((0, c.vocab_size), DType::F32, &self.device)?);
        }
        let last = x.index_select(&batch.logit_rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.weights.norm, eps)?;
        let logits = self.weights.lm_head.forward(&last)?;
        Ok(logits.to_dtype(DType::F32)?)
    }
}

#[cfg(test)]
#[path = "llama_tests.rs"]
mod tests;
