//! Automatic prefix caching's index (vLLM's idea): which full KV blocks
//! hold which token chains, and which of those are idle, oldest first.
//!
//! A full block is known by a [`BlockKey`]: the chain id of the block
//! before it plus its own tokens, which is everything its K and V depend on
//! for this model (no adapters, no multimodal inputs). Keys are compared
//! whole, never by a digest, so two different token chains can never be
//! taken for one another: a parent's [`ChainId`] is handed out once, on
//! registration, and by induction names its whole chain.
//!
//! The index only ever holds pool blocks (one entry per block at most), so
//! its memory is bounded by the pool. [`crate::block_allocator`] owns it:
//! blocks released to a reference count of 0 that carry a key are parked
//! here as idle instead of being freed, reused on a hit, and evicted oldest
//! first only when an allocation finds the free list empty.

use std::collections::{BTreeMap, HashMap};

use crate::block_allocator::BlockId;

/// Names one registration of one block, and through its parent the whole
/// token chain up to and including that block. Never reused.
pub type ChainId = u64;

/// Exactly what a full block's K/V depend on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The chain of the block before it; `None` for a sequence's first block.
    parent: Option<ChainId>,
    /// The block's tokens (a full block).
    tokens: Box<[u32]>,
}

impl BlockKey {
    /// The key of a full block holding `tokens`, after the chain `parent`.
    pub fn new(parent: Option<ChainId>, tokens: &[u32]) -> Self {
        Self {
            parent,
            tokens: tokens.into(),
        }
    }
}

/// One registered block.
#[derive(Debug, Clone)]
struct Entry {
    /// Its key, to drop it from the map on eviction.
    key: BlockKey,
    /// Its chain id, the parent of the next block's key.
    chain: ChainId,
    /// When it went idle (the idle map's key), while its ref count is 0.
    idle_since: Option<u64>,
}

/// Registered blocks by key, and the idle ones in least-recently-used order.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    /// Key → the block holding it.
    by_key: HashMap<BlockKey, BlockId>,
    /// Per pool block: its registration, if any.
    entries: Vec<Option<Entry>>,
    /// Idle registered blocks by the tick they went idle: oldest first.
    idle: BTreeMap<u64, BlockId>,
    /// Next idle tick.
    next_tick: u64,
    /// Next chain id.
    next_chain: ChainId,
    /// Blocks evicted since start.
    evictions: u64,
}

impl PrefixIndex {
    /// An empty index over a pool of `num_blocks` blocks.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            entries: vec![None; num_blocks],
            idle: BTreeMap::new(),
            next_tick: 0,
            next_chain: 0,
            evictions: 0,
        }
    }

    /// The block holding `key` and its chain id, if cached.
    pub fn lookup(&self, key: &BlockKey) -> Option<(BlockId, ChainId)> {
        let block = *self.by_key.get(key)?;
        let chain = self.entry(block)?.chain;
        Some((block, chain))
    }

    /// Records that `block` (full, computed) holds `key`. Returns the chain
    /// id that now stands for `key`: the block's new one, or that of the
    /// block already registered with the same contents (then `block` stays
    /// unregistered and is freed normally).
    pub fn register(&mut self, block: BlockId, key: BlockKey) -> ChainId {
        if let Some((_, chain)) = self.lookup(&key) {
            return chain;
        }
        if let Some(entry) = self.entry(block) {
            // Registered already under another key: cannot happen for a
            // block that is written only while unregistered; keep the old.
            tracing::error!(block, "KV block registered twice for the prefix cache");
            return entry.chain;
        }
        let chain = self.next_chain;
        self.next_chain += 1;
        if let Some(slot) = self.entries.get_mut(block as usize) {
            self.by_key.insert(key.clone(), block);
            *slot = Some(Entry {
                key,
                chain,
                idle_since: None,
            });
        }
        chain
    }

    /// True when `block` is registered.
    pub fn is_registered(&self, block: BlockId) -> bool {
        self.entry(block).is_some()
    }

    /// Parks a registered block whose last reference went away.
    pub fn park(&mut self, block: BlockId) {
        let tick = self.next_tick;
        if let Some(Some(entry)) = self.entries.get_mut(block as usize) {
            self.next_tick += 1;
            entry.idle_since = Some(tick);
            self.idle.insert(tick, block);
        }
    }

    /// Takes a parked block back into use (a cache hit on an idle block).
    pub fn unpark(&mut self, block: BlockId) {
        if let Some(Some(entry)) = self.entries.get_mut(block as usize) {
            if let Some(tick) = entry.idle_since.take() {
                self.idle.remove(&tick);
            }
        }
    }

    /// Evicts the idle block that went idle first: forgets its key and
    /// returns it for reuse. `None` when no block is idle.
    pub fn evict_oldest(&mut self) -> Option<BlockId> {
        let (_, block) = self.idle.pop_first()?;
        if let Some(entry) = self.entries.get_mut(block as usize).and_then(Option::take) {
            self.by_key.remove(&entry.key);
        }
        self.evictions += 1;
        Some(block)
    }

    /// Registered blocks with no reference: reusable on a hit, evictable.
    pub fn num_idle(&self) -> usize {
        self.idle.len()
    }

    /// Registered blocks, held or idle.
    pub fn num_registered(&self) -> usize {
        self.by_key.len()
    }

    /// Blocks evicted since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn entry(&self, block: BlockId) -> Option<&Entry> {
        self.entries.get(block as usize)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tokens_after_different_parents_are_different_blocks() {
        let mut index = PrefixIndex::new(4);
        let a = index.register(0, BlockKey::new(None, &[1, 2]));
        let b = index.register(1, BlockKey::new(None, &[3, 4]));
        index.register(2, BlockKey::new(Some(a), &[5, 6]));
        assert_eq!(index.lookup(&BlockKey::new(Some(a), &[5, 6])), Some((2, 2)));
        assert_eq!(index.lookup(&BlockKey::new(Some(b), &[5, 6])), None);
        assert_eq!(index.lookup(&BlockKey::new(Some(a), &[5, 7])), None);
    }

    #[test]
    fn a_duplicate_keeps_the_first_block() {
        let mut index = PrefixIndex::new(4);
        let first = index.register(0, BlockKey::new(None, &[1, 2]));
        assert_eq!(index.register(1, BlockKey::new(None, &[1, 2])), first);
        assert!(!index.is_registered(1));
        assert_eq!(index.num_registered(), 1);
    }

    #[test]
    fn eviction_is_oldest_idle_first_and_forgets_the_key() {
        let mut index = PrefixIndex::new(4);
        for b in 0..3 {
            index.register(b, BlockKey::new(None, &[b]));
        }
        index.park(2);
        index.park(0);
        index.park(1);
        index.unpark(0); // a hit: no longer evictable
        assert_eq!(index.evict_oldest(), Some(2));
        assert_eq!(index.lookup(&BlockKey::new(None, &[2])), None);
        assert_eq!(index.evict_oldest(), Some(1));
        assert_eq!(index.evict_oldest(), None);
        assert_eq!(index.lookup(&BlockKey::new(None, &[0])), Some((0, 0)));
        assert_eq!(index.evictions(), 2);
        // A re-registered block gets a fresh chain id: children keyed on
        // the old one can no longer be reached.
        assert_eq!(index.register(2, BlockKey::new(None, &[9])), 3);
    }
}
