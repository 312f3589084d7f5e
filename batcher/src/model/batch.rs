//! A packed, variable-length batch: every scheduled chunk's tokens laid end
//! to end (no padding), with the per-token positions, cache slots and
//! per-sequence attention metadata the runner needs.

use candle_core::{Device, Tensor};

use crate::block_allocator::BlockId;
use crate::error::{BatcherError, Result};

/// One sequence's chunk, as the engine hands it to [`PackedBatch::new`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkInput<'a> {
    /// The tokens fed this step (positions `start..start + tokens.len()`).
    pub tokens: &'a [u32],
    /// Position of the first token.
    pub start: usize,
    /// The sequence's blocks, covering at least `start + tokens.len()` positions.
    pub block_table: &'a [BlockId],
    /// Whether this chunk's last token needs logits (it will be sampled).
    pub wants_logits: bool,
}

/// Attention metadata of one sequence in the batch.
#[derive(Debug, Clone)]
pub struct SeqAttention {
    /// Offset of the sequence's first query token in the packed batch.
    pub query_offset: usize,
    /// Query tokens of this sequence in the batch.
    pub query_len: usize,
    /// Position of the first query token (tokens before it are in the cache).
    pub start: usize,
    /// Cache slots of positions `0..start + query_len`, `[context]` u32.
    pub context_slots: Tensor,
    /// The same slots on the host (used by the CPU attention kernel).
    pub context_slots_host: Vec<u32>,
    /// Additive causal mask `[query_len, context]` when `query_len > 1`.
    pub mask: Option<Tensor>,
}

/// Everything one model step consumes.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// Token ids, `[tokens]` u32.
    pub token_ids: Tensor,
    /// Position of each token, `[tokens]` u32 (RoPE).
    pub positions: Tensor,
    /// Cache slot of each token broadcast to `[tokens, kv_width]` u32 (K/V writes).
    pub write_index: Tensor,
    /// Per-sequence attention metadata, in batch order.
    pub seqs: Vec<SeqAttention>,
    /// Rows of the packed batch whose logits are returned, `[n]` u32.
    pub logit_rows: Tensor,
    /// Number of logit rows.
    pub num_logits: usize,
    /// Total tokens.
    pub num_tokens: usize,
}

impl PackedBatch {
    /// Packs `chunks` for a cache with `block_size`-token blocks and rows of `kv_width`.
    pub fn new(
        chunks: &[ChunkInput<'_>],
        block_size: usize,
        kv_width: usize,
        device: &Device,
    ) -> Result<Self> {
        let num_tokens: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        if num_tokens == 0 {
            return Err(BatcherError::InvalidRequest("empty batch".into()));
        }
        let mut ids = Vec::with_capacity(num_tokens);
        let mut positions = Vec::with_capacity(num_tokens);
        let mut slots = Vec::with_capacity(num_tokens);
        let mut logit_rows = Vec::new();
        let mut seqs = Vec::with_capacity(chunks.len());
        let slot_of = |table: &[BlockId], pos: usize| -> Result<u32> {
            let block = table.get(pos / block_size).ok_or_else(|| {
                BatcherError::InvalidRequest(format!("position {pos} has no KV block"))
            })?;
            Ok(block * block_size as u32 + (pos % block_size) as u32)
        };
        for chunk in chunks {
            let query_offset = ids.len();
            let len = chunk.tokens.len();
            if len == 0 {
                return Err(BatcherError::InvalidRequest("empty chunk".into()));
            }
            ids.extend_from_slice(chunk.tokens);
            let context = chunk.start + len;
            let context_slots_host = (0..context)
                .map(|p| slot_of(chunk.block_table, p))
                .collect::<Result<Vec<u32>>>()?;
            positions.extend(chunk.start as u32..context as u32);
            slots.extend_from_slice(&context_slots_host[chunk.start..]);
            if chunk.wants_logits {
                logit_rows.push((query_offset + len - 1) as u32);
            }
            let mask = if len > 1 {
                let data: Vec<f32> = (0..len)
                    .flat_map(|i| {
                        (0..context).map(move |j| {
                            if j <= chunk.start + i {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                Some(Tensor::from_vec(data, (len, context), device)?)
            } else {
                None
            };
            seqs.push(SeqAttention {
                query_offset,
                query_len: len,
                start: chunk.start,
                context_slots: Tensor::new(context_slots_host.as_slice(), device)?,
                context_slots_host,
                mask,
            });
        }
        let write_index = Tensor::new(slots.as_slice(), device)?
            .unsqueeze(1)?
            .broadcast_as((num_tokens, kv_width))?
            .contiguous()?;
        let num_logits = logit_rows.len();
        Ok(Self {
            token_ids: Tensor::new(ids.as_slice(), device)?,
            positions: Tensor::new(positions.as_slice(), device)?,
            write_index,
            seqs,
            logit_rows: Tensor::new(logit_rows.as_slice(), device)?,
            num_logits,
            num_tokens,
        })
    }
}
