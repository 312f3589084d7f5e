//! The scheduler's limits, fixed when the engine starts.

use crate::error::{BatcherError, Result};

/// When KV blocks are taken for a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdmissionPolicy {
    /// Blocks are allocated as tokens are computed; sequences are preempted
    /// by recompute when the pool runs dry (vLLM's default).
    #[default]
    OnDemand,
    /// Blocks for the prompt plus `max_tokens` are reserved at admission, so
    /// running sequences are never preempted for lack of blocks.
    ReserveFull,
}

/// Scheduler limits, fixed when the engine starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// Blocks in the pool (per layer; every layer has the same layout).
    pub num_blocks: usize,
    /// Most sequences running at once (the batch's sequence cap).
    pub max_num_seqs: usize,
    /// Most tokens (prefill + decode) fed to the model in one step.
    pub max_tokens_per_step: usize,
    /// Most prompt tokens of one sequence computed in one step (chunked prefill).
    pub max_prefill_chunk: usize,
    /// When blocks are taken.
    pub admission: AdmissionPolicy,
    /// Reuse computed KV blocks across sequences with the same leading
    /// tokens (automatic prefix caching). Default: on.
    pub enable_prefix_caching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 512,
            max_num_seqs: 64,
            max_tokens_per_step: 256,
            max_prefill_chunk: 128,
            admission: AdmissionPolicy::OnDemand,
            enable_prefix_caching: true,
        }
    }
}

impl SchedulerConfig {
    /// Checks that the limits can make progress.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("block_size", self.block_size),
            ("num_blocks", self.num_blocks),
            ("max_num_seqs", self.max_num_seqs),
            ("max_tokens_per_step", self.max_tokens_per_step),
            ("max_prefill_chunk", self.max_prefill_chunk),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(BatcherError::Config(format!(
                    "scheduler.{name} must be > 0"
                )));
            }
        }
        Ok(())
    }
}
