//! The engine thread: owns the model, the KV cache and the scheduler, and
//! loops: take commands, drop sequences whose reader left, plan a step, run
//! it, sample, stream tokens out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use super::request::{Event, FinishReason, Finished, GenerateRequest, Prompt, TokenEvent};
use super::EngineStats;
use crate::error::{BatcherError, Result};
use crate::kv_cache::KvCache;
use crate::model::{ChunkInput, LlamaRunner, PackedBatch};
use crate::sampling::{sample, SamplingParams};
use crate::scheduler::{Scheduler, SeqId, StepPlan};
use crate::text::{IncrementalDecoder, StopMatcher, StopOutcome};

/// A message from a handle to the engine thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new request.
    Submit(Box<Submission>),
    /// Cancel a sequence.
    Cancel(SeqId, oneshot::Sender<Result<()>>),
    /// Pause a sequence.
    Pause(SeqId, oneshot::Sender<Result<()>>),
    /// Resume a sequence.
    Resume(SeqId, oneshot::Sender<Result<()>>),
    /// Report counters.
    Stats(oneshot::Sender<EngineStats>),
}

/// A request on its way to the engine thread, with its own event sender.
#[derive(Debug)]
pub(crate) struct Submission {
    /// Sequence id.
    id: SeqId,
    /// What was asked.
    request: GenerateRequest,
    /// Where its events go.
    sender: mpsc::Sender<Event>,
    /// When the handle accepted it.
    submitted_at: Instant,
}

impl Submission {
    pub(crate) fn new(id: SeqId, request: GenerateRequest, sender: mpsc::Sender<Event>) -> Self {
        Self {
            id,
            request,
            sender,
            submitted_at: Instant::now(),
        }
    }
}

/// A sequence the engine is working on.
#[derive(Debug)]
struct Active {
    /// Sampling and stopping.
    sampling: SamplingParams,
    /// Prompt followed by the generated tokens.
    tokens: Vec<u32>,
    /// Tokens in the prompt.
    prompt_len: usize,
    /// Where its events go.
    sender: mpsc::Sender<Event>,
    /// The caller's request span.
    span: tracing::Span,
    /// When it was submitted.
    submitted_at: Instant,
    /// When its first token was sampled.
    first_token_at: Option<Instant>,
    /// Token-to-text, when the model has a tokenizer.
    decoder: Option<IncrementalDecoder>,
    /// Stop strings.
    stops: StopMatcher,
    /// Times preempted.
    preemptions: u32,
}

/// Everything the engine thread owns.
pub(crate) struct Worker {
    /// The model.
    runner: LlamaRunner,
    /// K/V pools.
    cache: KvCache,
    /// Batching, blocks and priorities.
    scheduler: Scheduler,
    /// Text in/out, if the model has a tokenizer.
    tokenizer: Option<Arc<Tokenizer>>,
    /// Live sequences by id.
    active: HashMap<SeqId, Active>,
    /// Commands from handles.
    commands: mpsc::Receiver<Command>,
    /// Counters.
    stats: EngineStats,
}

impl Worker {
    pub(crate) fn new(
        runner: LlamaRunner,
        cache: KvCache,
        scheduler: Scheduler,
        tokenizer: Option<Tokenizer>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            runner,
            cache,
            scheduler,
            tokenizer: tokenizer.map(Arc::new),
            active: HashMap::new(),
            commands,
            stats: EngineStats::default(),
        }
    }

    /// The engine loop; returns when every handle is gone and no work is left.
    pub(crate) fn run(mut self) {
        let mut handles_open = true;
        loop {
            if handles_open && self.scheduler.is_idle() {
                match self.commands.blocking_recv() {
                    Some(command) => self.handle(command),
                    None => handles_open = false,
                }
            }
            loop {
                match self.commands.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        handles_open = false;
                        break;
                    }
                }
            }
            self.drop_abandoned();
            if self.scheduler.is_idle() {
                if handles_open {
                    continue;
                }
                let paused: Vec<SeqId> = self.active.keys().copied().collect();
                for id in paused {
                    self.finish(id, FinishReason::Cancelled);
                }
                tracing::debug!("batcher engine stopped: every handle dropped");
                return;
            }
            let plan = self.scheduler.schedule();
            if plan.chunks.is_empty() {
                // Nothing can run right now (should not happen: a lone sequence
                // always fits). Wait for the next command rather than spin.
                tracing::warn!("scheduler produced an empty step with work pending");
                match self.commands.blocking_recv() {
                    Some(command) => self.handle(command),
                    None => {
                        // No handle can unblock it any more: end everything.
                        let stuck: Vec<SeqId> = self.active.keys().copied().collect();
                        for id in stuck {
                            self.finish(id, FinishReason::Cancelled);
                        }
                        return;
                    }
                }
                continue;
            }
            self.step(plan);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit(submission) => self.admit(*submission),
            Command::Cancel(id, reply) => {
                let known = self.active.contains_key(&id);
                if known {
                    self.stats.cancelled += 1;
                    self.finish(id, FinishReason::Cancelled);
                }
                let _ = reply.send(if known {
                    Ok(())
                } else {
                    Err(BatcherError::UnknownSequence(id))
                });
            }
            Command::Pause(id, reply) => {
                let result = match self.active.contains_key(&id) {
                    true => self.scheduler.pause(id),
                    false => Err(BatcherError::UnknownSequence(id)),
                };
                let _ = reply.send(result);
            }
            Command::Resume(id, reply) => {
                let result = match self.active.contains_key(&id) {
                    true => self.scheduler.resume(id),
                    false => Err(BatcherError::UnknownSequence(id)),
                };
                let _ = reply.send(result);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    fn snapshot(&self) -> EngineStats {
        let s = self.scheduler.stats();
        EngineStats {
            waiting: s.waiting,
            running: s.running,
            paused: s.paused,
            blocks_used: s.blocks_used,
            blocks_total: s.blocks_total,
            preemptions: s.preemptions,
            blocks_cached: s.blocks_cached,
            prefix_cache_queries: s.prefix_cache_queries,
            prefix_cache_hits: s.prefix_cache_hits,
            prefix_cache_evictions: s.prefix_cache_evictions,
            ..self.stats.clone()
        }
    }

    /// Validates a submission and queues it, or answers it with an error.
    fn admit(&mut self, submission: Submission) {
        let Submission {
            id,
            request,
            sender,
            submitted_at,
        } = submission;
        let span = request.span.clone();
        let _entered = span.enter();
        match self.validate(request) {
            Ok((tokens, sampling, priority)) => {
                let max_new = sampling.max_tokens;
                if let Err(e) = self.scheduler.add(id, priority, &tokens, max_new) {
                    self.stats.rejected += 1;
                    let _ = sender.try_send(Event::Error(e.to_string()));
                    return;
                }
                tracing::debug!(seq = id, prompt_tokens = tokens.len(), priority, "queued");
                let decoder = self
                    .tokenizer
                    .as_ref()
                    .map(|t| IncrementalDecoder::new(t.clone(), tokens.len()));
                self.active.insert(
                    id,
                    Active {
                        stops: StopMatcher::new(sampling.stop.clone()),
                        prompt_len: tokens.len(),
                        sampling,
                        tokens,
                        sender,
                        span: span.clone(),
                        submitted_at,
                        first_token_at: None,
                        decoder,
                        preemptions: 0,
                    },
                );
            }
            Err(e) => {
                self.stats.rejected += 1;
                let _ = sender.try_send(Event::Error(e.to_string()));
            }
        }
    }

    fn validate(&self, request: GenerateRequest) -> Result<(Vec<u32>, SamplingParams, i32)> {
        request.sampling.validate()?;
        let config = self.runner.config();
        let tokens = match request.prompt {
            Prompt::Tokens(tokens) => tokens,
            Prompt::Text(text) => {
                let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
                    BatcherError::InvalidRequest(
                        "this model has no tokenizer; send token ids".into(),
                    )
                })?;
                tokenizer
                    .encode(text, true)
                    .map_err(|e| BatcherError::Tokenizer(e.to_string()))?
                    .get_ids()
                    .to_vec()
            }
        };
        if tokens.is_empty() {
            return Err(BatcherError::InvalidRequest("empty prompt".into()));
        }
        if let Some(bad) = tokens.iter().find(|t| **t as usize >= config.vocab_size) {
            return Err(BatcherError::InvalidRequest(format!(
                "token id {bad} out of vocabulary"
            )));
        }
        if !request.sampling.stop.is_empty() && self.tokenizer.is_none() {
            return Err(BatcherError::InvalidRequest(
                "stop strings need a tokenizer".into(),
            ));
        }
        let room = config.max_position_embeddings;
        if tokens.len() + request.sampling.max_tokens > room {
            return Err(BatcherError::InvalidRequest(format!(
                "prompt ({}) + max_tokens ({}) exceeds the context of {room}",
                tokens.len(),
                request.sampling.max_tokens
            )));
        }
        Ok((tokens, request.sampling, request.priority))
    }

    /// Cancels sequences whose stream was dropped, freeing their blocks now.
    fn drop_abandoned(&mut self) {
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.sender.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.stats.receivers_dropped += 1;
            self.finish(id, FinishReason::Cancelled);
        }
    }

    /// Runs one planned step and samples the sequences that reached their last token.
    fn step(&mut self, plan: StepPlan) {
        for id in &plan.preempted {
            if let Some(a) = self.active.get_mut(id) {
                a.preemptions += 1;
                let _entered = a.span.enter();
                tracing::debug!(seq = id, "preempted (will recompute)");
            }
        }
        let logits = match self.forward_caught(&plan) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "model step failed; failing its sequences");
                self.stats.errors += 1;
                for chunk in &plan.chunks {
                    if let Some(a) = self.active.remove(&chunk.seq_id) {
                        let _ = a.sender.try_send(Event::Error("model step failed".into()));
                    }
                    self.scheduler.remove_failed(chunk.seq_id);
                }
                return;
            }
        };
        self.stats.steps += 1;
        self.stats.last_step_tokens = plan.num_tokens();
        self.stats.last_step_seqs = plan.chunks.len();
        self.stats.tokens_computed += plan.num_tokens() as u64;
        self.stats.prefill_tokens_computed += plan
            .chunks
            .iter()
            .filter_map(|c| {
                let prompt_len = self.active.get(&c.seq_id)?.prompt_len;
                Some(prompt_len.min(c.start + c.len).saturating_sub(c.start) as u64)
            })
            .sum::<u64>();
        let sampled = plan.chunks.iter().filter(|c| c.samples);
        for (chunk, row) in sampled.zip(logits) {
            self.on_logits(chunk.seq_id, &row);
        }
    }

    /// [`Self::forward`], with a panic inside the model turned into an
    /// error: the step's sequences end with a clean error event and the
    /// engine carries on with the others (a panic would otherwise end the
    /// engine thread and every stream with it).
    fn forward_caught(&self, plan: &StepPlan) -> Result<Vec<Vec<f32>>> {
        let run = || {
            #[cfg(test)]
            tests::maybe_inject_panic(self, plan);
            self.forward(plan)
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(BatcherError::StepPanicked(what))
        })
    }

    fn forward(&self, plan: &StepPlan) -> Result<Vec<Vec<f32>>> {
        let mut inputs = Vec::with_capacity(plan.chunks.len());
        for chunk in &plan.chunks {
            let active = self
                .active
                .get(&chunk.seq_id)
                .ok_or(BatcherError::UnknownSequence(chunk.seq_id))?;
            let table = self
                .scheduler
                .block_table(chunk.seq_id)
                .ok_or(BatcherError::UnknownSequence(chunk.seq_id))?;
            let tokens = active
                .tokens
                .get(chunk.start..chunk.start + chunk.len)
                .ok_or_else(|| BatcherError::InvalidRequest("chunk beyond known tokens".into()))?;
            inputs.push(ChunkInput {
                tokens,
                start: chunk.start,
                block_table: table.blocks(),
                wants_logits: chunk.samples,
            });
        }
        let batch = PackedBatch::new(
            &inputs,
            self.cache.block_size(),
            self.runner.config().kv_width(),
            self.runner.device(),
        )?;
        let logits = self.runner.forward(&batch, &self.cache)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    fn on_logits(&mut self, id: SeqId, logits: &[f32]) {
        let eos = &self.runner.config().eos_token_ids;
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        let s = sample(&a.sampling, logits, &a.tokens, a.prompt_len);
        let now = Instant::now();
        a.first_token_at.get_or_insert(now);
        if !a.sampling.ignore_eos && eos.contains(&s.token) {
            self.finish(id, FinishReason::EndOfSequence);
            return;
        }
        if a.sampling.stop_token_ids.contains(&s.token) {
            self.finish(id, FinishReason::StopToken);
            return;
        }
        let index = a.tokens.len() - a.prompt_len;
        a.tokens.push(s.token);
        self.scheduler.append_token(id, s.token);
        self.stats.generated_tokens += 1;
        let piece = match &mut a.decoder {
            Some(decoder) => decoder.next_piece(&a.tokens).unwrap_or_default(),
            None => String::new(),
        };
        let (text, stopped) = match a.stops.push(&piece) {
            StopOutcome::Continue(text) => (text, false),
            StopOutcome::Stopped(text) => (text, true),
        };
        let event = TokenEvent {
            index,
            token: s.token,
            text,
            logprob: s.logprob,
            top_logprobs: s.top_logprobs,
        };
        // The channel holds max_tokens + 2 events, so it is never full; a
        // closed one is reaped before the next step.
        let _ = a.sender.try_send(Event::Token(event));
        if stopped {
            self.finish(id, FinishReason::StopString);
        } else if index + 1 >= a.sampling.max_tokens {
            self.finish(id, FinishReason::Length);
        }
    }

    /// Ends a sequence: frees its blocks and sends the final event.
    fn finish(&mut self, id: SeqId, reason: FinishReason) {
        self.scheduler.remove(id);
        let Some(mut a) = self.active.remove(&id) else {
            return;
        };
        let _entered = a.span.enter();
        let trailing_text = match reason {
            FinishReason::StopString | FinishReason::Cancelled => String::new(),
            _ => a.stops.flush(),
        };
        let finished = Finished {
            reason,
            trailing_text,
            prompt_tokens: a.prompt_len,
            completion_tokens: a.tokens.len() - a.prompt_len,
            preemptions: a.preemptions,
            time_to_first_token: a.first_token_at.map(|t| t - a.submitted_at),
            total_time: a.submitted_at.elapsed(),
        };
        tracing::debug!(seq = id, reason = ?reason, completion_tokens = finished.completion_tokens, "finished");
        self.stats.finished += 1;
        let _ = a.sender.try_send(Event::Finished(finished));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used)]
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::model::load_hf_dir;
    use crate::model::tiny::{scratch_dir, write_tiny_model};

    /// A sequence with this seed makes the step that runs it panic.
    const PANIC_SEED: u64 = 0xDEAD_5EED;

    pub(super) fn maybe_inject_panic(worker: &Worker, plan: &StepPlan) {
        let poisoned = plan.chunks.iter().any(|c| {
            worker
                .active
                .get(&c.seq_id)
                .is_some_and(|a| a.sampling.seed == PANIC_SEED)
        });
        if poisoned {
            panic!("injected step panic");
        }
    }

    #[test]
    fn a_panicking_step_fails_its_sequences_and_the_engine_goes_on() {
        let dir = write_tiny_model(&scratch_dir("step-panic"), 3, true).unwrap();
        let model = load_hf_dir(&dir, &candle_core::Device::Cpu).unwrap();
        let engine = Engine::start(model, EngineConfig::default()).unwrap();
        let poisoned = SamplingParams {
            seed: PANIC_SEED,
            ..SamplingParams::greedy(4)
        };
        let (tokens, finished, error) = engine
            .submit_blocking(GenerateRequest::from_tokens(vec![1, 2, 3], poisoned))
            .unwrap()
            .collect_blocking();
        assert!(tokens.is_empty() && finished.is_none());
        assert_eq!(error.as_deref(), Some("model step failed"));
        let (tokens, finished, error) = engine
            .submit_blocking(GenerateRequest::from_tokens(
                vec![1, 2, 3],
                SamplingParams::greedy(4),
            ))
            .unwrap()
            .collect_blocking();
        assert_eq!((tokens.len(), error), (4, None), "the engine still serves");
        assert!(finished.is_some());
        assert_eq!(engine.stats_blocking().unwrap().errors, 1);
    }
}
