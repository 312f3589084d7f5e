//! The engine actor: a cloneable [`EngineHandle`] with a bounded command
//! channel, and a dedicated thread that owns the model, the KV cache and the
//! scheduler (TGI's router shape). Each request carries its own event sender,
//! span and timestamps.
//!
//! Start with [`Engine::start`]; then [`EngineHandle::submit`] a
//! [`GenerateRequest`] and read [`Event`]s from the [`TokenStream`].

mod handle;
mod request;
mod worker;

pub use handle::EngineHandle;
pub use request::{
    Event, FinishReason, Finished, GenerateRequest, Prompt, TokenEvent, TokenStream,
};

use tokio::sync::mpsc;

use crate::block_allocator::{BlockAllocator, BlockId};
use crate::error::{BatcherError, Result};
use crate::model::LoadedModel;
use crate::rng::SplitMix64;
use crate::scheduler::{Scheduler, SchedulerConfig};

/// How the engine is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Scheduler limits and KV pool size; `scheduler.enable_prefix_caching`
    /// turns automatic prefix caching on (the default) or off.
    pub scheduler: SchedulerConfig,
    /// Commands that may wait for the engine thread before submit blocks.
    pub queue_capacity: usize,
    /// Shuffle the KV block free list with this seed (tests: paged must equal contiguous).
    pub shuffle_blocks: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            queue_capacity: 1024,
            shuffle_blocks: None,
        }
    }
}

/// Counters reported by [`EngineHandle::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Sequences waiting for admission.
    pub waiting: usize,
    /// Sequences in the running batch.
    pub running: usize,
    /// Sequences paused.
    pub paused: usize,
    /// KV blocks in use.
    pub blocks_used: usize,
    /// KV blocks in the pool.
    pub blocks_total: usize,
    /// Preemptions since start.
    pub preemptions: u64,
    /// Model steps run.
    pub steps: u64,
    /// Tokens fed to the model (prefill, decode and recompute).
    pub tokens_computed: u64,
    /// Prompt tokens fed to the model (recomputes included): prompt tokens
    /// the prefix cache supplied are not counted.
    pub prefill_tokens_computed: u64,
    /// Idle cached KV blocks (counted as free, not in `blocks_used`).
    pub blocks_cached: usize,
    /// Tokens looked up in the prefix cache at admission; the hit rate is
    /// `prefix_cache_hits / prefix_cache_queries`.
    pub prefix_cache_queries: u64,
    /// Tokens found in the prefix cache (not computed again).
    pub prefix_cache_hits: u64,
    /// Cached blocks evicted to make room.
    pub prefix_cache_evictions: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Sequences finished (any reason, including cancel).
    pub finished: u64,
    /// Explicit cancels.
    pub cancelled: u64,
    /// Sequences cancelled because their stream was dropped.
    pub receivers_dropped: u64,
    /// Requests refused at validation.
    pub rejected: u64,
    /// Failed model steps.
    pub errors: u64,
    /// Tokens in the most recent step.
    pub last_step_tokens: usize,
    /// Sequences in the most recent step.
    pub last_step_seqs: usize,
}

/// Starts engines.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// Allocates the KV cache for `model` and starts the engine thread;
    /// returns the handle to talk to it.
    pub fn start(model: LoadedModel, config: EngineConfig) -> Result<EngineHandle> {
        config.scheduler.validate()?;
        if config.queue_capacity == 0 {
            return Err(BatcherError::Config("queue_capacity must be > 0".into()));
        }
        let sched = &config.scheduler;
        let cache = model.runner.new_cache(sched.num_blocks, sched.block_size)?;
        let mut order: Vec<BlockId> = (0..sched.num_blocks as BlockId).rev().collect();
        if let Some(seed) = config.shuffle_blocks {
            let mut rng = SplitMix64::new(seed);
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        let scheduler =
            Scheduler::with_allocator(sched.clone(), BlockAllocator::with_order(order))?;
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let worker = worker::Worker::new(model.runner, cache, scheduler, model.tokenizer, receiver);
        std::thread::Builder::new()
            .name("sluice-batcher".into())
            .spawn(move || worker.run())
            .map_err(|source| BatcherError::Io {
                path: "engine thread".into(),
                source,
            })?;
        Ok(EngineHandle::new(sender))
    }
}
