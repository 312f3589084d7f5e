//! Paged attention as one CPU kernel per layer (a candle custom op): each
//! (token, head) row reads its sequence's K/V straight from the pools by slot,
//! so no gathered copies are made and there is one op per layer instead of a
//! dozen per sequence.
//!
//! Every row is computed in a fixed order that does not depend on what else
//! is in the batch or how the prompt was chunked, so results are bitwise
//! batch- and chunk-invariant (with row-independent matmuls, as candle's
//! quantized ones are).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batch::PackedBatch;
use crate::error::Result;

/// The kernel's parameters; the tensors are its three inputs.
struct PagedAttentionOp<'a> {
    /// The batch's per-sequence metadata (slots, offsets).
    batch: &'a PackedBatch,
    /// Query heads.
    heads: usize,
    /// Key/value heads.
    kv_heads: usize,
    /// Width of one head.
    head_dim: usize,
}

/// Attention output `[tokens, heads * head_dim]` for rotated queries
/// `q` (`[tokens, heads, head_dim]`, f32) against one layer's pools.
pub fn paged_attention_cpu(
    q: &Tensor,
    key_pool: &Tensor,
    value_pool: &Tensor,
    batch: &PackedBatch,
    num_kv_heads: usize,
) -> Result<Tensor> {
    let (_, heads, head_dim) = q.dims3()?;
    let op = PagedAttentionOp {
        batch,
        heads,
        kv_heads: num_kv_heads,
        head_dim,
    };
    Ok(q.contiguous()?
        .apply_op3_no_bwd(key_pool, value_pool, &op)?)
}

fn contiguous<'s>(storage: &'s CpuStorage, layout: &Layout) -> candle_core::Result<&'s [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("paged attention needs contiguous inputs"),
    }
}

/// Dot product with eight independent lanes (vectorises; fixed order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
        sum += x * y;
    }
    sum
}

impl CustomOp3 for PagedAttentionOp<'_> {
    fn name(&self) -> &'static str {
        "sluice-paged-attention"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = contiguous(q_storage, q_layout)?;
        let keys = contiguous(k_storage, k_layout)?;
        let values = contiguous(v_storage, v_layout)?;
        let (heads, d) = (self.heads, self.head_dim);
        let group = heads / self.kv_heads;
        let kv_width = self.kv_heads * d;
        let tokens = self.batch.num_tokens;
        let scale = 1.0 / (d as f32).sqrt();
        // Which sequence and position each token belongs to.
        let mut owner = Vec::with_capacity(tokens);
        for (s, seq) in self.batch.seqs.iter().enumerate() {
            owner.extend((0..seq.query_len).map(|i| (s, seq.start + i)));
        }
        if owner.len() != tokens || q.len() != tokens * heads * d {
            candle_core::bail!("paged attention: batch metadata does not match q");
        }
        let mut out = vec![0f32; tokens * heads * d];
        out.par_chunks_mut(d).enumerate().for_each_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(scores, acc), (row, out_row)| {
                let (token, head) = (row / heads, row % heads);
                let (s, pos) = owner[token];
                let slots = &self.batch.seqs[s].context_slots_host[..=pos];
                let kv_off = (head / group) * d;
                let q_row = &q[row * d..(row + 1) * d];
                scores.clear();
                let mut max = f32::NEG_INFINITY;
                for &slot in slots {
                    let base = slot as usize * kv_width + kv_off;
                    let score = dot(q_row, &keys[base..base + d]) * scale;
                    max = max.max(score);
                    scores.push(score);
                }
                let mut total = 0f32;
                for score in scores.iter_mut() {
                    *score = (*score - max).exp();
                    total += *score;
                }
                acc.clear();
                acc.resize(d, 0.0);
                for (&slot, &p) in slots.iter().zip(scores.iter()) {
                    let base = slot as usize * kv_width + kv_off;
                    for (a, v) in acc.iter_mut().zip(&values[base..base + d]) {
                        *a += p * v;
                    }
                }
                let inv = 1.0 / total;
                for (o, a) in out_row.iter_mut().zip(acc.iter()) {
                    *o = a * inv;
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((tokens, heads * d))))
    }
}
