//! Prometheus metrics: one registry, every series named `sluice_*`, labels
//! kept low-cardinality (model names only from config, `*` for the wildcard).

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Seconds; LLM calls span milliseconds (embeddings) to minutes (long completions).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Buckets for sluice's own time per request: 10 µs to 1 s.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// Every metric sluice exports.
pub struct Metrics {
    registry: Registry,
    /// Requests finished, by route, model and status.
    pub requests: IntCounterVec,
    /// Whole-request latency, by route, model and status.
    pub request_duration: HistogramVec,
    /// Requests being served now, by route.
    pub in_flight: IntGaugeVec,
    /// Config reloads, by outcome (`ok`, `invalid`, `needs_restart`, `failed`).
    pub config_reloads: IntCounterVec,
    /// Time a forwarded request spent inside sluice, not waiting on the
    /// client or the upstream, by route.
    pub gateway_overhead: HistogramVec,
    /// Time from request to the first streamed byte sent to the client, by upstream.
    pub upstream_first_token: HistogramVec,
    /// Clients that left while their answer was still streaming in.
    pub client_disconnects: IntCounter,
    /// Upstream attempts, by upstream.
    pub upstream_attempts: IntCounterVec,
    /// Circuit breaker state by upstream: 0 closed, 1 half-open, 2 open.
    pub upstream_breaker_state: IntGaugeVec,
    /// Upstream failures, by upstream and kind.
    pub upstream_errors: IntCounterVec,
    /// Time from sending a request upstream to its response headers, by upstream.
    pub upstream_first_byte: HistogramVec,
    /// Tokens by model, provider and kind (prompt, completion).
    pub tokens: IntCounterVec,
    /// Cost in micro-dollars by model and provider, each request's cost
    /// rounded on its own (so it drifts from the exact sum; kept for the
    /// dashboards and alerts built on it).
    pub cost_micros: IntCounterVec,
    /// Exact cost in pico-dollars by model and provider (what the ledger's
    /// reports add up).
    pub cost_picos: IntCounterVec,
    /// Requests recorded without a known price, by model and provider.
    pub unpriced: IntCounterVec,
    /// Seconds spent in ledger database writes (with `ledger_writes`: mean write time).
    pub ledger_write_seconds: Counter,
    /// Ledger database writes (batches).
    pub ledger_writes: IntCounter,
    /// Budget events: soft_limit_crossed, hard_limit_refused, stream_cut.
    pub budget_events: IntCounterVec,
    /// Ledger gauges: queue depth, spool records, spool bytes, database up.
    pub ledger_gauges: IntGaugeVec,
    /// Ledger counters: records written, spooled, replayed, lost; writes failed.
    pub ledger_events: IntCounterVec,
    /// 1 while the shared quota store (Redis) answers, 0 when not; absent without one.
    pub quota_store_up: IntGauge,
    /// Calls to the shared quota store that failed.
    pub quota_store_errors: IntCounter,
    /// Live streams by state: queued, running, paused (set at scrape).
    pub streams_live: IntGaugeVec,
    /// Streams ended early, by cause: client, api, preempt, budget, pause_timeout.
    pub stream_cancellations: IntCounterVec,
    /// How long streams stayed paused.
    pub stream_pause: Histogram,
    /// Time spent waiting for a node slot (zero when one was free).
    pub queue_wait: Histogram,
    /// Requests refused a node slot, by reason: full, timeout.
    pub queue_rejections: IntCounterVec,
    /// Requests waiting for a node slot (set at scrape).
    pub queue_waiting: IntGauge,
    /// Node slots in use (set at scrape).
    pub node_slots_used: IntGauge,
    /// The built-in engines' load (set at scrape).
    pub engine: super::engine_metrics::EngineMetrics,
    /// Client connections and what the edge refused.
    pub edge: super::edge_metrics::EdgeMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        // CPU seconds, resident memory, open file descriptors, threads and
        // start time of this process, as `process_*` (read from /proc).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let requests = IntCounterVec::new(
            Opts::new("sluice_requests_total", "Requests finished."),
            &["route", "model", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_request_duration_seconds",
                "Time from request headers to the last response byte.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "model", "status"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new("sluice_requests_in_flight", "Requests being served now."),
            &["route"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new("sluice_config_reloads_total", "Config reloads, by outcome."),
            &["outcome"],
        )?;
        let gateway_overhead = HistogramVec::new(
            HistogramOpts::new(
                "sluice_gateway_overhead_seconds",
                "Time a forwarded request spent inside sluice: its whole time less the waits \
                 on the client (body, writes) and on the upstream (attempts, answer pieces).",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "sluice_upstream_errors_total",
                "Upstream calls that failed, by failure kind.",
            ),
            &["upstream", "kind"],
        )?;
        let client_disconnects = IntCounter::new(
            "sluice_client_disconnects_total",
            "Clients that left mid-answer; their upstream call was dropped at once.",
        )?;
        let upstream_first_token = HistogramVec::new(
            HistogramOpts::new(
                "sluice_upstream_first_token_seconds",
                "Time from request to the first streamed byte sent to the client.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let upstream_attempts = IntCounterVec::new(
            Opts::new(
                "sluice_upstream_attempts_total",
                "Upstream attempts, failovers and retries included.",
            ),
            &["upstream"],
        )?;
        let upstream_breaker_state = IntGaugeVec::new(
            Opts::new(
                "sluice_upstream_breaker_state",
                "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.",
            ),
            &["upstream"],
        )?;
        let upstream_first_byte = HistogramVec::new(
            HistogramOpts::new(
                "sluice_upstream_first_byte_seconds",
                "Time from sending a request upstream to its response headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sluice_build_info",
                "Always 1; labels say which build runs.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(gateway_overhead.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_first_byte.clone()))?;
        registry.register(Box::new(upstream_attempts.clone()))?;
        registry.register(Box::new(upstream_first_token.clone()))?;
        registry.register(Box::new(client_disconnects.clone()))?;
        registry.register(Box::new(upstream_breaker_state.clone()))?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "sluice_tokens_total",
                "Tokens, by model, provider and kind (prompt, completion).",
            ),
            &["model", "provider", "kind"],
        )?;
        let cost_micros = IntCounterVec::new(
            Opts::new(
                "sluice_cost_usd_micros_total",
                "Cost in micro-dollars (1e-6 USD), each request rounded, by model and provider.",
            ),
            &["model", "provider"],
        )?;
        let cost_picos = IntCounterVec::new(
            Opts::new(
                "sluice_cost_usd_picos_total",
                "Exact cost in pico-dollars (1e-12 USD), by model and provider.",
            ),
            &["model", "provider"],
        )?;
        let unpriced = IntCounterVec::new(
            Opts::new(
                "sluice_unpriced_requests_total",
                "Requests recorded with no known price.",
            ),
            &["model", "provider"],
        )?;
        let ledger_write_seconds = Counter::new(
            "sluice_ledger_write_seconds_total",
            "Seconds spent writing usage batches to the database.",
        )?;
        let ledger_writes = IntCounter::new(
            "sluice_ledger_writes_total",
            "Usage batches written to the database.",
        )?;
        let budget_events = IntCounterVec::new(
            Opts::new(
                "sluice_budget_events_total",
                "Budget events: soft_limit_crossed, hard_limit_refused, stream_cut.",
            ),
            &["event"],
        )?;
        let ledger_gauges = IntGaugeVec::new(
            Opts::new(
                "sluice_ledger",
                "Ledger state: queue_depth, spool_records, spool_bytes, database_up, spool_failing.",
            ),
            &["gauge"],
        )?;
        let ledger_events = IntCounterVec::new(
            Opts::new(
                "sluice_ledger_records_total",
                "Usage records by fate: written, spooled, replayed, lost; and failed writes.",
            ),
            &["event"],
        )?;
        let quota_store_up = IntGauge::new(
            "sluice_quota_store_up",
            "1 while the shared quota store (Redis) answers, else 0.",
        )?;
        let quota_store_errors = IntCounter::new(
            "sluice_quota_store_errors_total",
            "Calls to the shared quota store that failed (then handled by quotas.on_redis_error).",
        )?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(quota_store_up.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(cost_micros.clone()))?;
        registry.register(Box::new(cost_picos.clone()))?;
        registry.register(Box::new(unpriced.clone()))?;
        registry.register(Box::new(ledger_gauges.clone()))?;
        registry.register(Box::new(budget_events.clone()))?;
        registry.register(Box::new(ledger_write_seconds.clone()))?;
        registry.register(Box::new(ledger_writes.clone()))?;
        registry.register(Box::new(ledger_events.clone()))?;
        registry.register(Box::new(quota_store_errors.clone()))?;
        let streams = StreamMetrics::new(&registry)?;
        let engine = super::engine_metrics::EngineMetrics::new(&registry)?;
        let edge = super::edge_metrics::EdgeMetrics::new(&registry)?;
        Ok(Metrics {
            engine,
            edge,
            streams_live: streams.live,
            stream_cancellations: streams.cancellations,
            stream_pause: streams.pause,
            queue_wait: streams.queue_wait,
            queue_rejections: streams.queue_rejections,
            queue_waiting: streams.queue_waiting,
            node_slots_used: streams.slots_used,
            registry,
            requests,
            request_duration,
            gateway_overhead,
            config_reloads,
            in_flight,
            upstream_errors,
            upstream_first_byte,
            upstream_attempts,
            upstream_first_token,
            client_disconnects,
            upstream_breaker_state,
            quota_store_up,
            quota_store_errors,
            tokens,
            cost_micros,
            cost_picos,
            unpriced,
            ledger_gauges,
            ledger_events,
            budget_events,
            ledger_write_seconds,
            ledger_writes,
        })
    }

    /// Counts a budget event: `soft_limit_crossed`, `hard_limit_refused`, `stream_cut`.
    pub fn budget_event(&self, event: &str) {
        self.budget_events.with_label_values(&[event]).inc();
    }

    /// Counts an attempt on `upstream`.
    pub fn upstream_attempt(&self, upstream: &str) {
        self.upstream_attempts.with_label_values(&[upstream]).inc();
    }

    /// Counts a failed attempt on `upstream`, by kind.
    pub fn upstream_error(&self, upstream: &str, kind: &str) {
        self.upstream_errors
            .with_label_values(&[upstream, kind])
            .inc();
    }

    /// Observes the time from sending to an upstream's response headers.
    pub fn upstream_first_byte(&self, upstream: &str, elapsed: std::time::Duration) {
        self.upstream_first_byte
            .with_label_values(&[upstream])
            .observe(elapsed.as_secs_f64());
    }

    /// Observes the time from the request to its first streamed byte.
    pub fn upstream_first_token(&self, upstream: &str, elapsed: std::time::Duration) {
        self.upstream_first_token
            .with_label_values(&[upstream])
            .observe(elapsed.as_secs_f64());
    }

    /// Observes how long a stream stayed paused, when it was.
    pub fn stream_paused(&self, paused_at: Option<std::time::Instant>) {
        if let Some(since) = paused_at {
            self.stream_pause.observe(since.elapsed().as_secs_f64());
        }
    }

    /// Copies the ledger writer's counters into the registry.
    pub fn observe_ledger(&self, stats: &sluice_ledger::LedgerStats) {
        let gauges = [
            ("queue_depth", stats.queue_depth),
            ("spool_records", stats.spool_pending_records),
            ("spool_bytes", stats.spool_bytes),
            ("database_up", u64::from(stats.database_up)),
            ("spool_failing", u64::from(stats.spool_failing)),
        ];
        for (name, value) in gauges {
            self.ledger_gauges
                .with_label_values(&[name])
                .set(value as i64);
        }
        let events = [
            ("written", stats.records_written),
            ("spooled", stats.records_spooled),
            ("replayed", stats.records_replayed),
            ("lost", stats.records_lost),
            ("write_failed", stats.writes_failed),
        ];
        let latency = &stats.write_latency;
        self.ledger_writes
            .inc_by(latency.count.saturating_sub(self.ledger_writes.get()));
        let seconds = latency.sum_seconds - self.ledger_write_seconds.get();
        if seconds > 0.0 {
            self.ledger_write_seconds.inc_by(seconds);
        }
        for (name, total) in events {
            let counter = self.ledger_events.with_label_values(&[name]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// The stream-control series, registered together.
struct StreamMetrics {
    live: IntGaugeVec,
    cancellations: IntCounterVec,
    pause: Histogram,
    queue_wait: Histogram,
    queue_rejections: IntCounterVec,
    queue_waiting: IntGauge,
    slots_used: IntGauge,
}

impl StreamMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = StreamMetrics {
            live: IntGaugeVec::new(
                Opts::new("sluice_streams_live", "Live streams by state: queued, running, paused."),
                &["state"],
            )?,
            cancellations: IntCounterVec::new(
                Opts::new(
                    "sluice_stream_cancellations_total",
                    "Streams ended before their upstream finished, by cause: client, api, preempt, budget, pause_timeout.",
                ),
                &["cause"],
            )?,
            pause: Histogram::with_opts(
                HistogramOpts::new("sluice_stream_pause_seconds", "How long streams stayed paused.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            queue_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_queue_wait_seconds",
                    "Time spent waiting for a node slot (streams.max_concurrent).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            queue_rejections: IntCounterVec::new(
                Opts::new(
                    "sluice_queue_rejections_total",
                    "Requests refused a node slot, by reason: full, timeout.",
                ),
                &["reason"],
            )?,
            queue_waiting: IntGauge::new(
                "sluice_queue_waiting",
                "Requests waiting for a node slot.",
            )?,
            slots_used: IntGauge::new("sluice_node_slots_used", "Node slots in use.")?,
        };
        registry.register(Box::new(m.live.clone()))?;
        registry.register(Box::new(m.cancellations.clone()))?;
        registry.register(Box::new(m.pause.clone()))?;
        registry.register(Box::new(m.queue_wait.clone()))?;
        registry.register(Box::new(m.queue_rejections.clone()))?;
        registry.register(Box::new(m.queue_waiting.clone()))?;
        registry.register(Box::new(m.slots_used.clone()))?;
        Ok(m)
    }
}
