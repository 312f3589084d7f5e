//! KV-cache block bookkeeping: the free list with reference counts, and the
//! per-sequence block table that maps token positions to cache slots.
//!
//! Pure Rust, no tensors: the pools themselves live in [`crate::kv_cache`];
//! which blocks hold which token chains lives in [`crate::prefix_cache`].

use crate::prefix_cache::{BlockKey, ChainId, PrefixIndex};

/// Index of one fixed-size block in every layer's K and V pools.
pub type BlockId = u32;

/// Hands out KV blocks from a free list and counts references to each.
///
/// Reference counts let sequences share a block (a cached prefix); a block
/// whose last reference is released returns to the free list, or, when it
/// is registered in the prefix cache, is parked as idle: still findable by
/// [`Self::lookup`], and evicted (oldest first) only when an allocation
/// finds the free list empty.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    /// References held on each block; 0 means free or idle.
    ref_counts: Vec<u32>,
    /// Free unregistered blocks, popped from the back.
    free: Vec<BlockId>,
    /// Registered (cached) blocks and the idle ones among them.
    prefix: PrefixIndex,
}

impl BlockAllocator {
    /// A pool of `num_blocks` blocks, all free, handed out in ascending order.
    pub fn new(num_blocks: usize) -> Self {
        Self::with_order((0..num_blocks as BlockId).rev().collect())
    }

    /// A pool whose free list is `order` (the last id is handed out first).
    /// Tests use this to shuffle block ids; `order` must be a permutation of
    /// `0..order.len()`.
    pub fn with_order(order: Vec<BlockId>) -> Self {
        Self {
            ref_counts: vec![0; order.len()],
            prefix: PrefixIndex::new(order.len()),
            free: order,
        }
    }

    /// Total blocks in the pool.
    pub fn capacity(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks an allocation can take: free ones plus idle cached ones.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.prefix.num_idle()
    }

    /// Idle cached blocks (no reference; kept for reuse until evicted).
    pub fn num_idle_cached(&self) -> usize {
        self.prefix.num_idle()
    }

    /// Blocks held by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.capacity() - self.num_free()
    }

    /// Takes `n` blocks, or none at all (returns `None`) when fewer are
    /// obtainable. Free blocks go first; idle cached blocks are evicted,
    /// least recently used first, only for the rest.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free() {
            return None;
        }
        let from_free = n.min(self.free.len());
        let taken = self.free.split_off(self.free.len() - from_free);
        let mut taken: Vec<BlockId> = taken.into_iter().rev().collect();
        while taken.len() < n {
            match self.prefix.evict_oldest() {
                Some(id) => taken.push(id),
                None => {
                    // `num_free` counted idle blocks the index does not have.
                    tracing::error!("prefix cache idle count out of step");
                    self.free.extend(taken.into_iter().rev());
                    return None;
                }
            }
        }
        for id in &mut taken {
            self.ref_counts[*id as usize] = 1;
        }
        taken.shrink_to_fit();
        Some(taken)
    }

    /// Adds a reference to a block: sharing a held block, or taking an idle
    /// cached one back into use (a prefix cache hit).
    pub fn retain(&mut self, id: BlockId) {
        if let Some(count) = self.ref_counts.get_mut(id as usize) {
            if *count == 0 {
                if !self.prefix.is_registered(id) {
                    tracing::error!(block = id, "retain of a free KV block ignored");
                    return;
                }
                self.prefix.unpark(id);
            }
            *count += 1;
        }
    }

    /// Drops one reference to each block of `ids` (given in position order);
    /// blocks reaching zero are freed, or parked if cached. They are parked
    /// last block first, so a chain's tail is evicted before its head.
    pub fn release(&mut self, ids: &[BlockId]) {
        for &id in ids.iter().rev() {
            if let Some(count) = self.ref_counts.get_mut(id as usize) {
                if *count == 0 {
                    tracing::error!(block = id, "double free of a KV block ignored");
                    continue;
                }
                *count -= 1;
                if *count == 0 {
                    if self.prefix.is_registered(id) {
                        self.prefix.park(id);
                    } else {
                        self.free.push(id);
                    }
                }
            }
        }
    }

    /// References currently held on `id` (0 when free or out of range).
    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.ref_counts.get(id as usize).copied().unwrap_or(0)
    }

    /// The cached block holding `key` and its chain id; does not retain it.
    pub fn lookup(&self, key: &BlockKey) -> Option<(BlockId, ChainId)> {
        self.prefix.lookup(key)
    }

    /// Registers held block `id`, full and computed, as holding `key`.
    /// Returns the chain id standing for `key` (see [`PrefixIndex::register`]).
    pub fn register(&mut self, id: BlockId, key: BlockKey) -> ChainId {
        self.prefix.register(id, key)
    }

    /// True when `id` is registered in the prefix cache.
    pub fn is_cached(&self, id: BlockId) -> bool {
        self.prefix.is_registered(id)
    }

    /// Cached blocks evicted since start.
    pub fn evictions(&self) -> u64 {
        self.prefix.evictions()
    }
}

/// The blocks one sequence owns, in position order: token at position `p`
/// lives in block `blocks[p / block_size]`, offset `p % block_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    /// Block ids in position order.
    blocks: Vec<BlockId>,
}

impl BlockTable {
    /// The block ids, in position order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True when no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Blocks to add so that `num_tokens` positions fit.
    pub fn blocks_missing(&self, num_tokens: usize, block_size: usize) -> usize {
        num_tokens
            .div_ceil(block_size)
            .saturating_sub(self.blocks.len())
    }

    /// Appends freshly allocated blocks.
    pub fn extend(&mut self, ids: Vec<BlockId>) {
        self.blocks.extend(ids);
    }

    /// Empties the table, returning the ids so the caller can release them.
    pub fn take(&mut self) -> Vec<BlockId> {
        std::mem::take(&mut self.blocks)
    }

    /// The flat cache slot (`block * block_size + offset`) of position `pos`,
    /// or `None` when the table does not reach that far.
    pub fn slot(&self, pos: usize, block_size: usize) -> Option<u32> {
        let block = *self.blocks.get(pos / block_size)?;
        Some(block * block_size as u32 + (pos % block_size) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_all_or_nothing_and_release_returns_blocks() {
        let mut alloc = BlockAllocator::new(4);
        let a = alloc.allocate(3).unwrap();
        assert_eq!(a, vec![0, 1, 2]);
        assert!(alloc.allocate(2).is_none());
        assert_eq!(alloc.num_free(), 1);
        alloc.release(&a);
        assert_eq!(alloc.num_free(), 4);
    }

    #[test]
    fn shared_block_is_freed_by_its_last_reference() {
        let mut alloc = BlockAllocator::new(2);
        let a = alloc.allocate(1).unwrap();
        alloc.retain(a[0]);
        alloc.release(&a);
        assert_eq!(alloc.num_free(), 1);
        assert_eq!(alloc.ref_count(a[0]), 1);
        alloc.release(&a);
        assert_eq!(alloc.num_free(), 2);
        alloc.release(&a); // double free is ignored, not corrupting
        assert_eq!(alloc.num_free(), 2);
    }

    #[test]
    fn cached_blocks_are_evicted_only_when_no_free_block_remains() {
        let mut alloc = BlockAllocator::new(4);
        let held = alloc.allocate(3).unwrap();
        let keys: Vec<BlockKey> = (0..3).map(|t| BlockKey::new(None, &[t])).collect();
        for (id, key) in held.iter().zip(&keys) {
            alloc.register(*id, key.clone());
        }
        alloc.release(&held);
        // Released last block first: block 2 went idle first.
        assert_eq!((alloc.num_free(), alloc.num_idle_cached()), (4, 3));
        assert_eq!(alloc.allocate(1), Some(vec![3]), "the free block first");
        assert_eq!(alloc.lookup(&keys[2]), Some((2, 2)), "nothing evicted yet");
        alloc.retain(0); // a hit takes block 0 out of the idle set
        assert_eq!(alloc.allocate(1), Some(vec![2]), "then the oldest idle");
        assert_eq!(alloc.lookup(&keys[2]), None);
        assert_eq!(alloc.allocate(1), Some(vec![1]));
        assert!(alloc.allocate(1).is_none(), "block 0 is held");
        assert_eq!(alloc.lookup(&keys[0]), Some((0, 0)));
        assert_eq!(alloc.evictions(), 2);
    }

    #[test]
    fn slots_follow_the_table() {
        let mut table = BlockTable::default();
        assert_eq!(table.blocks_missing(5, 4), 2);
        table.extend(vec![7, 2]);
        assert_eq!(table.slot(0, 4), Some(28));
        assert_eq!(table.slot(5, 4), Some(9));
        assert_eq!(table.slot(8, 4), None);
        assert_eq!(table.blocks_missing(8, 4), 0);
    }
}
