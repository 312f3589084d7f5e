//! Unit and property tests of the scheduler (a simulated engine drives it).

use super::*;
use proptest::prelude::*;

pub(super) fn config(
    num_blocks: usize,
    budget: usize,
    max_seqs: usize,
    chunk: usize,
) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 4,
        num_blocks,
        max_num_seqs: max_seqs,
        max_tokens_per_step: budget,
        max_prefill_chunk: chunk,
        admission: AdmissionPolicy::OnDemand,
        enable_prefix_caching: true,
    }
}

/// `len` tokens that no other `seed` shares.
pub(super) fn distinct(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|t| seed * 1000 + t).collect()
}

#[test]
fn long_prompt_is_chunked_and_decodes_keep_running() {
    let mut s = Scheduler::new(config(64, 8, 4, 8)).unwrap();
    s.add(1, 0, &distinct(1, 3), 10).unwrap();
    let plan = s.schedule();
    assert_eq!(
        plan.chunks,
        vec![ScheduledChunk {
            seq_id: 1,
            start: 0,
            len: 3,
            samples: true
        }]
    );
    s.append_token(1, 7);
    s.add(2, 0, &distinct(2, 40), 1).unwrap();
    let plan = s.schedule();
    // The decode of 1 goes first; 2 gets the rest of the budget.
    assert_eq!(
        plan.chunks[0],
        ScheduledChunk {
            seq_id: 1,
            start: 3,
            len: 1,
            samples: true
        }
    );
    assert_eq!(
        plan.chunks[1],
        ScheduledChunk {
            seq_id: 2,
            start: 0,
            len: 7,
            samples: false
        }
    );
}

#[test]
fn higher_priority_is_admitted_first_and_fifo_within_one() {
    let mut s = Scheduler::new(config(64, 100, 2, 100)).unwrap();
    s.add(1, 0, &distinct(1, 2), 1).unwrap();
    s.add(2, 5, &distinct(2, 2), 1).unwrap();
    s.add(3, 5, &distinct(3, 2), 1).unwrap();
    let ids: Vec<_> = s.schedule().chunks.iter().map(|c| c.seq_id).collect();
    assert_eq!(ids, vec![2, 3]);
}

#[test]
fn high_priority_arrival_preempts_low_priority_when_blocks_run_out() {
    let mut s = Scheduler::new(config(4, 100, 8, 100)).unwrap();
    s.add(1, 0, &distinct(1, 12), 4).unwrap();
    s.schedule();
    s.append_token(1, 7);
    s.add(2, 9, &distinct(2, 8), 4).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(plan.chunks.len(), 1);
    assert_eq!(plan.chunks[0].seq_id, 2);
    assert_eq!(s.status(1), Some(SeqStatus::Waiting));
}

#[test]
fn paused_sequences_keep_blocks_until_pressure() {
    let mut s = Scheduler::new(config(4, 100, 8, 100)).unwrap();
    s.add(1, 0, &distinct(1, 8), 4).unwrap();
    s.schedule();
    s.append_token(1, 7);
    s.pause(1).unwrap();
    assert_eq!(s.stats().blocks_used, 2);
    assert!(s.schedule().chunks.is_empty());
    s.add(2, 0, &distinct(2, 12), 1).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(s.block_table(1).map(BlockTable::len), Some(0));
    s.resume(1).unwrap();
    assert_eq!(s.status(1), Some(SeqStatus::Waiting));
}

#[test]
fn reserve_full_takes_all_blocks_up_front() {
    let mut cfg = config(8, 100, 8, 100);
    cfg.admission = AdmissionPolicy::ReserveFull;
    let mut s = Scheduler::new(cfg).unwrap();
    s.add(1, 0, &distinct(1, 3), 13).unwrap();
    s.schedule();
    assert_eq!(s.stats().blocks_used, 4);
}

#[test]
fn requests_larger_than_the_pool_are_refused() {
    let mut s = Scheduler::new(config(2, 100, 8, 100)).unwrap();
    assert!(matches!(
        s.add(1, 0, &distinct(1, 8), 1),
        Err(BatcherError::TooLong { .. })
    ));
}

/// One request in a simulated workload.
#[derive(Debug, Clone)]
struct Arrival {
    step: usize,
    priority: i32,
    prompt: usize,
    max_new: usize,
    /// Which shared prefix its prompt starts with, and how much of it.
    family: u32,
    shared: usize,
}

impl Arrival {
    /// Its prompt: `shared` tokens common to its family, then its own.
    fn tokens(&self, own: u32) -> Vec<u32> {
        (0..self.prompt as u32)
            .map(|t| match (t as usize) < self.shared {
                true => self.family * 1000 + t,
                false => 100_000 + own * 1000 + t,
            })
            .collect()
    }
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0usize..20,
        0i32..3,
        1usize..30,
        1usize..12,
        0u32..3,
        0usize..30,
    )
        .prop_map(
            |(step, priority, prompt, max_new, family, shared)| Arrival {
                step,
                priority,
                prompt,
                max_new,
                family,
                shared: shared.min(prompt),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Budget and sequence cap are never exceeded, block accounting (and
    /// every reference count) stays exact, every chunk continues where the
    /// sequence's cache ends (from 0 or from a cached prefix after a
    /// preemption or at admission), finds the right K/V in every earlier
    /// slot (a simulated cache records which token chain wrote each slot),
    /// writes only into blocks nobody shares, and samples only at its last
    /// known token; every request finishes (no starvation) in bounded steps,
    /// with shared prompt prefixes, identical continuations, pauses,
    /// resumes and cancels thrown in, prefix caching on or off.
    #[test]
    fn limits_hold_and_everyone_finishes(
        arrivals in prop::collection::vec(arrival(), 1..24),
        disruptions in prop::collection::vec((0usize..30, 0usize..24, 0u8..3), 0..8),
        num_blocks in 11usize..40,
        budget in 1usize..40,
        max_seqs in 1usize..8,
        chunk in 1usize..16,
        reserve in any::<bool>(),
        caching in any::<bool>(),
    ) {
        let mut cfg = config(num_blocks, budget, max_seqs, chunk);
        if reserve {
            cfg.admission = AdmissionPolicy::ReserveFull;
        }
        cfg.enable_prefix_caching = caching;
        let mut s = Scheduler::new(cfg).unwrap();
        let n = arrivals.len();
        let mut tokens: Vec<Vec<u32>> =
            arrivals.iter().enumerate().map(|(i, a)| a.tokens(i as u32)).collect();
        // Slot -> the token chain whose last token's K/V it holds.
        let mut kv: Vec<Option<Vec<u32>>> = vec![None; num_blocks * 4];
        let mut generated = vec![0usize; n];
        let mut fed = vec![0usize; n];
        let mut finished = vec![false; n];
        let mut resume_at: Vec<Option<usize>> = vec![None; n];
        let mut step = 0;
        while finished.iter().any(|f| !f) {
            for (i, a) in arrivals.iter().enumerate() {
                if a.step == step {
                    s.add(i as SeqId, a.priority, &tokens[i], a.max_new).unwrap();
                }
            }
            for &(at, target, action) in &disruptions {
                let i = target % n;
                if at != step || finished[i] || arrivals[i].step > step {
                    continue;
                }
                match action {
                    0 => {
                        s.pause(i as SeqId).unwrap();
                        resume_at[i] = Some(step + 3);
                    }
                    1 => {
                        s.remove(i as SeqId);
                        finished[i] = true;
                    }
                    _ => s.resume(i as SeqId).unwrap(),
                }
            }
            for (i, r) in resume_at.iter_mut().enumerate() {
                if *r == Some(step) && !finished[i] {
                    s.resume(i as SeqId).unwrap();
                    *r = None;
                }
            }
            let plan = s.schedule();
            for id in &plan.preempted {
                fed[*id as usize] = 0;
            }
            prop_assert!(plan.num_tokens() <= budget);
            prop_assert!(plan.chunks.len() <= max_seqs);
            prop_assert!(s.stats().running <= max_seqs);
            let (held, used) = s.blocks_accounted();
            prop_assert_eq!(held, used);
            for chunk in &plan.chunks {
                let table = s.block_table(chunk.seq_id).unwrap().clone();
                let last = chunk.start + chunk.len - 1;
                prop_assert!(table.slot(last, 4).is_some(), "chunk outside its blocks");
                let i = chunk.seq_id as usize;
                let from_cache = fed[i] == 0 && chunk.start % 4 == 0;
                prop_assert!(
                    chunk.start == fed[i] || (caching && from_cache),
                    "chunk does not continue the cache"
                );
                for pos in 0..chunk.start {
                    let slot = table.slot(pos, 4).unwrap() as usize;
                    prop_assert_eq!(kv[slot].as_deref(), Some(&tokens[i][..=pos]), "stale K/V");
                }
                for pos in chunk.start..=last {
                    let slot = table.slot(pos, 4).unwrap();
                    prop_assert_eq!(s.allocator.ref_count(slot / 4), 1, "write into a shared block");
                    kv[slot as usize] = Some(tokens[i][..=pos].to_vec());
                }
                fed[i] = chunk.start + chunk.len;
                let known = tokens[i].len();
                prop_assert!(fed[i] <= known);
                prop_assert_eq!(chunk.samples, fed[i] == known);
            }
            for chunk in plan.chunks.iter().filter(|c| c.samples) {
                let i = chunk.seq_id as usize;
                generated[i] += 1;
                if generated[i] == arrivals[i].max_new {
                    s.remove(chunk.seq_id);
                    finished[i] = true;
                } else {
                    // Same prompt, same continuation (like greedy siblings).
                    let token = 50_000 + generated[i] as u32;
                    tokens[i].push(token);
                    s.append_token(chunk.seq_id, token);
                }
            }
            step += 1;
            prop_assert!(step < 5_000, "starvation: {:?} unfinished", finished);
        }
        prop_assert_eq!(s.stats().blocks_used, 0);
        prop_assert!(s.is_idle());
        if !caching {
            prop_assert_eq!(s.stats().prefix_cache_queries, 0);
        }
    }
}
