//! Unit and property tests of the scheduler (a simulated engine drives it).

use super::*;
use proptest::prelude::*;

fn config(num_blocks: usize, budget: usize, max_seqs: usize, chunk: usize) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 4,
        num_blocks,
        max_num_seqs: max_seqs,
        max_tokens_per_step: budget,
        max_prefill_chunk: chunk,
        admission: AdmissionPolicy::OnDemand,
    }
}

#[test]
fn long_prompt_is_chunked_and_decodes_keep_running() {
    let mut s = Scheduler::new(config(64, 8, 4, 8)).unwrap();
    s.add(1, 0, 3, 10).unwrap();
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
    s.append_token(1);
    s.add(2, 0, 40, 1).unwrap();
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
    s.add(1, 0, 2, 1).unwrap();
    s.add(2, 5, 2, 1).unwrap();
    s.add(3, 5, 2, 1).unwrap();
    let ids: Vec<_> = s.schedule().chunks.iter().map(|c| c.seq_id).collect();
    assert_eq!(ids, vec![2, 3]);
}

#[test]
fn high_priority_arrival_preempts_low_priority_when_blocks_run_out() {
    let mut s = Scheduler::new(config(4, 100, 8, 100)).unwrap();
    s.add(1, 0, 12, 4).unwrap();
    s.schedule();
    s.append_token(1);
    s.add(2, 9, 8, 4).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(plan.chunks.len(), 1);
    assert_eq!(plan.chunks[0].seq_id, 2);
    assert_eq!(s.status(1), Some(SeqStatus::Waiting));
}

#[test]
fn paused_sequences_keep_blocks_until_pressure() {
    let mut s = Scheduler::new(config(4, 100, 8, 100)).unwrap();
    s.add(1, 0, 8, 4).unwrap();
    s.schedule();
    s.append_token(1);
    s.pause(1).unwrap();
    assert_eq!(s.stats().blocks_used, 2);
    assert!(s.schedule().chunks.is_empty());
    s.add(2, 0, 12, 1).unwrap();
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
    s.add(1, 0, 3, 13).unwrap();
    s.schedule();
    assert_eq!(s.stats().blocks_used, 4);
}

#[test]
fn requests_larger_than_the_pool_are_refused() {
    let mut s = Scheduler::new(config(2, 100, 8, 100)).unwrap();
    assert!(matches!(
        s.add(1, 0, 8, 1),
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
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (0usize..20, 0i32..3, 1usize..30, 1usize..12).prop_map(|(step, priority, prompt, max_new)| {
        Arrival {
            step,
            priority,
            prompt,
            max_new,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Budget and sequence cap are never exceeded, block accounting stays
    /// exact, every chunk continues exactly where the sequence's cache ends
    /// (from 0 after a preemption) and samples only at its last known token,
    /// and every request finishes (no starvation) in bounded steps, with
    /// pauses, resumes and cancels thrown in.
    #[test]
    fn limits_hold_and_everyone_finishes(
        arrivals in prop::collection::vec(arrival(), 1..24),
        disruptions in prop::collection::vec((0usize..30, 0usize..24, 0u8..3), 0..8),
        num_blocks in 11usize..40,
        budget in 1usize..40,
        max_seqs in 1usize..8,
        chunk in 1usize..16,
        reserve in any::<bool>(),
    ) {
        let mut cfg = config(num_blocks, budget, max_seqs, chunk);
        if reserve {
            cfg.admission = AdmissionPolicy::ReserveFull;
        }
        let mut s = Scheduler::new(cfg).unwrap();
        let n = arrivals.len();
        let mut generated = vec![0usize; n];
        let mut fed = vec![0usize; n];
        let mut finished = vec![false; n];
        let mut resume_at: Vec<Option<usize>> = vec![None; n];
        let mut step = 0;
        while finished.iter().any(|f| !f) {
            for (i, a) in arrivals.iter().enumerate() {
                if a.step == step {
                    s.add(i as SeqId, a.priority, a.prompt, a.max_new).unwrap();
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
                let table = s.block_table(chunk.seq_id).unwrap();
                let last = chunk.start + chunk.len - 1;
                prop_assert!(table.slot(last, 4).is_some(), "chunk outside its blocks");
                let i = chunk.seq_id as usize;
                prop_assert_eq!(chunk.start, fed[i], "chunk does not continue the cache");
                fed[i] += chunk.len;
                let known = arrivals[i].prompt + generated[i];
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
                    s.append_token(chunk.seq_id);
                }
            }
            step += 1;
            prop_assert!(step < 5_000, "starvation: {:?} unfinished", finished);
        }
        prop_assert_eq!(s.stats().blocks_used, 0);
        prop_assert!(s.is_idle());
    }
}
