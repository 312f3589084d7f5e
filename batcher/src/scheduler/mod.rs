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
//! freed and it re-queues with everything it generated so far). Nothing is
//! preempted for a request that would still not fit afterwards.
//!
//! With prefix caching on, every full block whose K/V were computed is
//! registered under its token chain at the start of the next step (or when
//! its sequence ends), and an admitted sequence takes the cached blocks that
//! match its leading tokens instead of computing them (see
//! [`crate::prefix_cache`]); its last known token is always computed, for
//! logits. A waiting sequence whose next block a running one with the same
//! tokens is computing waits for it to be cached rather than compute it too.

use std::collections::HashMap;

mod config;
mod plan;
mod prefix;
mod sequence;

pub use config::{AdmissionPolicy, SchedulerConfig};
pub use plan::{ScheduledChunk, SchedulerStats, StepPlan};
pub use sequence::SeqStatus;

use sequence::SeqState;

use crate::block_allocator::{BlockAllocator, BlockId, BlockTable};
use crate::error::{BatcherError, Result};
use crate::prefix_cache::ChainId;

/// Engine-wide id of one sequence (one request).
pub type SeqId = u64;

/// Plans every engine step; owns the block allocator and the block tables.
#[derive(Debug)]
pub struct Scheduler {
    /// Limits.
    config: SchedulerConfig,
    /// Free list, reference counts and the prefix cache's index.
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
    /// Tokens looked up in the prefix cache since start.
    prefix_queries: u64,
    /// Tokens found there since start.
    prefix_hits: u64,
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
            prefix_queries: 0,
            prefix_hits: 0,
        })
    }

    /// The limits this scheduler was built with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a new sequence with `prompt` that may generate up to
    /// `max_new_tokens`. Refuses ones that could never fit the pool alone.
    pub fn add(
        &mut self,
        id: SeqId,
        priority: i32,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<()> {
        let num_prompt_tokens = prompt.len();
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
            tokens: prompt.to_vec(),
            num_computed: 0,
            num_keyed_blocks: 0,
            chain: None,
            max_total_tokens,
            table: BlockTable::default(),
            status: SeqStatus::Waiting,
        };
        self.next_arrival += 1;
        self.seqs.insert(id, state);
        self.insert_ranked(id, SeqStatus::Waiting);
        Ok(())
    }

    /// Forgets a sequence (finished or cancelled) and frees its blocks at
    /// once; its computed full blocks stay cached. Returns false when the id
    /// is unknown.
    pub fn remove(&mut self, id: SeqId) -> bool {
        self.key_computed_blocks(id);
        self.remove_failed(id)
    }

    /// Forgets a sequence whose last step failed: its blocks are freed
    /// without being cached (what the step wrote is unknown). Returns false
    /// when the id is unknown.
    pub fn remove_failed(&mut self, id: SeqId) -> bool {
        let Some(mut state) = self.seqs.remove(&id) else {
            return false;
        };
        self.allocator.release(&state.table.take());
        self.waiting.retain(|s| *s != id);
        self.running.retain(|s| *s != id);
        true
    }

    /// Records `token`, sampled for `id` after a step.
    pub fn append_token(&mut self, id: SeqId, token: u32) {
        if let Some(state) = self.seqs.get_mut(&id) {
            state.tokens.push(token);
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
            blocks_cached: self.allocator.num_idle_cached(),
            prefix_cache_queries: self.prefix_queries,
            prefix_cache_hits: self.prefix_hits,
            prefix_cache_evictions: self.allocator.evictions(),
        }
    }

    /// True when nothing is waiting or running (paused ones do not count).
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Plans the next step. Marks the planned tokens as computed: the caller
    /// must run the plan (or [`Self::remove_failed`] the sequences it could
    /// not run) before calling anything else.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_tokens_per_step;

        // The previous plan ran: its full blocks hold their K/V now.
        let ids: Vec<SeqId> = self.seqs.keys().copied().collect();
        for id in ids {
            self.key_computed_blocks(id);
        }

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
                let needed = state.num_tokens() - state.num_computed;
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
            if !self.admit(id, &mut plan, &mut budget) {
                break;
            }
        }
        plan
    }

    /// Admits waiting `id`: takes its cached prefix and the blocks for its
    /// first chunk, preempting (for a batch place or for blocks) only when
    /// that is enough to admit it. False, with nothing changed, when it must
    /// keep waiting.
    fn admit(&mut self, id: SeqId, plan: &mut StepPlan, budget: &mut usize) -> bool {
        let Some(state) = self.seqs.get(&id) else {
            return false;
        };
        let bs = self.config.block_size;
        // A sequence that kept its blocks (resumed from pause) looks nothing up.
        let fresh = state.table.is_empty();
        let hits = if fresh {
            self.cached_prefix(state)
        } else {
            Vec::new()
        };
        if fresh && self.prefix_in_flight(state, hits.len()) {
            return false;
        }
        let (computed, held) = match fresh {
            true => (hits.len() * bs, hits.len()),
            false => (state.num_computed, state.table.len()),
        };
        let len = (state.num_tokens() - computed)
            .min(*budget)
            .min(self.config.max_prefill_chunk);
        let missing = self
            .target_tokens(state, computed, len)
            .div_ceil(bs)
            .saturating_sub(held);
        let batch_victim = match self.running.len() >= self.config.max_num_seqs {
            true => match self.batch_victim(id) {
                Some(victim) => Some(victim),
                None => return false,
            },
            false => None,
        };
        let hit_blocks: Vec<BlockId> = hits.iter().map(|(block, _)| *block).collect();
        if !self.can_obtain(id, missing, &hit_blocks) {
            return false;
        }
        if let Some(victim) = batch_victim {
            self.preempt(victim, plan, budget);
        }
        if fresh {
            self.take_cached_prefix(id, &hits);
        }
        if !self.reserve_blocks(id, len, plan, budget) {
            // Not expected after `can_obtain`; give back what was taken.
            tracing::warn!(seq = id, "admission failed after its feasibility check");
            if fresh {
                self.drop_blocks(id);
            }
            return false;
        }
        self.waiting.retain(|s| *s != id);
        if let Some(state) = self.seqs.get_mut(&id) {
            state.status = SeqStatus::Running;
        }
        self.insert_ranked(id, SeqStatus::Running);
        if len > 0 {
            self.plan_chunk(id, len, plan, budget);
        }
        true
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
                samples: state.num_computed == state.num_tokens(),
            });
            *budget -= len;
        }
    }

    /// Positions `state` must hold blocks for once `len` more tokens after
    /// `computed` are fed: just those under [`AdmissionPolicy::OnDemand`],
    /// its whole life under [`AdmissionPolicy::ReserveFull`].
    fn target_tokens(&self, state: &SeqState, computed: usize, len: usize) -> usize {
        match self.config.admission {
            AdmissionPolicy::OnDemand => computed + len,
            AdmissionPolicy::ReserveFull => state.max_total_tokens,
        }
    }

    /// Makes sure `id` holds the blocks for its next `len` tokens (or, under
    /// [`AdmissionPolicy::ReserveFull`], for its whole life), preempting
    /// lower-ranked sequences if needed. False, with nobody preempted, when
    /// even preempting every sequence that yields to it would not be enough.
    fn reserve_blocks(
        &mut self,
        id: SeqId,
        len: usize,
        plan: &mut StepPlan,
        budget: &mut usize,
    ) -> bool {
        let mut checked = false;
        loop {
            let Some(state) = self.seqs.get(&id) else {
                return false;
            };
            let target = self.target_tokens(state, state.num_computed, len);
            let missing = state.table.blocks_missing(target, self.config.block_size);
            if missing == 0 {
                return true;
            }
            if !checked {
                if !self.can_obtain(id, missing, &[]) {
                    return false;
                }
                checked = true;
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

    /// True when `requester` can get `missing` more blocks: free and idle
    /// cached ones, plus those that preempting every sequence that yields to
    /// it would free. `reserved` blocks (cache hits it is about to take)
    /// count as neither.
    fn can_obtain(&self, requester: SeqId, missing: usize, reserved: &[BlockId]) -> bool {
        let idle_reserved = reserved
            .iter()
            .filter(|b| self.allocator.ref_count(**b) == 0)
            .count();
        let free = self.allocator.num_free().saturating_sub(idle_reserved);
        if missing <= free {
            return true;
        }
        let Some(rank) = self.seqs.get(&requester).map(SeqState::rank) else {
            return false;
        };
        // A block is freed when every reference to it is a victim's.
        let mut victim_refs: HashMap<BlockId, u32> = HashMap::new();
        for (id, s) in &self.seqs {
            if *id != requester && s.yields_to(rank) {
                for block in s.table.blocks() {
                    *victim_refs.entry(*block).or_default() += 1;
                }
            }
        }
        let freed = victim_refs
            .iter()
            .filter(|(b, refs)| self.allocator.ref_count(**b) == **refs && !reserved.contains(b))
            .count();
        missing <= free + freed
    }

    /// When the batch is full: the lowest-ranked running sequence, if it
    /// ranks below `id` (preempting it makes room for `id`).
    fn batch_victim(&self, id: SeqId) -> Option<SeqId> {
        let rank = self.seqs.get(&id)?.rank();
        let lowest = *self.running.last()?;
        (self.seqs.get(&lowest)?.rank() > rank).then_some(lowest)
    }

    /// Who gives up blocks for `requester`: a paused sequence holding blocks,
    /// else the lowest-ranked sequence holding blocks that ranks below it.
    fn pick_victim(&self, requester: SeqId) -> Option<SeqId> {
        let rank = self.seqs.get(&requester)?.rank();
        let holders = self
            .seqs
            .iter()
            .filter(|(id, s)| **id != requester && !s.table.is_empty() && s.yields_to(rank));
        let mut best: Option<(bool, (std::cmp::Reverse<i32>, u64), SeqId)> = None;
        for (id, s) in holders {
            let key = (s.status == SeqStatus::Paused, s.rank(), *id);
            if best.as_ref().is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                best = Some(key);
            }
        }
        best.map(|(_, _, id)| id)
    }

    /// Frees `id`'s blocks and sends it back to recompute from scratch
    /// (from its cached prefix, if still cached).
    fn preempt(&mut self, id: SeqId, plan: &mut StepPlan, budget: &mut usize) {
        if let Some(pos) = plan.chunks.iter().position(|c| c.seq_id == id) {
            let chunk = plan.chunks.remove(pos);
            *budget += chunk.len;
        }
        let Some(was) = self.seqs.get(&id).map(|s| s.status) else {
            return;
        };
        self.drop_blocks(id);
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

    /// Releases `id`'s blocks and forgets what it had computed.
    fn drop_blocks(&mut self, id: SeqId) {
        if let Some(state) = self.seqs.get_mut(&id) {
            let blocks = state.table.take();
            state.num_computed = 0;
            state.num_keyed_blocks = 0;
            state.chain = None;
            self.allocator.release(&blocks);
        }
    }

    /// Keys `id`'s full, computed blocks in the prefix cache. Called only
    /// when every planned token of `id` has really been computed.
    fn key_computed_blocks(&mut self, id: SeqId) {
        if let (true, Some(state)) = (self.config.enable_prefix_caching, self.seqs.get_mut(&id)) {
            prefix::key_computed_blocks(state, &mut self.allocator, self.config.block_size);
        }
    }

    /// The cached blocks that can stand for `state`'s leading blocks (see
    /// [`prefix::cached_prefix`]); none with caching off.
    fn cached_prefix(&self, state: &SeqState) -> Vec<(BlockId, ChainId)> {
        match self.config.enable_prefix_caching {
            true => prefix::cached_prefix(state, &self.allocator, self.config.block_size),
            false => Vec::new(),
        }
    }

    /// True when `state` should wait for a running sequence to cache the
    /// block after its `cached_blocks` (see [`prefix::prefix_in_flight`]).
    fn prefix_in_flight(&self, state: &SeqState, cached_blocks: usize) -> bool {
        let running = self.running.iter().filter_map(|id| self.seqs.get(id));
        self.config.enable_prefix_caching
            && prefix::prefix_in_flight(state, cached_blocks, self.config.block_size, running)
    }

    /// Gives block-less `id` the cached blocks `hits` (from
    /// [`Self::cached_prefix`]) as its computed prefix, and counts the lookup.
    fn take_cached_prefix(&mut self, id: SeqId, hits: &[(BlockId, ChainId)]) {
        let Some(state) = self.seqs.get_mut(&id) else {
            return;
        };
        if self.config.enable_prefix_caching {
            self.prefix_queries += state.num_tokens() as u64;
            self.prefix_hits += (hits.len() * self.config.block_size) as u64;
        }
        prefix::take_cached_prefix(state, &mut self.allocator, hits, self.config.block_size);
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

    /// Distinct blocks held by sequences, and blocks the allocator counts as
    /// used, for invariant checks in tests; the first is `usize::MAX` when
    /// some block's reference count differs from the tables holding it.
    #[cfg(test)]
    pub(crate) fn blocks_accounted(&self) -> (usize, usize) {
        let mut holders: HashMap<BlockId, u32> = HashMap::new();
        for s in self.seqs.values() {
            for block in s.table.blocks() {
                *holders.entry(*block).or_default() += 1;
            }
        }
        let balanced = holders
            .iter()
            .all(|(block, n)| self.allocator.ref_count(*block) == *n);
        let held = if balanced { holders.len() } else { usize::MAX };
        (held, self.allocator.num_used())
    }
}

#[cfg(test)]
mod prefix_tests;
#[cfg(test)]
mod tests;
