//! The engine, driven through its handle on the tiny random-weight Llama:
//! batched == sequential, paged == contiguous, preemption, chunk sizes,
//! cancel, pause/resume, stop strings.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::Device;
use sluice_batcher::model::tiny::{scratch_dir, write_tiny_model};
use sluice_batcher::rng::SplitMix64;
use sluice_batcher::{
    load_hf_dir, AdmissionPolicy, Engine, EngineConfig, EngineHandle, Event, FinishReason,
    GenerateRequest, SamplingParams, SchedulerConfig, TokenStream,
};

fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| write_tiny_model(&scratch_dir("engine-tests"), 5, false).unwrap())
}

fn start(scheduler: SchedulerConfig, shuffle: Option<u64>) -> EngineHandle {
    let model = load_hf_dir(model_dir(), &Device::Cpu).unwrap();
    let config = EngineConfig {
        scheduler,
        queue_capacity: 64,
        shuffle_blocks: shuffle,
    };
    Engine::start(model, config).unwrap()
}

fn sched(num_blocks: usize, chunk: usize) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 4,
        num_blocks,
        max_num_seqs: 16,
        max_tokens_per_step: 32,
        max_prefill_chunk: chunk,
        admission: AdmissionPolicy::OnDemand,
        enable_prefix_caching: true,
    }
}

/// A deterministic mix of prompts and lengths.
fn workload(n: usize, seed: u64) -> Vec<GenerateRequest> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let len = 2 + (rng.next_u64() % 18) as usize;
            let prompt: Vec<u32> = (0..len)
                .map(|_| 3 + (rng.next_u64() % 250) as u32)
                .collect();
            let params = SamplingParams {
                max_tokens: 4 + (rng.next_u64() % 10) as usize,
                ignore_eos: true,
                logprobs: Some(2),
                ..SamplingParams::default()
            };
            GenerateRequest::from_tokens(prompt, params)
        })
        .collect()
}

/// Generated tokens, and how many of them are trustworthy for comparison:
/// a step whose top-2 logprobs are closer than the margin may flip under
/// different float summation order, so comparison stops there.
#[derive(Debug, Clone)]
struct Output {
    tokens: Vec<u32>,
    decisive: usize,
}

fn collect(mut stream: TokenStream) -> Output {
    let mut tokens = Vec::new();
    let mut decisive = None;
    while let Some(event) = stream.blocking_recv() {
        match event {
            Event::Token(t) => {
                if let [a, b, ..] = t.top_logprobs.as_slice() {
                    if a.1 - b.1 < 1e-3 && decisive.is_none() {
                        decisive = Some(tokens.len());
                    }
                }
                tokens.push(t.token);
            }
            Event::Finished(f) => assert_ne!(f.reason, FinishReason::Cancelled),
            Event::Error(e) => panic!("request failed: {e}"),
        }
    }
    Output {
        decisive: decisive.unwrap_or(tokens.len()),
        tokens,
    }
}

/// Each request alone, one at a time.
fn run_alone(requests: &[GenerateRequest]) -> Vec<Output> {
    let engine = start(sched(256, 64), None);
    requests
        .iter()
        .map(|r| collect(engine.submit_blocking(r.clone()).unwrap()))
        .collect()
}

/// All requests on one engine, submitted in a shuffled order with staggered
/// arrivals (some while others are mid-stream).
fn run_batched(engine: &EngineHandle, requests: &[GenerateRequest], seed: u64) -> Vec<Output> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut threads = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let stream = engine.submit_blocking(requests[i].clone()).unwrap();
        threads.push((i, std::thread::spawn(move || collect(stream))));
        if k % 3 == 2 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut outputs: Vec<Option<Output>> = vec![None; requests.len()];
    for (i, t) in threads {
        outputs[i] = Some(t.join().unwrap());
    }
    outputs.into_iter().map(Option::unwrap).collect()
}

fn assert_same(alone: &[Output], batched: &[Output]) {
    for (i, (a, b)) in alone.iter().zip(batched).enumerate() {
        let n = a.decisive.min(b.decisive);
        assert_eq!(
            a.tokens.len(),
            b.tokens.len(),
            "request {i}: lengths differ"
        );
        assert_eq!(a.tokens[..n], b.tokens[..n], "request {i} differs");
    }
}

fn alone_reference() -> &'static (Vec<GenerateRequest>, Vec<Output>) {
    static REF: OnceLock<(Vec<GenerateRequest>, Vec<Output>)> = OnceLock::new();
    REF.get_or_init(|| {
        let requests = workload(12, 42);
        let alone = run_alone(&requests);
        (requests, alone)
    })
}

#[test]
fn batched_equals_sequential() {
    let (requests, alone) = alone_reference();
    let total: usize = alone.iter().map(|o| o.tokens.len()).sum();
    let decisive: usize = alone.iter().map(|o| o.decisive).sum();
    assert!(
        decisive * 10 >= total * 9,
        "too many near-ties: {decisive}/{total}"
    );
    for seed in [1, 2] {
        let engine = start(sched(256, 64), None);
        assert_same(alone, &run_batched(&engine, requests, seed));
        let stats = engine.stats_blocking().unwrap();
        // Sequences really shared steps.
        assert!(stats.steps * 2 < stats.generated_tokens, "{stats:?}");
    }
}

#[test]
fn paged_with_shuffled_blocks_equals_contiguous() {
    let (requests, alone) = alone_reference();
    let engine = start(sched(256, 64), Some(99));
    assert_same(alone, &run_batched(&engine, requests, 3));
}

#[test]
fn preemption_keeps_outputs_and_frees_every_block() {
    let (requests, alone) = alone_reference();
    // 12 requests of up to 33 tokens need ~9 blocks each; 16 blocks force preemption.
    let engine = start(sched(16, 64), Some(7));
    assert_same(alone, &run_batched(&engine, requests, 4));
    let stats = engine.stats_blocking().unwrap();
    assert!(
        stats.preemptions > 0,
        "pool was not small enough: {stats:?}"
    );
    assert_eq!(stats.blocks_used, 0);
}

#[test]
fn reserve_full_admission_keeps_outputs() {
    let (requests, alone) = alone_reference();
    let mut cfg = sched(24, 64);
    cfg.admission = AdmissionPolicy::ReserveFull;
    let engine = start(cfg, None);
    assert_same(alone, &run_batched(&engine, requests, 5));
    assert_eq!(engine.stats_blocking().unwrap().blocks_used, 0);
}

#[test]
fn prefill_chunk_size_does_not_change_results() {
    let (requests, alone) = alone_reference();
    for chunk in [1, 3, 7] {
        let engine = start(sched(256, chunk), None);
        assert_same(alone, &run_batched(&engine, requests, 6));
    }
}

fn long_request(prompt: Vec<u32>) -> GenerateRequest {
    let params = SamplingParams {
        max_tokens: 200,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    GenerateRequest::from_tokens(prompt, params)
}

#[test]
fn cancel_frees_blocks_at_once_and_spares_the_others() {
    let (requests, alone) = alone_reference();
    let engine = start(sched(256, 64), None);
    let mut victim = engine
        .submit_blocking(long_request(vec![5, 6, 7, 8, 9]))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(victim.blocking_recv(), Some(Event::Token(_))));
    }
    let others: Vec<_> = requests[..4]
        .iter()
        .map(|r| {
            let s = engine.submit_blocking(r.clone()).unwrap();
            std::thread::spawn(move || collect(s))
        })
        .collect();
    engine.cancel_blocking(victim.id()).unwrap();
    let outputs: Vec<Output> = others.into_iter().map(|t| t.join().unwrap()).collect();
    assert_same(&alone[..4], &outputs);
    let mut cancelled = false;
    while let Some(event) = victim.blocking_recv() {
        if let Event::Finished(f) = event {
            cancelled = f.reason == FinishReason::Cancelled;
        }
    }
    assert!(cancelled);
    assert_eq!(engine.stats_blocking().unwrap().blocks_used, 0);

    // Alone: the blocks are gone as soon as cancel returns (before any next step).
    let mut lone = engine.submit_blocking(long_request(vec![5, 6, 7])).unwrap();
    assert!(matches!(lone.blocking_recv(), Some(Event::Token(_))));
    assert!(engine.stats_blocking().unwrap().blocks_used > 0);
    engine.cancel_blocking(lone.id()).unwrap();
    assert_eq!(engine.stats_blocking().unwrap().blocks_used, 0);
}

#[test]
fn dropping_the_stream_cancels() {
    let engine = start(sched(256, 64), None);
    let mut stream = engine.submit_blocking(long_request(vec![9, 9, 9])).unwrap();
    assert!(matches!(stream.blocking_recv(), Some(Event::Token(_))));
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = engine.stats_blocking().unwrap();
        if stats.receivers_dropped == 1 && stats.blocks_used == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reaped: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn pause_parks_a_sequence_and_resume_finishes_it_identically() {
    let (requests, alone) = alone_reference();
    let engine = start(sched(256, 64), None);
    let mut stream = engine.submit_blocking(requests[0].clone()).unwrap();
    let mut tokens = Vec::new();
    if let Some(Event::Token(t)) = stream.blocking_recv() {
        tokens.push(t.token);
    }
    engine.pause_blocking(stream.id()).unwrap();
    let stats = engine.stats_blocking().unwrap();
    assert_eq!(stats.paused, 1);
    assert!(stats.blocks_used > 0, "pause keeps the blocks");
    // Drain anything sampled between the first token and the pause.
    std::thread::sleep(Duration::from_millis(20));
    let steps = engine.stats_blocking().unwrap().steps;
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        engine.stats_blocking().unwrap().steps,
        steps,
        "paused sequence still stepping"
    );
    engine.resume_blocking(stream.id()).unwrap();
    let rest = collect(stream);
    tokens.extend(rest.tokens);
    let n = alone[0].decisive;
    assert_eq!(tokens[..n], alone[0].tokens[..n]);
    assert!(engine.pause_blocking(12345).is_err());
}

/// Low-priority requests arrive first and fill the batch; a high-priority
/// one arriving later preempts one of them and finishes first. Under plain
/// FIFO it would be admitted last and finish last.
#[test]
fn higher_priority_request_is_served_first() {
    let mut cfg = sched(256, 64);
    cfg.max_num_seqs = 2;
    let engine = start(cfg, None);
    let (done, order) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    let mut follow = |name: String, stream: TokenStream| {
        let done = done.clone();
        threads.push(std::thread::spawn(move || {
            let (tokens, finished, error) = stream.collect_blocking();
            assert!(finished.is_some() && error.is_none(), "{name}: {error:?}");
            done.send((name, tokens.len())).unwrap();
        }));
    };
    for i in 0..4 {
        let low = long_request(vec![4 + i, 5]).with_priority(0);
        follow(format!("low {i}"), engine.submit_blocking(low).unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.stats_blocking().unwrap().generated_tokens == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.stats_blocking().unwrap();
    assert_eq!((stats.running, stats.waiting), (2, 2), "{stats:?}");
    let high = GenerateRequest::from_tokens(vec![8], SamplingParams::greedy(3)).with_priority(5);
    follow("high".into(), engine.submit_blocking(high).unwrap());
    drop(done);
    let first = order.recv().unwrap();
    assert_eq!(first.0, "high", "finished first: {first:?}");
    assert!(engine.stats_blocking().unwrap().preemptions >= 1);
    assert_eq!(order.iter().count(), 4);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn stop_strings_match_across_tokens_and_text_streams() {
    let engine = start(sched(256, 64), None);
    let (_, alone) = alone_reference();
    let first = &alone[0].tokens;
    // The tiny tokenizer decodes token i as "w{i}", joined by spaces.
    let stop = format!("w{} w{}", first[1], first[2]);
    let (requests, _) = alone_reference();
    let mut request = requests[0].clone();
    request.sampling.stop = vec![stop];
    let mut stream = engine.submit_blocking(request).unwrap();
    let mut text = String::new();
    let mut reason = None;
    while let Some(event) = stream.blocking_recv() {
        match event {
            Event::Token(t) => text.push_str(&t.text),
            Event::Finished(f) => {
                text.push_str(&f.trailing_text);
                reason = Some(f.reason);
            }
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(reason, Some(FinishReason::StopString));
    assert_eq!(text.trim(), format!("w{}", first[0]));
}

#[test]
fn invalid_requests_are_answered_with_an_error_event() {
    let engine = start(sched(8, 64), None);
    let too_long = GenerateRequest::from_tokens(vec![3; 40], SamplingParams::greedy(4));
    let (_, _, error) = engine.submit_blocking(too_long).unwrap().collect_blocking();
    assert!(error.is_some());
    let bad_token = GenerateRequest::from_tokens(vec![100_000], SamplingParams::greedy(4));
    let (_, _, error) = engine
        .submit_blocking(bad_token)
        .unwrap()
        .collect_blocking();
    assert!(error.unwrap().contains("vocabulary"));
}

#[tokio::test]
async fn async_handle_streams_and_reports_stats() {
    use futures_util::StreamExt;
    let engine = start(sched(256, 64), None);
    let request = GenerateRequest::from_text(
        "w5 w6 w7",
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(5)
        },
    );
    let stream = engine.submit(request).await.unwrap();
    let events: Vec<Event> = stream.collect().await;
    assert_eq!(events.len(), 6);
    assert!(matches!(events.last(), Some(Event::Finished(f)) if f.completion_tokens == 5));
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.generated_tokens, 5);
    assert_eq!(stats.blocks_used, 0);
}

#[test]
fn seeded_sampling_is_reproducible_batched_and_across_preemption() {
    let requests: Vec<GenerateRequest> = workload(8, 77)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.sampling.temperature = 0.9;
            r.sampling.top_p = 0.95;
            r.sampling.top_k = 50;
            r.sampling.seed = 1000 + i as u64;
            r.sampling.logprobs = None;
            r
        })
        .collect();
    let alone = run_alone(&requests);
    // A small pool forces preemption; the draws depend only on (seed, index).
    let engine = start(sched(12, 5), Some(3));
    let batched = run_batched(&engine, &requests, 8);
    for (a, b) in alone.iter().zip(&batched) {
        assert_eq!(a.tokens, b.tokens);
    }
    assert!(engine.stats_blocking().unwrap().preemptions > 0);
    // Different seeds give different streams.
    let mut other = requests[0].clone();
    other.sampling.seed += 1;
    let different = run_alone(&[other]);
    assert_ne!(different[0].tokens, alone[0].tokens);
}
