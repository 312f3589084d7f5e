//! The scheduler's side of prefix caching, over one sequence and the
//! allocator: keying a sequence's computed blocks, finding the cached
//! blocks that can stand for its leading tokens, taking them, and noticing
//! when another running sequence is about to cache what it needs.
//!
//! Keys and the index itself live in [`crate::prefix_cache`].

use super::SeqState;
use crate::block_allocator::{BlockAllocator, BlockId};
use crate::prefix_cache::{BlockKey, ChainId};

/// Keys `state`'s full, computed blocks not keyed yet, each after the
/// chain of the one before. A block whose contents are cached already (a
/// sibling computed them in the same step) stays unkeyed; the chain goes on
/// from the cached one.
pub(super) fn key_computed_blocks(
    state: &mut SeqState,
    allocator: &mut BlockAllocator,
    block_size: usize,
) {
    let full = (state.num_computed / block_size).min(state.table.len());
    for i in state.num_keyed_blocks..full {
        let (Some(tokens), Some(&block)) = (
            state.tokens.get(i * block_size..(i + 1) * block_size),
            state.table.blocks().get(i),
        ) else {
            break;
        };
        let key = BlockKey::new(state.chain, tokens);
        state.chain = Some(allocator.register(block, key));
        state.num_keyed_blocks = i + 1;
    }
}

/// The cached blocks holding `state`'s leading full blocks, each with its
/// chain id, as far as they match: only blocks wholly before its last known
/// token, which is always computed (its logits are needed).
pub(super) fn cached_prefix(
    state: &SeqState,
    allocator: &BlockAllocator,
    block_size: usize,
) -> Vec<(BlockId, ChainId)> {
    let mut hits = Vec::new();
    let usable = state.tokens.len().saturating_sub(1);
    let mut parent = None;
    for tokens in state.tokens[..usable].chunks_exact(block_size) {
        match allocator.lookup(&BlockKey::new(parent, tokens)) {
            Some(hit) => {
                parent = Some(hit.1);
                hits.push(hit);
            }
            None => break,
        }
    }
    hits
}

/// True when one of `running` is computing the block that would extend
/// `state`'s cached prefix of `cached_blocks` blocks (the same tokens up to
/// that block's end, not keyed yet): `state` then waits until it is cached
/// rather than compute it a second time (requests with `n > 1`, or sharing
/// a system prompt, arriving together). Never for the block holding its
/// last known token, which it computes anyway.
pub(super) fn prefix_in_flight<'a>(
    state: &SeqState,
    cached_blocks: usize,
    block_size: usize,
    mut running: impl Iterator<Item = &'a SeqState>,
) -> bool {
    let end = (cached_blocks + 1) * block_size;
    let Some(wanted) = state.tokens.get(..end).filter(|_| end < state.tokens.len()) else {
        return false;
    };
    running.any(|r| r.num_keyed_blocks <= cached_blocks && r.tokens.get(..end) == Some(wanted))
}

/// Gives block-less `state` the cached blocks `hits` (from
/// [`cached_prefix`]) as its computed, keyed prefix.
pub(super) fn take_cached_prefix(
    state: &mut SeqState,
    allocator: &mut BlockAllocator,
    hits: &[(BlockId, ChainId)],
    block_size: usize,
) {
    for (block, _) in hits {
        allocator.retain(*block);
    }
    state
        .table
        .extend(hits.iter().map(|(block, _)| *block).collect());
    state.num_computed = hits.len() * block_size;
    state.num_keyed_blocks = hits.len();
    state.chain = hits.last().map(|(_, chain)| *chain);
}
