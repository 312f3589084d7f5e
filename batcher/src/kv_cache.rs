//! The paged KV cache's storage: per layer, one K pool and one V pool of
//! `num_blocks * block_size` slots. New K/V rows are written in place
//! (`scatter_set`), never by rebuilding a pool.
//!
//! Which slots belong to whom is decided by [`crate::block_allocator`].

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::model::ModelConfig;

/// K and V pools for every layer, each `[num_slots, kv_heads * head_dim]`.
#[derive(Debug)]
pub struct KvCache {
    /// Key pool per layer.
    keys: Vec<Tensor>,
    /// Value pool per layer.
    values: Vec<Tensor>,
    /// Tokens per block.
    block_size: usize,
    /// Blocks per pool.
    num_blocks: usize,
}

impl KvCache {
    /// Zeroed pools of `num_blocks` blocks of `block_size` tokens on `device`.
    pub fn new(
        config: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (num_blocks * block_size, config.kv_width());
        let mut keys = Vec::with_capacity(config.num_hidden_layers);
        let mut values = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            keys.push(Tensor::zeros(shape, dtype, device)?);
            values.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(Self {
            keys,
            values,
            block_size,
            num_blocks,
        })
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks per pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Writes `k` and `v` (`[tokens, kv_width]`) of `layer` into the slots
    /// named by `write_index` (`[tokens, kv_width]`, each row its token's slot).
    pub fn write(&self, layer: usize, write_index: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
        if let (Some(kp), Some(vp)) = (self.keys.get(layer), self.values.get(layer)) {
            kp.scatter_set(write_index, &k.contiguous()?, 0)?;
            vp.scatter_set(write_index, &v.contiguous()?, 0)?;
        }
        Ok(())
    }

    /// The K and V pools of `layer`.
    pub fn layer(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        Some((self.keys.get(layer)?, self.values.get(layer)?))
    }
}
