//! What the scheduler hands the engine each step, and its counters.

use super::SeqId;

/// One sequence's share of a step: feed positions `start..start + len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledChunk {
    /// The sequence.
    pub seq_id: SeqId,
    /// First position fed this step.
    pub start: usize,
    /// Tokens fed this step (1 for a decode).
    pub len: usize,
    /// True when this chunk reaches the last known token, so the step's
    /// logits for it are sampled into a new token.
    pub samples: bool,
}

/// What the model runs in one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Chunks, decodes first; every sequence appears at most once.
    pub chunks: Vec<ScheduledChunk>,
    /// Sequences preempted while planning (their caches are gone; they recompute).
    pub preempted: Vec<SeqId>,
}

impl StepPlan {
    /// Tokens fed in this step.
    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }
}

/// Counters for [`Scheduler::stats`](super::Scheduler::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Sequences queued for admission.
    pub waiting: usize,
    /// Sequences in the running batch.
    pub running: usize,
    /// Sequences parked by pause.
    pub paused: usize,
    /// KV blocks held by sequences.
    pub blocks_used: usize,
    /// KV blocks in the pool.
    pub blocks_total: usize,
    /// Preemptions since start.
    pub preemptions: u64,
    /// Idle cached KV blocks (counted as free: evicted when needed).
    pub blocks_cached: usize,
    /// Tokens looked up in the prefix cache at admission (every known token
    /// of each sequence admitted without blocks, re-admissions included).
    pub prefix_cache_queries: u64,
    /// Of those, tokens found cached and not computed again.
    pub prefix_cache_hits: u64,
    /// Cached blocks evicted to make room.
    pub prefix_cache_evictions: u64,
}
