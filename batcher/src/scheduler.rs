//! The continuous-batching scheduler: which sequences run in the next step,
//! how many tokens each feeds, and who is preempted when KV blocks run out.
//!
//! Pure bookkeeping (no tensors, no threads), so it is property-tested on its
//! own. Each step:
//! 1. running decodes (1 token each), in priority order;
//! 2. running sequences whose prompt is only partly computed (chunked prefill);
//! 3. waiting sequences, admitted in priority order (FIFO within a priority)
//!    while the sequence cap, the token budget and KV blocks last.
//!
//! When blocks run out, paused sequences give theirs up first, then the
//! lowest-priority, newest sequence is preempted by recompute (its blocks are
//! freed and it re-queues with everything it generated so far).

use std::collections::HashMap;

use crate::block_allocator::{BlockAllocator, BlockId, BlockTable};
use crate::error::{BatcherError, Result};

/// Engine-wide id of one sequence (one request).
pub type SeqId = u64;

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

/// Where a sequence stands in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// Queued for admission (new, preempted, or resumed).
    Waiting,
    /// In the running batch.
    Running,
    /// Parked by the client; keeps its blocks unless memory runs short.
    Paused,
}

/// The scheduler's view of one sequence.
#[derive(Debug, Clone)]
struct SeqState {
    /// Higher runs first.
    priority: i32,
    /// Arrival order, for FIFO within a priority.
    arrival: u64,
    /// Known tokens: prompt plus generated so far.
    num_tokens: usize,
    /// Tokens whose K/V are in the cache.
    num_computed: usize,
    /// Prompt plus `max_tokens`: the most tokens this sequence can ever hold.
    max_total_tokens: usize,
    /// Its KV blocks.
    table: BlockTable,
    /// Waiting, running or paused.
    status: SeqStatus,
}

impl SeqState {
    /// Sort key: earlier in the order runs first and is preempted last.
    fn rank(&self) -> (std::cmp::Reverse<i32>, u64) {
        (std::cmp::Reverse(self.priority), self.arrival)
    }
}

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

/// Counters for [`Scheduler::stats`].
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
}

/// Plans every engine step; owns the block allocator and the block tables.
#[derive(Debug)]
pub struct Scheduler {
    /// Limits.
    config: SchedulerConfig,
    /// Free list and reference counts.
    allocator: BlockAllocator,
    /// Every live sequence.
    seqs: HashMap<SeqId, SeqState>,
    /// Waiting ids in rank order.
    waiting: Vec<SeqId>,
    /// Running ids in rank order.
    running: Vec<SeqId>,
    /// Next arrival number.
    next_arrival: u64,
    /// Preemptions since start.
    preemptions: u64,
}

impl Scheduler {
    /// A scheduler over a fresh pool of `config.num_blocks` blocks.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let allocator = BlockAllocator::new(config.num_blocks);
        Self::with_allocator(config, allocator)
    }

    /// A scheduler over a given allocator (tests pass one with shuffled ids).
    pub fn with_allocator(config: SchedulerConfig, allocator: BlockAllocator) -> Result<Self> {
        config.validate()?;
        if allocator.capacity() != config.num_blocks {
            return Err(BatcherError::Config(
                "allocator capacity differs from scheduler.num_blocks".into(),
            ));
        }
        Ok(Self {
            config,
            allocator,
            seqs: HashMap::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            next_arrival: 0,
            preemptions: 0,
        })
    }

    /// The limits this scheduler was built with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a new sequence of `num_prompt_tokens` that may generate up to
    /// `max_new_tokens`. Refuses ones that could never fit the pool alone.
    pub fn add(
        &mut self,
        id: SeqId,
        priority: i32,
        num_prompt_tokens: usize,
        max_new_tokens: usize,
    ) -> Result<()> {
        if num_prompt_tokens == 0 {
            return Err(BatcherError::InvalidRequest("empty prompt".into()));
        }
        if self.seqs.contains_key(&id) {
            return Err(BatcherError::InvalidRequest(format!("duplicate id {id}")));
        }
        let max_total_tokens = num_prompt_tokens + max_new_tokens;
        let needed = max_total_tokens.div_ceil(self.config.block_size);
        if needed > self.config.num_blocks {
            return Err(BatcherError::TooLong {
                needed,
                capacity: self.config.num_blocks,
            });
        }
        let state = SeqState {
            priority,
            arrival: self.next_arrival,
            num_tokens: num_prompt_tokens,
            num_computed: 0,
            max_total_tokens,
            table: BlockTable::default(),
            status: SeqStatus::Waiting,
        };
        self.next_arrival += 1;
        self.seqs.insert(id, state);
        self.insert_ranked(id, SeqStatus::Waiting);
        Ok(())
    }

    /// Forgets a sequence (finished or cancelled) and frees its blocks at once.
    /// Returns false when the id is unknown.
    pub fn remove(&mut self, id: SeqId) -> bool {
        let Some(mut state) = self.seqs.remove(&id) else {
            return false;
        };
        self.allocator.release(&state.table.take());
        self.waiting.retain(|s| *s != id);
        self.running.retain(|s| *s != id);
        true
    }

    /// Records a token sampled for `id` after a step.
    pub fn append_token(&mut self, id: SeqId) {
        if let Some(state) = self.seqs.get_mut(&id) {
            state.num_tokens += 1;
        }
    }

    /// Stops scheduling `id`; it keeps its blocks until memory runs short.
    pub fn pause(&mut self, id: SeqId) -> Result<()> {
        let state = self
            .seqs
            .get_mut(&id)
            .ok_or(BatcherError::UnknownSequence(id))?;
        state.status = SeqStatus::Paused;
        self.waiting.retain(|s| *s != id);
        self.running.retain(|s| *s != id);
        Ok(())
    }

    /// Re-queues a paused sequence; it resumes from its cache if it kept it.
    pub fn resume(&mut self, id: SeqId) -> Result<()> {
        let state = self
            .seqs
            .get_mut(&id)
            .ok_or(BatcherError::UnknownSequence(id))?;
        if state.status == SeqStatus::Paused {
            state.status = SeqStatus::Waiting;
            self.insert_ranked(id, SeqStatus::Waiting);
        }
        Ok(())
    }

    /// The status of `id`, if known.
    pub fn status(&self, id: SeqId) -> Option<SeqStatus> {
        self.seqs.get(&id).map(|s| s.status)
    }

    /// The block table of `id`, if known.
    pub fn block_table(&self, id: SeqId) -> Option<&BlockTable> {
        self.seqs.get(&id).map(|s| &s.table)
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            paused: self.seqs.len() - self.waiting.len() - self.running.len(),
            blocks_used: self.allocator.num_used(),
            blocks_total: self.allocator.capacity(),
            preemptions: self.preemptions,
        }
    }

    /// True when nothing is waiting or running (paused ones do not count).
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Plans the next step. Marks the planned tokens as computed: the caller
    /// must run the plan (or remove the sequences it could not run).
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_tokens_per_step;

        // 1 and 2: running decodes, then running prefills.
        for decodes in [true, false] {
            let ids: Vec<SeqId> = self.running.clone();
            for id in ids {
                if budget == 0 {
                    break;
                }
                let Some(state) = self.seqs.get(&id) else {
                    continue;
                };
                if state.status != SeqStatus::Running || plan.chunks.iter().any(|c| c.seq_id == id)
                {
                    continue;
                }
                let needed = state.num_tokens - state.num_computed;
                if needed == 0 || (needed == 1) != decodes {
                    continue;
                }
                let len = needed.min(budget).min(self.config.max_prefill_chunk);
                if self.reserve_blocks(id, len, &mut plan, &mut budget) {
                    self.plan_chunk(id, len, &mut plan, &mut budget);
                } else {
                    self.preempt(id, &mut plan, &mut budget);
                }
            }
        }

        // 3: admissions, strictly in rank order so the head is never skipped.
        while budget > 0 {
            let Some(&id) = self.waiting.first() else {
                break;
            };
            if self.running.len() >= self.config.max_num_seqs
                && !self.make_room_in_batch(id, &mut plan, &mut budget)
            {
                break;
            }
            let Some(state) = self.seqs.get(&id) else {
                break;
            };
            let needed = state.num_tokens - state.num_computed;
            let len = needed.min(budget).min(self.config.max_prefill_chunk);
            if !self.reserve_blocks(id, len, &mut plan, &mut budget) {
                break;
            }
            self.waiting.remove(0);
            if let Some(state) = self.seqs.get_mut(&id) {
                state.status = SeqStatus::Running;
            }
            self.insert_ranked(id, SeqStatus::Running);
            if len > 0 {
                self.plan_chunk(id, len, &mut plan, &mut budget);
            }
        }
        plan
    }

    /// Adds `id`'s chunk of `len` tokens to the plan.
    fn plan_chunk(&mut self, id: SeqId, len: usize, plan: &mut StepPlan, budget: &mut usize) {
        if let Some(state) = self.seqs.get_mut(&id) {
            let start = state.num_computed;
            state.num_computed += len;
            plan.chunks.push(ScheduledChunk {
                seq_id: id,
                start,
                len,
                samples: state.num_computed == state.num_tokens,
            });
            *budget -= len;
        }
    }

    /// Makes sure `id` holds the blocks for its next `len` tokens (or, under
    /// [`AdmissionPolicy::ReserveFull`], for its whole life), preempting
    /// lower-ranked sequences if needed. False when that is impossible.
    fn reserve_blocks(
        &mut self,
        id: SeqId,
        len: usize,
        plan: &mut StepPlan,
        budget: &mut usize,
    ) -> bool {
        loop {
            let Some(state) = self.seqs.get(&id) else {
                return false;
            };
            let target = match self.config.admission {
                AdmissionPolicy::OnDemand => state.num_computed + len,
                AdmissionPolicy::ReserveFull => state.max_total_tokens,
            };
            let missing = state.table.blocks_missing(target, self.config.block_size);
            if missing == 0 {
                return true;
            }
            if let Some(blocks) = self.allocator.allocate(missing) {
                if let Some(state) = self.seqs.get_mut(&id) {
                    state.table.extend(blocks);
                }
                return true;
            }
            match self.pick_victim(id) {
                Some(victim) => self.preempt(victim, plan, budget),
                None => return false,
            }
        }
    }

    /// When the batch is full, preempts the lowest-ranked running sequence if
    /// it ranks below `id`. False when `id` must keep waiting.
    fn make_room_in_batch(&mut self, id: SeqId, plan: &mut StepPlan, budget: &mut usize) -> bool {
        let Some(rank) = self.seqs.get(&id).map(SeqState::rank) else {
            return false;
        };
        let lowest = self.running.last().copied();
        match lowest.and_then(|l| self.seqs.get(&l).map(|s| (l, s.rank()))) {
            Some((victim, victim_rank)) if victim_rank > rank => {
                self.preempt(victim, plan, budget);
                true
            }
            _ => false,
        }
    }

    /// Who gives up blocks for `requester`: a paused sequence holding blocks,
    /// else the lowest-ranked sequence holding blocks that ranks below it.
    fn pick_victim(&self, requester: SeqId) -> Option<SeqId> {
        let rank = self.seqs.get(&requester)?.rank();
        let holders = self
            .seqs
            .iter()
            .filter(|(id, s)| **id != requester && !s.table.is_empty());
        let mut best: Option<(bool, (std::cmp::Reverse<i32>, u64), SeqId)> = None;
        for (id, s) in holders {
            let paused = s.status == SeqStatus::Paused;
            if !paused && s.rank() <= rank {
                continue;
            }
            let key = (paused, s.rank(), *id);
            if best.as_ref().is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                best = Some(key);
            }
        }
        best.map(|(_, _, id)| id)
    }

    /// Frees `id`'s blocks and sends it back to recompute from scratch.
    fn preempt(&mut self, id: SeqId, plan: &mut StepPlan, budget: &mut usize) {
        if let Some(pos) = plan.chunks.iter().position(|c| c.seq_id == id) {
            let chunk = plan.chunks.remove(pos);
            *budget += chunk.len;
        }
        let Some(state) = self.seqs.get_mut(&id) else {
            return;
        };
        let blocks: Vec<BlockId> = state.table.take();
        state.num_computed = 0;
        let was = state.status;
        self.allocator.release(&blocks);
        if was == SeqStatus::Running {
            self.running.retain(|s| *s != id);
            if let Some(state) = self.seqs.get_mut(&id) {
                state.status = SeqStatus::Waiting;
            }
            self.insert_ranked(id, SeqStatus::Waiting);
        }
        self.preemptions += 1;
        plan.preempted.push(id);
    }

    /// Inserts `id` into the waiting or running list at its rank.
    fn insert_ranked(&mut self, id: SeqId, into: SeqStatus) {
        let Some(rank) = self.seqs.get(&id).map(SeqState::rank) else {
            return;
        };
        let seqs = &self.seqs;
        let list = match into {
            SeqStatus::Running => &mut self.running,
            _ => &mut self.waiting,
        };
        let pos = list.partition_point(|other| seqs.get(other).is_some_and(|s| s.rank() < rank));
        list.insert(pos, id);
    }

    /// Blocks per sequence and free count, for invariant checks in tests.
    #[cfg(test)]
    pub(crate) fn blocks_accounted(&self) -> (usize, usize) {
        let held: usize = self.seqs.values().map(|s| s.table.len()).sum();
        (held, self.allocator.num_used())
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
