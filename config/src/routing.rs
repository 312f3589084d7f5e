//! Validated model routes and routing policy.

use crate::raw_routing::{RawModel, RawRouting};
use crate::validated::UpstreamSettings;
use crate::{ConfigError, WILDCARD_MODEL};
use std::collections::HashMap;
use std::time::Duration;

/// How a target is picked within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Random, in proportion to weight.
    #[default]
    Weighted,
    /// The target with the fewest requests in flight.
    LeastInFlight,
    /// Of two random targets, the one with the lower latency average.
    PowerOfTwoLatency,
}

/// One upstream and model within a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// Index into [`crate::Config::upstreams`].
    pub upstream: usize,
    /// Model name sent upstream; `None` forwards the client's name.
    pub model: Option<String>,
    /// Share of traffic within the step.
    pub weight: u32,
}

/// One step of a failover chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStep {
    /// Its targets.
    pub targets: Vec<RouteTarget>,
    /// How one is picked.
    pub balance: Balance,
}

/// A client-visible model name and its failover chain.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    /// Client-visible name, or [`WILDCARD_MODEL`].
    pub name: String,
    /// Steps tried in order.
    pub steps: Vec<RouteStep>,
}

/// Circuit-breaker policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failure ratio that opens it.
    pub failure_ratio: f64,
    /// Fewest attempts in the window before the ratio counts.
    pub min_requests: u32,
    /// Sliding window.
    pub window: Duration,
    /// Time open before a probe.
    pub open_for: Duration,
}

/// Failover and retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingSettings {
    /// Most attempts per request.
    pub max_attempts: u32,
    /// Time budget for all attempts until one answers.
    pub attempt_budget: Duration,
    /// First backoff before retrying the same target.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Per-target breaker.
    pub breaker: BreakerSettings,
}

pub(crate) fn routing_settings(raw: RawRouting) -> Result<RoutingSettings, ConfigError> {
    let max_attempts = raw.max_attempts.unwrap_or(3);
    if max_attempts == 0 {
        return Err(ConfigError::validation(
            "routing.max_attempts",
            "must be at least 1",
        ));
    }
    let ratio = raw.breaker.failure_ratio.unwrap_or(0.5);
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(ConfigError::validation(
            "routing.breaker.failure_ratio",
            "must be in (0, 1]",
        ));
    }
    let window_s = raw.breaker.window_s.unwrap_or(30);
    if window_s == 0 {
        return Err(ConfigError::validation(
            "routing.breaker.window_s",
            "must be at least 1",
        ));
    }
    Ok(RoutingSettings {
        max_attempts,
        attempt_budget: Duration::from_millis(raw.attempt_budget_ms.unwrap_or(120_000)),
        backoff_base: Duration::from_millis(raw.backoff_base_ms.unwrap_or(25)),
        backoff_max: Duration::from_millis(raw.backoff_max_ms.unwrap_or(1_000)),
        breaker: BreakerSettings {
            failure_ratio: ratio,
            min_requests: raw.breaker.min_requests.unwrap_or(5).max(1),
            window: Duration::from_secs(window_s),
            open_for: Duration::from_secs(raw.breaker.open_s.unwrap_or(15)),
        },
    })
}

fn upstream_index(
    upstreams: &[UpstreamSettings],
    name: &str,
    at: &str,
) -> Result<usize, ConfigError> {
    upstreams
        .iter()
        .position(|u| u.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            ConfigError::validation(
                at,
                format!("unknown upstream {name:?}; defined upstreams: {known:?}"),
            )
        })
}

pub(crate) fn model_routes(
    raw: &[RawModel],
    upstreams: &[UpstreamSettings],
) -> Result<Vec<ModelRoute>, ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut models = Vec::with_capacity(raw.len());
    for (i, model) in raw.iter().enumerate() {
        let at = format!("models[{i}]");
        if model.name.is_empty() {
            return Err(ConfigError::validation(
                format!("{at}.name"),
                "must not be empty",
            ));
        }
        if let Some(first) = seen.insert(&model.name, i) {
            return Err(ConfigError::validation(
                format!("{at}.name"),
                format!(
                    "duplicate model name {:?} (first defined at models[{first}])",
                    model.name
                ),
            ));
        }
        let wildcard = model.name == WILDCARD_MODEL;
        let steps = match (&model.upstream, &model.chain) {
            (Some(upstream), None) => {
                if wildcard && model.upstream_model.is_some() {
                    return Err(ConfigError::validation(
                        format!("{at}.upstream_model"),
                        "the wildcard model forwards names unchanged; remove upstream_model",
                    ));
                }
                vec![RouteStep {
                    targets: vec![RouteTarget {
                        upstream: upstream_index(upstreams, upstream, &format!("{at}.upstream"))?,
                        model: model.upstream_model.clone(),
                        weight: 1,
                    }],
                    balance: Balance::Weighted,
                }]
            }
            (None, Some(chain)) if model.upstream_model.is_none() => {
                if chain.is_empty() {
                    return Err(ConfigError::validation(
                        format!("{at}.chain"),
                        "needs at least one step",
                    ));
                }
                let mut steps = Vec::with_capacity(chain.len());
                for (j, step) in chain.iter().enumerate() {
                    let sat = format!("{at}.chain[{j}]");
                    if step.targets.is_empty() {
                        return Err(ConfigError::validation(
                            format!("{sat}.targets"),
                            "needs at least one target",
                        ));
                    }
                    let balance = match step.balance.as_deref() {
                        None | Some("weighted") => Balance::Weighted,
                        Some("least_in_flight") => Balance::LeastInFlight,
                        Some("p2c_latency") => Balance::PowerOfTwoLatency,
                        Some(other) => {
                            return Err(ConfigError::validation(
                                format!("{sat}.balance"),
                                format!(
                                "expected weighted, least_in_flight or p2c_latency, got {other:?}"
                            ),
                            ))
                        }
                    };
                    let mut targets = Vec::with_capacity(step.targets.len());
                    for (k, t) in step.targets.iter().enumerate() {
                        let tat = format!("{sat}.targets[{k}]");
                        if t.weight == 0 {
                            return Err(ConfigError::validation(
                                format!("{tat}.weight"),
                                "must be at least 1",
                            ));
                        }
                        if wildcard && t.model.is_some() {
                            return Err(ConfigError::validation(
                                format!("{tat}.model"),
                                "the wildcard model forwards names unchanged; remove model",
                            ));
                        }
                        targets.push(RouteTarget {
                            upstream: upstream_index(
                                upstreams,
                                &t.upstream,
                                &format!("{tat}.upstream"),
                            )?,
                            model: t.model.clone(),
                            weight: t.weight,
                        });
                    }
                    steps.push(RouteStep { targets, balance });
                }
                steps
            }
            _ => {
                return Err(ConfigError::validation(
                    at,
                    "give either `upstream` (with optional `upstream_model`) or `chain`",
                ))
            }
        };
        models.push(ModelRoute {
            name: model.name.clone(),
            steps,
        });
    }
    Ok(models)
}
