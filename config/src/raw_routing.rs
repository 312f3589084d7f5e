//! The `models:` entries and the `routing:` section as written.

use serde::Deserialize;

/// `models[i]:` — a model name clients may ask for, and where it goes: one
/// upstream (`upstream`, `upstream_model`) or a failover `chain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The name in the client's `"model"` field. `"*"` matches every name not
    /// listed elsewhere and forwards it unchanged. Required, unique.
    pub name: String,
    /// Shorthand for a one-target chain: the upstream that serves it.
    #[serde(default)]
    pub upstream: Option<String>,
    /// With `upstream`: model name sent to it. Default: the client's name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Failover chain: steps tried in order until one answers; each step
    /// holds one or more weighted targets. Give this or `upstream`.
    #[serde(default)]
    pub chain: Option<Vec<RawStep>>,
}

/// `models[i].chain[j]:` — one step of a failover chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// The targets of this step. Required, at least one.
    pub targets: Vec<RawTarget>,
    /// How a target is picked within the step: `weighted` (random by weight,
    /// the default), `least_in_flight`, or `p2c_latency` (power of two
    /// choices on a latency moving average).
    #[serde(default)]
    pub balance: Option<String>,
}

/// `models[i].chain[j].targets[k]:` — one upstream and model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Name of the entry under `upstreams:`. Required.
    pub upstream: String,
    /// Model name sent to it. Default: the client's name.
    #[serde(default)]
    pub model: Option<String>,
    /// Share of traffic within the step for `weighted`. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// `routing:` — failover, retries and circuit breakers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Most upstream attempts for one request, across the whole chain. Default 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Time budget in milliseconds for all attempts until one answers (its
    /// response headers arrive). Default 120000.
    #[serde(default)]
    pub attempt_budget_ms: Option<u64>,
    /// First backoff before retrying the same target, in ms; doubles each
    /// time, with jitter. Default 25.
    #[serde(default)]
    pub backoff_base_ms: Option<u64>,
    /// Largest backoff, in ms. Default 1000.
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    /// Per-target circuit breaker. Default: see [`RawBreaker`].
    #[serde(default)]
    pub breaker: RawBreaker,
}

/// `routing.breaker:` — when a target is taken out of rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Failure ratio over the window that opens the breaker. Default 0.5.
    #[serde(default)]
    pub failure_ratio: Option<f64>,
    /// Fewest attempts in the window before the ratio counts. Default 5.
    #[serde(default)]
    pub min_requests: Option<u32>,
    /// Sliding window in seconds. Default 30.
    #[serde(default)]
    pub window_s: Option<u64>,
    /// Seconds a breaker stays open before one probe is let through. Default 15.
    #[serde(default)]
    pub open_s: Option<u64>,
}

fn default_weight() -> u32 {
    1
}
