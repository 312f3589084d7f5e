//! Turning one row of logits into the next token: penalties, then greedy or
//! temperature / top-k / top-p sampling, seeded per request so a request is
//! reproducible (also across preemption: the random draw for token `n`
//! depends only on the seed and `n`).

use crate::error::{BatcherError, Result};
use crate::rng::SplitMix64;

/// How a request wants its tokens chosen and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability
    /// reaches `top_p`. 1.0 turns it off.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens. 0 turns it off.
    pub top_k: usize,
    /// Seed of this request's random draws.
    pub seed: u64,
    /// HF-style repetition penalty on every token already in the sequence (1.0 = off).
    pub repetition_penalty: f32,
    /// OpenAI-style: subtract `frequency_penalty * count` for generated tokens.
    pub frequency_penalty: f32,
    /// OpenAI-style: subtract `presence_penalty` once for each generated token.
    pub presence_penalty: f32,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop when the output text contains one of these (not included in the output).
    pub stop: Vec<String>,
    /// Stop when one of these tokens is sampled (not included in the output).
    pub stop_token_ids: Vec<u32>,
    /// Keep going past the model's end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Report the chosen token's log-probability plus this many alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            max_tokens: 16,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    /// Checks the values are in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(BatcherError::InvalidRequest(m.into()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty must be > 0");
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be > 0");
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty");
        }
        Ok(())
    }
}

/// The token chosen for one sequence in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The token id.
    pub token: u32,
    /// Its log-probability under the (penalised) model distribution, when asked for.
    pub logprob: Option<f32>,
    /// The most likely alternatives `(token, logprob)`, when asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Chooses the next token from `logits` (one row, the vocabulary).
/// `prompt_len` splits `tokens` (prompt + generated) for the penalties; the
/// number of tokens generated so far selects the random draw.
pub fn sample(
    params: &SamplingParams,
    logits: &[f32],
    tokens: &[u32],
    prompt_len: usize,
) -> Sampled {
    let mut logits = logits.to_vec();
    apply_penalties(params, &mut logits, tokens, prompt_len);
    let (logprob, top_logprobs) = match params.logprobs {
        Some(n) => {
            let lp = log_softmax(&logits);
            let mut order: Vec<u32> = (0..lp.len() as u32).collect();
            let mut ranked = 0;
            rank_prefix(&lp, &mut order, &mut ranked, n);
            let top = order[..n.min(order.len())]
                .iter()
                .map(|&t| (t, lp[t as usize]))
                .collect();
            (Some(lp), top)
        }
        None => (None, Vec::new()),
    };
    let token = if params.temperature == 0.0 {
        argmax(&logits)
    } else {
        let draw_index = tokens.len().saturating_sub(prompt_len) as u64;
        let mut rng = SplitMix64::new(params.seed ^ draw_index.wrapping_mul(0xA24B_AED4_963E_E407));
        sample_from(params, &logits, rng.next_f32())
    };
    Sampled {
        token,
        logprob: logprob.and_then(|lp| lp.get(token as usize).copied()),
        top_logprobs,
    }
}

/// Index of the largest logit (the lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn apply_penalties(params: &SamplingParams, logits: &mut [f32], tokens: &[u32], prompt_len: usize) {
    if params.repetition_penalty != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &t in tokens {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        for (logit, seen) in logits.iter_mut().zip(seen) {
            if seen {
                *logit = if *logit > 0.0 {
                    *logit / params.repetition_penalty
                } else {
                    *logit * params.repetition_penalty
                };
            }
        }
    }
    if params.frequency_penalty != 0.0 || params.presence_penalty != 0.0 {
        let mut counts = std::collections::HashMap::<u32, f32>::new();
        for &t in tokens.get(prompt_len..).unwrap_or(&[]) {
            *counts.entry(t).or_default() += 1.0;
        }
        for (t, count) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= params.frequency_penalty * count + params.presence_penalty;
            }
        }
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let log_sum = sum.ln() + max;
    logits.iter().map(|l| l - log_sum).collect()
}

/// Temperature, top-k and top-p, then one draw with `uniform` in `[0, 1)`:
/// the tokens are walked most likely first, and the walk stops at the draw.
///
/// Nothing sorts the whole vocabulary: top-k is a partial selection, and the
/// most-likely-first order is built only as far as the walk goes
/// ([`rank_prefix`]), which for a peaked distribution is a few dozen tokens
/// of a 49,152-token vocabulary (`benches/sampling.rs` times it beside the
/// full sort).
fn sample_from(params: &SamplingParams, logits: &[f32], uniform: f32) -> u32 {
    let mut pool: Vec<u32> = (0..logits.len() as u32).collect();
    if params.top_k > 0 && params.top_k < pool.len() {
        pool.select_nth_unstable_by(params.top_k - 1, |a, b| by_rank(logits, a, b));
        pool.truncate(params.top_k);
    }
    let max = pool
        .iter()
        .map(|&t| logits[t as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    let weight = |t: u32| ((logits[t as usize] - max) / params.temperature).exp();
    let total: f32 = pool.iter().map(|&t| weight(t)).sum();
    let mut ranked = 0;
    // Nucleus: the most likely tokens until their weight reaches top_p.
    let (kept, kept_weight) = if params.top_p < 1.0 {
        let goal = params.top_p * total;
        let mut cumulative = 0.0;
        let mut kept = pool.len();
        for i in 0..pool.len() {
            rank_prefix(logits, &mut pool, &mut ranked, i + 1);
            cumulative += weight(pool[i]);
            if cumulative >= goal {
                kept = i + 1;
                break;
            }
        }
        (kept, cumulative)
    } else {
        (pool.len(), total)
    };
    let target = uniform * kept_weight;
    let mut cumulative = 0.0;
    for i in 0..kept {
        rank_prefix(logits, &mut pool, &mut ranked, i + 1);
        cumulative += weight(pool[i]);
        if target < cumulative {
            return pool[i];
        }
    }
    rank_prefix(logits, &mut pool, &mut ranked, kept);
    pool[..kept].last().copied().unwrap_or(0)
}

/// The sampler as it was: the whole vocabulary sorted, then the same walk.
/// Kept as the reference the tests and `benches/sampling.rs` hold
/// [`sample_from`] to; nothing on the request path calls it.
#[doc(hidden)]
pub fn sample_from_sorted(params: &SamplingParams, logits: &[f32], uniform: f32) -> u32 {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let max = logits[order[0] as usize];
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&t| ((logits[t as usize] - max) / params.temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if params.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= params.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut cumulative = 0.0;
    for (t, p) in order.iter().zip(&probs) {
        cumulative += p;
        if uniform < cumulative {
            return *t;
        }
    }
    order.last().copied().unwrap_or(0)
}

/// Most likely first; ties by the lower token id (what a stable sort of the
/// vocabulary gives).
fn by_rank(values: &[f32], a: &u32, b: &u32) -> std::cmp::Ordering {
    values[*b as usize]
        .total_cmp(&values[*a as usize])
        .then(a.cmp(b))
}

/// Extends the ranked prefix of `pool` (`pool[..*ranked]`, most likely
/// first) to at least `n` tokens: the next best are selected from the
/// unranked rest in O(rest) and only they are sorted. The prefix grows
/// geometrically, so walking far costs O(V log V) at worst, like a sort.
fn rank_prefix(values: &[f32], pool: &mut [u32], ranked: &mut usize, n: usize) {
    if n <= *ranked {
        return;
    }
    let grow_to = n.max(*ranked * 2).max(64).min(pool.len());
    let rest = &mut pool[*ranked..];
    let take = grow_to - *ranked;
    if take < rest.len() {
        rest.select_nth_unstable_by(take - 1, |a, b| by_rank(values, a, b));
    }
    rest[..take].sort_unstable_by(|a, b| by_rank(values, a, b));
    *ranked = grow_to;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_lowest_index_on_ties() {
        let p = SamplingParams::greedy(1);
        assert_eq!(sample(&p, &[0.1, 2.0, 2.0, -1.0], &[], 0).token, 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_seed_sensitive() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams {
            temperature: 1.0,
            seed: 3,
            ..SamplingParams::default()
        };
        let draw = |p: &SamplingParams, n: usize| {
            let tokens = vec![0u32; n];
            sample(p, &logits, &tokens, 0).token
        };
        let a: Vec<u32> = (0..20).map(|n| draw(&p, n)).collect();
        let b: Vec<u32> = (0..20).map(|n| draw(&p, n)).collect();
        assert_eq!(a, b);
        let q = SamplingParams {
            seed: 4,
            ..p.clone()
        };
        let c: Vec<u32> = (0..20).map(|n| draw(&q, n)).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_nucleus() {
        let logits = [1.0, 5.0, 4.9, -3.0];
        let p = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            seed: 9,
            ..SamplingParams::default()
        };
        assert_eq!(sample(&p, &logits, &[], 0).token, 1);
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..SamplingParams::default()
        };
        for seed in 0..20 {
            let p = SamplingParams { seed, ..p.clone() };
            assert_eq!(sample(&p, &logits, &[], 0).token, 1);
        }
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let logits = [2.0, 1.9, 0.0];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy(1)
        };
        assert_eq!(sample(&p, &logits, &[0], 1).token, 1);
        let p = SamplingParams {
            presence_penalty: 0.5,
            ..SamplingParams::greedy(1)
        };
        assert_eq!(sample(&p, &logits, &[9, 0], 1).token, 1);
        // Frequency/presence only count generated tokens, not the prompt.
        assert_eq!(sample(&p, &logits, &[0], 1).token, 0);
        let p = SamplingParams {
            frequency_penalty: 0.05,
            ..SamplingParams::greedy(1)
        };
        assert_eq!(sample(&p, &logits, &[0, 0, 0], 0).token, 1);
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let p = SamplingParams {
            logprobs: Some(2),
            ..SamplingParams::greedy(1)
        };
        let s = sample(&p, &[0.0, 1.0, 2.0], &[], 0);
        assert_eq!(s.token, 2);
        assert_eq!(
            s.top_logprobs.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let total: f32 = [0.0f32, 1.0, 2.0]
            .iter()
            .map(|l| (l - 2.0 + s.logprob.unwrap()).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn partial_ranking_draws_what_the_full_sort_drew() {
        let mut rng = SplitMix64::new(7);
        let mut draws = 0;
        let mut differ = 0;
        for round in 0..40 {
            // Peaked and flat rows (ties: `top_logprobs_are_the_best_in_order_with_ties_by_id`).
            let scale = if round % 2 == 0 { 32.0 } else { 2.0 };
            let logits: Vec<f32> = (0..2_000).map(|_| rng.next_f32() * scale).collect();
            for (temperature, top_k, top_p) in [
                (1.0, 0, 1.0),
                (0.7, 0, 0.9),
                (1.3, 50, 1.0),
                (1.0, 5, 0.5),
                (0.5, 0, 0.3),
            ] {
                let params = SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    ..SamplingParams::default()
                };
                for _ in 0..25 {
                    let u = rng.next_f32();
                    draws += 1;
                    differ += usize::from(
                        sample_from(&params, &logits, u) != sample_from_sorted(&params, &logits, u),
                    );
                }
            }
        }
        // The total is summed in another order, so a draw landing within a
        // rounding error of a boundary may go the other way (3 of these 5,000
        // do); anything more is a bug.
        assert!(differ * 1000 <= draws, "{differ} of {draws} draws differ");
    }

    #[test]
    fn top_logprobs_are_the_best_in_order_with_ties_by_id() {
        let values = [0.5, 2.0, 2.0, -1.0, 3.0, 2.0];
        let mut pool: Vec<u32> = (0..values.len() as u32).collect();
        let mut ranked = 0;
        rank_prefix(&values, &mut pool, &mut ranked, 3);
        assert_eq!(&pool[..3], &[4, 1, 2]);
    }
}
