//! Stream control on this node: node slots, preemption, how a stream's end
//! is counted, and the `/v1/streams` API ([`api`]).
//!
//! [`StreamControl`] holds the node's [`StreamRegistry`] (every forwarded
//! request is a stream with an id), its [`FairQueue`] when
//! `streams.max_concurrent` caps the node, and the Redis [`StreamBus`] when
//! Redis is configured. The forward pipeline's relay obeys each stream's
//! control channel; [`api`] serves the calls that drive it.

pub mod api;

use crate::error::GatewayError;
use crate::ops::Metrics;
use sluice_config::StreamSettings;
use sluice_filters::{
    preemption_scope, AccessError, EndCause, FairQueue, Priority, QueueError, Slot, StreamBus,
    StreamHandle, StreamRegistry, Within,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for a preempted stream to let go of its slots.
const PREEMPT_WAIT: Duration = Duration::from_secs(2);

/// The node's live streams and slots.
pub struct StreamControl {
    /// Every live stream on this node.
    pub registry: Arc<StreamRegistry>,
    /// Node slots and the fair queue, when the node is capped.
    pub queue: Option<Arc<FairQueue>>,
    /// Control calls to and from other nodes, when Redis is configured.
    pub bus: Option<Arc<StreamBus>>,
    /// Preemption, pause limit.
    pub settings: StreamSettings,
    /// Stream, queue and cancellation metrics.
    metrics: Arc<Metrics>,
}

impl StreamControl {
    /// Builds the registry and queue; starts the bus on `runtime` (the
    /// control runtime) when `redis_url` is set.
    pub fn new(
        settings: &StreamSettings,
        redis_url: Option<&str>,
        runtime: &tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> Self {
        let node = format!("{:016x}", rand::random::<u64>());
        let registry = StreamRegistry::new(node);
        let queue = settings.max_concurrent.map(|max| {
            FairQueue::new(
                max,
                settings.queue_size,
                settings.queue_timeout,
                settings.tenant_weights.clone(),
            )
        });
        let bus = redis_url.and_then(|url| {
            StreamBus::new(url, registry.clone())
                .map_err(|e| tracing::error!(error = %e, "invalid Redis URL; stream control stays on this node"))
                .ok()
        });
        if let Some(bus) = &bus {
            runtime.spawn(bus.clone().listen());
        }
        StreamControl {
            registry,
            queue,
            bus,
            settings: settings.clone(),
            metrics,
        }
    }
}

impl StreamControl {
    /// A slot on this node for a request at `priority`: at once, or after
    /// waiting its turn in the fair queue. A full node first preempts its
    /// lowest-priority running stream when the caller outranks it.
    pub async fn node_slot(
        &self,
        tenant: Option<&str>,
        priority: Priority,
    ) -> Result<Option<Slot>, GatewayError> {
        let Some(queue) = &self.queue else {
            return Ok(None);
        };
        if let Some(slot) = queue.try_acquire() {
            self.metrics.queue_wait.observe(0.0);
            return Ok(Some(slot));
        }
        // The node is full: a higher priority may take a lower one's place.
        if self.settings.preempt {
            if let Some(victim) = self.registry.preempt_lowest(
                Within::Node,
                priority,
                "the node is at capacity and a higher-priority request arrived",
            ) {
                tracing::info!(
                    preempted = victim.id(),
                    "preempting for a higher-priority request"
                );
            }
        }
        let waited = Instant::now();
        let slot = queue.acquire(tenant.unwrap_or(""), priority).await;
        self.metrics
            .queue_wait
            .observe(waited.elapsed().as_secs_f64());
        match slot {
            Ok(slot) => Ok(Some(slot)),
            Err(e) => {
                let reason = match e {
                    QueueError::Full => "full",
                    QueueError::TimedOut(_) => "timeout",
                };
                self.metrics
                    .queue_rejections
                    .with_label_values(&[reason])
                    .inc();
                Err(GatewayError::Queue(e))
            }
        }
    }

    /// After a concurrency refusal: ends the lowest-priority stream in the
    /// refusing scope when `priority` outranks it, and waits until it has
    /// let go of its slot. True when the caller should try again.
    pub async fn preempt_for(
        &self,
        refusal: &AccessError,
        key: &sluice_filters::KeyEntry,
        priority: Priority,
    ) -> bool {
        let AccessError::Quota(q) = refusal else {
            return false;
        };
        let Some(within) = preemption_scope(q, key, self.settings.preempt) else {
            return false;
        };
        let Some(victim) = self.registry.preempt_lowest(
            within,
            priority,
            "the concurrency limit was reached and a higher-priority request arrived",
        ) else {
            return false;
        };
        tracing::info!(
            preempted = victim.id(),
            "preempting for a higher-priority request"
        );
        tokio::time::timeout(PREEMPT_WAIT, victim.gone())
            .await
            .is_ok()
    }

    /// Marks `stream` as ending for `cause` (a no-op when its controls
    /// ended it already) and counts it.
    pub fn end_stream(&self, stream: &StreamHandle, cause: EndCause) {
        stream.end(cause);
        self.metrics
            .stream_cancellations
            .with_label_values(&[cause.label()])
            .inc();
        if cause == EndCause::Client {
            self.metrics.client_disconnects.inc();
        }
    }

    /// Copies stream and queue gauges into the registry (at scrape time).
    pub fn observe(&self) {
        let counts = self.registry.counts();
        for (state, n) in [
            ("queued", counts.queued),
            ("running", counts.running),
            ("paused", counts.paused),
        ] {
            self.metrics
                .streams_live
                .with_label_values(&[state])
                .set(n as i64);
        }
        if let Some(queue) = &self.queue {
            let (running, waiting) = queue.load();
            self.metrics.node_slots_used.set(running as i64);
            self.metrics.queue_waiting.set(waiting as i64);
        }
    }
}
