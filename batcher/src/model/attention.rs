//! Paged attention over each sequence's own cached blocks: the gather-based
//! version, which runs on any candle device (CPU and CUDA alike).
//!
//! For every sequence, its context's K/V rows are gathered from the pools by
//! slot id, and its query tokens attend to them with a causal mask; grouped
//! query heads share their KV head without copying it.

use candle_core::Tensor;

use super::batch::PackedBatch;
use crate::error::Result;

/// Attention output `[tokens, heads * head_dim]` for queries `q`
/// (`[tokens, heads, head_dim]`, already rotated) against the pools of one layer.
pub fn paged_attention(
    q: &Tensor,
    key_pool: &Tensor,
    value_pool: &Tensor,
    batch: &PackedBatch,
    num_kv_heads: usize,
) -> Result<Tensor> {
    let (_, heads, head_dim) = q.dims3()?;
    let group = heads / num_kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut outputs = Vec::with_capacity(batch.seqs.len());
    for seq in &batch.seqs {
        let len = seq.query_len;
        let context = seq.start + len;
        // [len, heads, d] -> [kv, group * len, d]
        let q_s = q
            .narrow(0, seq.query_offset, len)?
            .reshape((len, num_kv_heads, group, head_dim))?
            .permute((1, 2, 0, 3))?
            .reshape((num_kv_heads, group * len, head_dim))?;
        // [context, kv * d] -> [kv, context, d]
        let k = key_pool
            .index_select(&seq.context_slots, 0)?
            .reshape((context, num_kv_heads, head_dim))?
            .transpose(0, 1)?
            .contiguous()?;
        let v = value_pool
            .index_select(&seq.context_slots, 0)?
            .reshape((context, num_kv_heads, head_dim))?
            .transpose(0, 1)?
            .contiguous()?;
        let scores = (q_s.matmul(&k.t()?)? * scale)?;
        let scores = match &seq.mask {
            Some(mask) => scores
                .reshape((num_kv_heads, group, len, context))?
                .broadcast_add(mask)?
                .reshape((num_kv_heads, group * len, context))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // [kv, group * len, d] -> [len, heads * d]
        let out = probs
            .matmul(&v)?
            .reshape((num_kv_heads, group, len, head_dim))?
            .permute((2, 0, 1, 3))?
            .reshape((len, heads * head_dim))?;
        outputs.push(out);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}
