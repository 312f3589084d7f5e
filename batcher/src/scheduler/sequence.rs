//! One sequence as the scheduler sees it: where it stands, its tokens, how
//! far its K/V are computed and cached, and its blocks.

use crate::block_allocator::BlockTable;
use crate::prefix_cache::ChainId;

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
pub(super) struct SeqState {
    /// Higher runs first.
    pub(super) priority: i32,
    /// Arrival order, for FIFO within a priority.
    pub(super) arrival: u64,
    /// Known tokens: prompt plus generated so far (cached blocks are keyed on them).
    pub(super) tokens: Vec<u32>,
    /// Tokens whose K/V are in the cache.
    pub(super) num_computed: usize,
    /// Leading blocks of `table` already keyed in the prefix cache (by this
    /// sequence, or found there).
    pub(super) num_keyed_blocks: usize,
    /// Chain id of the last of those blocks: the parent of the next one's key.
    pub(super) chain: Option<ChainId>,
    /// Prompt plus `max_tokens`: the most tokens this sequence can ever hold.
    pub(super) max_total_tokens: usize,
    /// Its KV blocks.
    pub(super) table: BlockTable,
    /// Waiting, running or paused.
    pub(super) status: SeqStatus,
}

impl SeqState {
    /// Sort key: earlier in the order runs first and is preempted last.
    pub(super) fn rank(&self) -> (std::cmp::Reverse<i32>, u64) {
        (std::cmp::Reverse(self.priority), self.arrival)
    }

    /// Known tokens.
    pub(super) fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// True when a sequence ranked `rank` may take this one's blocks: it is
    /// paused, or ranks below.
    pub(super) fn yields_to(&self, rank: (std::cmp::Reverse<i32>, u64)) -> bool {
        self.status == SeqStatus::Paused || self.rank() > rank
    }
}
