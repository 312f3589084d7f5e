//! The scheduler with prefix caching: reuse of cached blocks at admission,
//! no sharing between different token chains, eviction order, recompute
//! from the cache after preemption; and admission that never preempts for
//! a request it then cannot admit.

use super::tests::{config, distinct};
use super::*;

/// Plans a step and "runs" it: every sampling chunk gets token 9.
fn step(s: &mut Scheduler) -> StepPlan {
    let plan = s.schedule();
    for chunk in plan.chunks.iter().filter(|c| c.samples) {
        s.append_token(chunk.seq_id, 9);
    }
    plan
}

fn chunk_of(plan: &StepPlan, id: SeqId) -> ScheduledChunk {
    plan.chunks
        .iter()
        .find(|c| c.seq_id == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not planned: {plan:?}"))
}

fn blocks(s: &Scheduler, id: SeqId) -> Vec<BlockId> {
    s.block_table(id).unwrap().blocks().to_vec()
}

#[test]
fn a_second_sequence_with_the_same_prompt_computes_only_the_remainder() {
    let mut s = Scheduler::new(config(64, 100, 8, 100)).unwrap();
    let prompt = distinct(1, 14); // 3 full blocks of 4, and 2 tokens
    s.add(1, 0, &prompt, 4).unwrap();
    assert_eq!(chunk_of(&step(&mut s), 1).len, 14);
    s.add(2, 0, &prompt, 4).unwrap();
    let plan = step(&mut s);
    assert_eq!(
        chunk_of(&plan, 2),
        ScheduledChunk {
            seq_id: 2,
            start: 12,
            len: 2,
            samples: true
        }
    );
    let (first, second) = (blocks(&s, 1), blocks(&s, 2));
    assert_eq!(first[..3], second[..3]);
    assert_ne!(first[3], second[3]);
    for block in &first[..3] {
        assert_eq!(s.allocator.ref_count(*block), 2);
    }
    // A prompt of exactly 3 blocks reuses 2: its last token must be computed.
    s.add(3, 0, &prompt[..12], 4).unwrap();
    let third = chunk_of(&step(&mut s), 3);
    assert_eq!((third.start, third.len), (8, 4));
    let stats = s.stats();
    assert_eq!(stats.prefix_cache_queries, 14 + 14 + 12);
    assert_eq!(stats.prefix_cache_hits, 12 + 8);
    let (held, used) = s.blocks_accounted();
    assert_eq!(held, used);
}

#[test]
fn different_prompts_share_nothing_and_chains_are_compared_whole() {
    let mut s = Scheduler::new(config(64, 100, 8, 100)).unwrap();
    let a = distinct(1, 9);
    // Another first block, then the same tokens as a's second block.
    let mut b = a.clone();
    b[0] += 1;
    // Same first block, different second.
    let mut c = a.clone();
    c[5] += 1;
    s.add(1, 0, &a, 4).unwrap();
    s.add(5, 0, &b[..5], 4).unwrap(); // caches b's first block
    step(&mut s);
    s.add(2, 0, &b, 4).unwrap();
    s.add(3, 0, &c, 4).unwrap();
    s.add(4, 0, &distinct(4, 9), 4).unwrap();
    let plan = step(&mut s);
    // b's second block holds a's tokens, but after another first block: its
    // K/V differ, so only b's own first block is reused.
    assert_eq!(chunk_of(&plan, 2).start, 4);
    assert_eq!(blocks(&s, 2)[0], blocks(&s, 5)[0]);
    assert_eq!(chunk_of(&plan, 3).start, 4);
    assert_eq!(chunk_of(&plan, 4).start, 0);
    let first = blocks(&s, 1);
    for other in [2, 4, 5] {
        assert!(blocks(&s, other).iter().all(|b| !first.contains(b)));
    }
    assert_eq!(blocks(&s, 3)[0], first[0]);
    assert!(!first.contains(&blocks(&s, 3)[1]));
}

#[test]
fn eviction_takes_idle_cached_blocks_oldest_first_only_when_none_is_free() {
    let mut s = Scheduler::new(config(6, 100, 8, 100)).unwrap();
    let first = distinct(1, 9); // 2 full blocks and 1 token
    s.add(1, 0, &first, 1).unwrap();
    step(&mut s);
    s.remove(1);
    let stats = s.stats();
    assert_eq!((stats.blocks_used, stats.blocks_cached), (0, 2));
    // Takes the 4 free blocks, not the cached ones.
    s.add(2, 0, &distinct(2, 15), 1).unwrap();
    step(&mut s);
    let stats = s.stats();
    assert_eq!((stats.prefix_cache_evictions, stats.blocks_cached), (0, 2));
    // No free block left: the oldest idle one goes, which is sequence 1's
    // tail (a chain is parked tail first).
    s.add(3, 0, &distinct(3, 3), 1).unwrap();
    step(&mut s);
    let stats = s.stats();
    assert_eq!((stats.prefix_cache_evictions, stats.blocks_cached), (1, 1));
    s.remove(2);
    s.remove(3);
    s.add(4, 0, &first, 1).unwrap();
    assert_eq!(chunk_of(&step(&mut s), 4).start, 4, "the head survived");
}

#[test]
fn a_preempted_sequence_recomputes_only_past_its_cached_blocks() {
    let mut s = Scheduler::new(config(5, 100, 8, 100)).unwrap();
    s.add(1, 0, &distinct(1, 9), 4).unwrap();
    step(&mut s);
    s.add(2, 9, &distinct(2, 12), 4).unwrap();
    let plan = step(&mut s);
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(s.stats().blocks_cached, 2, "its full blocks stay cached");
    s.remove(2);
    let resumed = chunk_of(&step(&mut s), 1);
    // 9 prompt tokens and 1 generated: blocks 0 and 1 come from the cache.
    assert_eq!((resumed.start, resumed.len), (8, 2));
    assert_eq!(s.stats().prefix_cache_hits, 8);
}

#[test]
fn blocks_of_a_failed_step_are_not_cached() {
    let mut s = Scheduler::new(config(16, 100, 8, 100)).unwrap();
    let prompt = distinct(1, 9);
    s.add(1, 0, &prompt, 4).unwrap();
    s.schedule(); // the step fails
    s.remove_failed(1);
    s.add(2, 0, &prompt, 4).unwrap();
    assert_eq!(chunk_of(&step(&mut s), 2).start, 0);
    s.remove(2);
    s.add(3, 0, &prompt, 4).unwrap();
    assert_eq!(chunk_of(&step(&mut s), 3).start, 8);
}

#[test]
fn caching_off_reuses_nothing() {
    let mut cfg = config(64, 100, 8, 100);
    cfg.enable_prefix_caching = false;
    let mut s = Scheduler::new(cfg).unwrap();
    let prompt = distinct(1, 14);
    s.add(1, 0, &prompt, 4).unwrap();
    step(&mut s);
    s.add(2, 0, &prompt, 4).unwrap();
    assert_eq!(chunk_of(&step(&mut s), 2).start, 0);
    s.remove(1);
    assert_eq!(s.stats().blocks_cached, 0);
}

/// A high-priority request that cannot fit even if every lower-ranked
/// sequence were preempted (a higher-ranked one holds most blocks) leaves
/// the running batch alone, whether the batch is full or blocks are short.
#[test]
fn admission_preempts_nobody_when_the_request_would_still_not_fit() {
    for max_seqs in [2, 8] {
        let mut s = Scheduler::new(config(8, 100, max_seqs, 100)).unwrap();
        s.add(1, 10, &distinct(1, 18), 2).unwrap(); // 5 blocks
        s.add(2, 0, &distinct(2, 3), 5).unwrap(); // 1 block
        step(&mut s);
        // Needs 4 blocks: 2 are free, and preempting 2 would free only 1.
        s.add(3, 5, &distinct(3, 16), 4).unwrap();
        let plan = step(&mut s);
        assert!(plan.preempted.is_empty(), "max_seqs {max_seqs}: {plan:?}");
        assert_eq!(s.status(2), Some(SeqStatus::Running));
        assert_eq!(s.status(3), Some(SeqStatus::Waiting));
        let ids: Vec<SeqId> = plan.chunks.iter().map(|c| c.seq_id).collect();
        assert_eq!(ids, vec![1, 2]);
        // Once the big one leaves, the request is admitted.
        s.remove(1);
        let plan = step(&mut s);
        assert_eq!(chunk_of(&plan, 3).len, 16);
    }
}

/// Siblings (`n > 1`, or one system prompt) arriving together: the first
/// computes the prompt, the others wait for its blocks and compute only the
/// part the cache cannot hold.
#[test]
fn siblings_arriving_together_wait_for_the_first_to_cache_the_prompt() {
    let mut s = Scheduler::new(config(64, 100, 8, 8)).unwrap();
    let prompt = distinct(1, 14);
    for id in 1..=3 {
        s.add(id, 0, &prompt, 4).unwrap();
    }
    let plan = step(&mut s);
    assert_eq!(plan.chunks.len(), 1, "{plan:?}");
    assert_eq!(chunk_of(&plan, 1).len, 8);
    let plan = step(&mut s);
    assert_eq!(plan.chunks.len(), 1, "block 2 is still being computed");
    let plan = step(&mut s);
    for id in [2, 3] {
        let chunk = chunk_of(&plan, id);
        assert_eq!((chunk.start, chunk.len), (12, 2));
    }
    assert_eq!(s.stats().prefix_cache_hits, 24);
    let (held, used) = s.blocks_accounted();
    assert_eq!(held, used);
}
