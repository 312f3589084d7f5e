//! Stream control: the `/v1/streams` API, node slots, and how a stream ends.
//!
//! [`StreamControl`] holds the node's [`StreamRegistry`] (every forwarded
//! request is a stream with an id), its [`FairQueue`] when
//! `streams.max_concurrent` caps the node, and the Redis [`StreamBus`] when
//! Redis is configured. The relay in [`crate::forward`] obeys each stream's
//! control channel; this module serves the API that drives it.

use crate::error::GatewayError;
use crate::gateway::{Gateway, RequestCtx};
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use sluice_config::StreamSettings;
use sluice_filters::{
    Command, EndCause, FairQueue, Priority, QueueError, Slot, StreamBus, StreamHandle,
    StreamRegistry, Viewer, Within,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for a preempted stream to let go of its slots.
const PREEMPT_WAIT: Duration = Duration::from_secs(2);
/// Largest body accepted by a control call (`{"reason": ...}`).
const MAX_CONTROL_BODY: usize = 16 * 1024;

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
}

impl StreamControl {
    /// Builds the registry and queue; starts the bus on `runtime` when
    /// `redis_url` is set.
    pub fn new(
        settings: &StreamSettings,
        redis_url: Option<&str>,
        runtime: &tokio::runtime::Handle,
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
        }
    }
}

/// The end of a stream stopped by its controls, in OpenAI's chunk format: a
/// last chunk with a `finish_reason`, an event saying why it stopped (a chunk
/// with no choices and a `sluice` object, which OpenAI SDKs pass through
/// untouched), then `[DONE]`.
pub(crate) fn closing_events(
    stream_id: &str,
    model: &str,
    cause: EndCause,
    reason: Option<&str>,
) -> Bytes {
    let created = jiff::Timestamp::now().as_second();
    let id = format!("chatcmpl-{stream_id}");
    let last = serde_json::json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}],
    });
    let event = if cause == EndCause::Preempt {
        "stream.preempted"
    } else {
        "stream.cancelled"
    };
    let notice = serde_json::json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "sluice": {"event": event, "stream_id": stream_id, "cause": cause.label(), "reason": reason},
    });
    Bytes::from(format!(
        "data: {last}\n\ndata: {notice}\n\ndata: [DONE]\n\n"
    ))
}

impl Gateway {
    /// A slot on this node for a request at `priority`: at once, or after
    /// waiting its turn in the fair queue. A full node first preempts its
    /// lowest-priority running stream when the caller outranks it.
    pub(crate) async fn node_slot(
        &self,
        tenant: Option<&str>,
        priority: Priority,
    ) -> Result<Option<Slot>, GatewayError> {
        let Some(queue) = &self.streams.queue else {
            return Ok(None);
        };
        if let Some(slot) = queue.try_acquire() {
            self.metrics.queue_wait.observe(0.0);
            return Ok(Some(slot));
        }
        // The node is full: a higher priority may take a lower one's place.
        if self.streams.settings.preempt {
            if let Some(victim) = self.streams.registry.preempt_lowest(
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
    pub(crate) async fn preempt_for(
        &self,
        refusal: &GatewayError,
        key: &sluice_filters::KeyEntry,
        priority: Priority,
    ) -> bool {
        let GatewayError::Quota(q) = refusal else {
            return false;
        };
        if q.limit != sluice_filters::LimitKind::Concurrency || !self.streams.settings.preempt {
            return false;
        }
        let within = if q.scope_kind == sluice_filters::ScopeKind::Key {
            Within::Key(&key.key_id)
        } else {
            Within::Tenant(&key.tenant)
        };
        let Some(victim) = self.streams.registry.preempt_lowest(
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

    /// `GET /v1/streams`, `GET /v1/streams/{id}`, `POST /v1/streams/{id}/{verb}`.
    pub(crate) async fn stream_api(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let viewer = if self.access.is_admin(session) {
            Viewer::Admin
        } else {
            Viewer::Tenant(
                self.access
                    .identify(session)
                    .await?
                    .map(|k| k.tenant.clone()),
            )
        };
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_string();
        let rest = path.strip_prefix("/v1/streams").unwrap_or_default();
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let body = match (&method, parts.as_slice()) {
            (&http::Method::GET, []) => {
                let mut streams = self.streams.registry.list(&viewer);
                if let Some(bus) = &self.streams.bus {
                    streams.extend(bus.list(&viewer).await);
                }
                let data: Vec<serde_json::Value> = streams.iter().map(|s| s.to_json()).collect();
                serde_json::json!({"object": "list", "data": data})
            }
            (&http::Method::GET, [id]) => {
                let found = match self.streams.registry.get(id, &viewer) {
                    Some(view) => Some(view),
                    None => match &self.streams.bus {
                        Some(bus) => bus.list(&viewer).await.into_iter().find(|s| s.id == *id),
                        None => None,
                    },
                };
                found
                    .ok_or_else(|| GatewayError::StreamNotFound { id: id.to_string() })?
                    .to_json()
            }
            (&http::Method::POST, [id, verb]) => {
                let Some(command) = Command::parse(verb) else {
                    return Err(GatewayError::UnknownRoute {
                        method: method.to_string(),
                        path,
                    });
                };
                let reason = control_reason(session).await?;
                self.stream_command(id, &viewer, command, reason)
                    .await?
                    .to_json()
            }
            _ => {
                return Err(GatewayError::UnknownRoute {
                    method: method.to_string(),
                    path,
                })
            }
        };
        self.respond(
            session,
            ctx,
            200,
            "application/json",
            body.to_string().into(),
        )
        .await;
        Ok(())
    }

    async fn stream_command(
        &self,
        id: &str,
        viewer: &Viewer,
        command: Command,
        reason: Option<String>,
    ) -> Result<sluice_filters::StreamView, GatewayError> {
        let local = self
            .streams
            .registry
            .command(id, viewer, command, reason.clone());
        let found = match (local, &self.streams.bus) {
            (Some(view), _) => Some(view),
            (None, Some(bus)) => bus.command(id, viewer, command, reason.as_deref()).await,
            (None, None) => None,
        };
        let view = found.ok_or_else(|| GatewayError::StreamNotFound { id: id.to_string() })?;
        tracing::info!(stream = id, command = command.as_str(), node = %view.node, "stream control");
        Ok(view)
    }

    /// Marks `stream` as ending for `cause` (a no-op when its controls
    /// ended it already) and counts it.
    pub(crate) fn end_stream(&self, stream: &StreamHandle, cause: EndCause) {
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
    pub(crate) fn observe_streams(&self) {
        let counts = self.streams.registry.counts();
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
        if let Some(queue) = &self.streams.queue {
            let (running, waiting) = queue.load();
            self.metrics.node_slots_used.set(running as i64);
            self.metrics.queue_waiting.set(waiting as i64);
        }
    }
}

/// The optional `{"reason": "..."}` of a control call.
async fn control_reason(session: &mut ServerSession) -> Result<Option<String>, GatewayError> {
    let body = crate::forward::read_body(session, MAX_CONTROL_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| GatewayError::BadQuery {
            message: format!("The body must be JSON such as {{\"reason\": \"...\"}}: {e}"),
        })?;
    Ok(value
        .get("reason")
        .and_then(|r| r.as_str())
        .map(|r| r.chars().take(200).collect()))
}

/// What a stream's wait should stop for, before its answer started.
pub(crate) enum Interrupted {
    /// The client left.
    ClientGone,
    /// The stream was told to end.
    Ended(EndCause, Option<String>),
}

/// Resolves when the client leaves or `stream` is told to end, whichever
/// comes first; used while a request waits for a slot or for the upstream's
/// response headers, so that neither wait outlives its reason to exist.
pub(crate) async fn interrupted(session: &mut ServerSession, stream: &StreamHandle) -> Interrupted {
    tokio::select! {
        ClientEvent::Gone = client_event(session) => Interrupted::ClientGone,
        (cause, reason) = stream.ended() => Interrupted::Ended(cause, reason),
    }
}

/// What the client did while sluice waited on the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientEvent {
    /// Its connection closed.
    Gone,
    /// It sent more bytes (a pipelining client is not a leaving one): stop watching.
    SentMore,
}

/// Watches the client's side of the connection once its request is read.
pub(crate) async fn client_event(session: &mut ServerSession) -> ClientEvent {
    match session.read_body_or_idle(true).await {
        Err(_) => ClientEvent::Gone,
        Ok(_) => ClientEvent::SentMore,
    }
}
