//! The `streams:` section: node capacity, fair queuing, preemption, pauses.

use crate::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `streams:` — how many forwarded requests run at once on this node, how
/// the ones beyond that wait, and how long a stream may stay paused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStreams {
    /// Forwarded requests (streamed or not) running at once on this node;
    /// more wait in the fair queue. Default 0: no node-wide cap.
    #[serde(default)]
    pub max_concurrent: usize,
    /// Requests that may wait for a slot; beyond it they get 429 at once.
    /// Default 1024.
    #[serde(default)]
    pub queue_size: Option<usize>,
    /// Longest wait for a slot, in ms, before 429. Default 30000.
    #[serde(default)]
    pub queue_timeout_ms: Option<u64>,
    /// Whether a request of a higher priority class may preempt the
    /// lowest-priority running stream when the node, its tenant or its key
    /// is at its concurrency limit. Default true.
    #[serde(default)]
    pub preempt: Option<bool>,
    /// Longest pause in ms before a paused stream is cancelled. Default 300000.
    #[serde(default)]
    pub max_pause_ms: Option<u64>,
    /// Share of queue admissions per tenant (weighted round-robin); a tenant
    /// not listed weighs 1. Default: all 1.
    #[serde(default)]
    pub tenant_weights: BTreeMap<String, u32>,
}

/// Validated `streams:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Node-wide cap on running forwarded requests; `None` for none.
    pub max_concurrent: Option<usize>,
    /// Most requests waiting for a slot.
    pub queue_size: usize,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
    /// Whether higher priority preempts lower at a concurrency limit.
    pub preempt: bool,
    /// Longest pause before a stream is cancelled.
    pub max_pause: Duration,
    /// Queue weight per tenant (default 1).
    pub tenant_weights: BTreeMap<String, u32>,
}

pub(crate) fn stream_settings(raw: RawStreams) -> Result<StreamSettings, ConfigError> {
    let queue_timeout_ms = raw.queue_timeout_ms.unwrap_or(30_000);
    if queue_timeout_ms == 0 {
        return Err(ConfigError::validation(
            "streams.queue_timeout_ms",
            "must be at least 1",
        ));
    }
    let max_pause_ms = raw.max_pause_ms.unwrap_or(300_000);
    if max_pause_ms == 0 {
        return Err(ConfigError::validation(
            "streams.max_pause_ms",
            "must be at least 1",
        ));
    }
    if let Some((tenant, _)) = raw.tenant_weights.iter().find(|(_, w)| **w == 0) {
        return Err(ConfigError::validation(
            format!("streams.tenant_weights.{tenant}"),
            "must be at least 1",
        ));
    }
    Ok(StreamSettings {
        max_concurrent: Some(raw.max_concurrent).filter(|n| *n > 0),
        queue_size: raw.queue_size.unwrap_or(1024),
        queue_timeout: Duration::from_millis(queue_timeout_ms),
        preempt: raw.preempt.unwrap_or(true),
        max_pause: Duration::from_millis(max_pause_ms),
        tenant_weights: raw.tenant_weights,
    })
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_leave_the_node_uncapped() {
        let c = load_str("", &env).unwrap();
        assert_eq!(c.streams.max_concurrent, None);
        assert_eq!(c.streams.queue_size, 1024);
        assert!(c.streams.preempt);
        assert_eq!(c.streams.max_pause.as_secs(), 300);
    }

    #[test]
    fn reads_every_key() {
        let c = load_str(
            "streams: {max_concurrent: 4, queue_size: 10, queue_timeout_ms: 500, preempt: false, max_pause_ms: 2000, tenant_weights: {acme: 3}}",
            &env,
        )
        .unwrap();
        assert_eq!(c.streams.max_concurrent, Some(4));
        assert_eq!(c.streams.queue_size, 10);
        assert_eq!(c.streams.queue_timeout.as_millis(), 500);
        assert!(!c.streams.preempt);
        assert_eq!(c.streams.max_pause.as_millis(), 2000);
        assert_eq!(c.streams.tenant_weights["acme"], 3);
    }

    #[test]
    fn refuses_a_zero_weight_by_its_path() {
        let e = load_str("streams: {tenant_weights: {acme: 0}}", &env).unwrap_err();
        assert!(e.to_string().contains("streams.tenant_weights.acme"), "{e}");
        let e = load_str("streams: {max_pause_ms: 0}", &env).unwrap_err();
        assert!(e.to_string().contains("streams.max_pause_ms"), "{e}");
        let e = load_str("streams: {pause: 1}", &env).unwrap_err();
        assert!(e.to_string().contains("pause"), "{e}");
    }
}
