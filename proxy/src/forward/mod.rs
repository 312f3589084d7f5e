//! The forward pipeline: one forwarded request is one [`ForwardCtx`] that
//! moves through named phases, each a function over it:
//!
//! ```text
//! intake -> admit -> plan -> attempt (failover) -> relay -> settle
//! ```
//!
//! - [`intake`]: stream id, key, body (read once, parsed once), route, the
//!   one token estimate;
//! - [`admit`]: model allow-list and quotas, preempting a lower priority at
//!   a concurrency limit;
//! - [`plan`]: the failover plan, the budget hold, a soft-limit downgrade;
//! - [`attempt`]: a node slot, then each candidate in turn until one answers
//!   (an [`AnswerSource`]: HTTP through a provider adapter, or in-process);
//! - [`relay`]: the answer to the client piece by piece, under the stream's
//!   controls and budget;
//! - [`settle`]: quotas, budget and the ledger record.
//!
//! Phases take [`Services`], never the whole gateway. Where to add things:
//! a provider is a file in `providers/`; a client dialect a variant of
//! [`Dialect`] with its conversions in `sluice_providers::dialects`; an answer source a variant of [`AnswerSource`] (or a
//! [`LocalBackend`]); a filter a module in `filters/` called from a phase.

pub mod admit;
pub mod answer;
pub mod attempt;
pub mod attempt_error;
pub mod count_tokens;
pub mod exchange;
pub mod intake;
pub mod plan;
pub mod relay;
pub mod settle;
pub mod upstream_pool;

pub use crate::downstream::Dialect;
pub use crate::ops::engine_metrics::BackendLoad;
pub use answer::{
    AnswerSource, LocalBackend, LocalControls, LocalFailure, LocalReply, LocalRequest,
};

use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use crate::ops::{request_log, Accounting, Alerts, Metrics};
use crate::streams::StreamControl;
use pingora::protocols::http::ServerSession;
use sluice_filters::{
    AccessPolicy, Caller, Slot, SpendHold, StreamHandle, StreamOwner, StreamRegistry,
};
use sluice_providers::dialects::ClientDialect;
use sluice_providers::{Candidate, Endpoint, Route, Router, RoutingFields};
use std::sync::Arc;
use upstream_pool::UpstreamPool;

/// In-process backends by the name of the upstream they serve.
pub type NamedBackends = Vec<(String, Arc<dyn LocalBackend>)>;

/// What the forward phases need, and nothing else of the gateway.
pub struct Services {
    /// Model names to failover plans, and each target's health.
    pub router: Router,
    /// Connections to HTTP upstreams, one peer per router target.
    pub upstreams: UpstreamPool,
    /// In-process backends, by router target index (`None` for HTTP targets).
    pub local: Vec<Option<Arc<dyn LocalBackend>>>,
    /// Keys, quotas, budgets.
    pub access: AccessPolicy,
    /// Prices and the ledger.
    pub accounting: Arc<Accounting>,
    /// Live streams, node slots, cross-node control (kept across a
    /// config reload).
    pub streams: Arc<StreamControl>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Soft-limit budget alerts.
    pub alerts: Alerts,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// Everything one forwarded request carries, owned in one place.
pub struct ForwardCtx<'r> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The shape the client speaks.
    pub dialect: Dialect,
    /// The client's body, read once.
    pub body: bytes::Bytes,
    /// Its routing fields, parsed once.
    pub fields: RoutingFields,
    /// Prompt tokens estimated once from the body's size (reservations and
    /// running costs; the record counts exactly).
    pub prompt_estimate: u64,
    /// Who is calling, their priority and quota admission.
    pub caller: Caller,
    /// The route after any budget downgrade.
    pub route: Route<'r>,
    /// Candidates in the order they are tried.
    pub candidates: Vec<Candidate<'r>>,
    /// The budget hold, when a budget applies.
    pub spend: Option<SpendHold>,
    /// The cheaper model routed to after a soft limit, if any.
    pub downgraded_to: Option<String>,
    /// The stream's registry entry and controls.
    pub stream: StreamHandle,
    /// The node slot, when the node is capped (released when dropped).
    pub slot: Option<Slot>,
    /// The client's own body, when its dialect was converted to chat.
    pub native: Option<intake::NativeBody>,
    /// A Responses API request's turn.
    pub turn: Option<intake::ResponsesTurn>,
}

impl ForwardCtx<'_> {
    /// The caller's tenant, when authenticated.
    pub fn tenant(&self) -> Option<&str> {
        self.caller.key.as_deref().map(|k| k.tenant.as_str())
    }

    /// The model name the route was resolved with: the one asked for, or
    /// the cheaper one a soft budget limit routed to. A candidate that does
    /// not rename the model sends this one upstream.
    pub fn routed_model(&self) -> &str {
        self.downgraded_to.as_deref().unwrap_or(&self.fields.model)
    }
}

/// Serves one forwarded endpoint. On `Err` nothing has been written to the
/// client unless `session.response_written()` says so.
pub async fn forward(
    services: &Services,
    session: &mut ServerSession,
    endpoint: Endpoint,
    rctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    rctx.stream_id = Some(StreamRegistry::mint_id());
    let intake = intake::intake(services, session, endpoint, rctx).await?;
    rctx.waited += intake.body_wait;
    let caller = admit::admit(services, session, &intake).await?;
    let plan = plan::plan(services, &intake, &caller).await?;
    if let Some(turn) = intake.turn.as_ref().filter(|t| t.previous_unknown) {
        // Only an upstream that keeps its own conversations may know it.
        let keeps_state = plan.candidates.iter().any(|c| {
            services.local[c.target].is_none()
                && services.router.targets()[c.target]
                    .provider()
                    .speaks(ClientDialect::Responses)
        });
        if !keeps_state {
            return Err(GatewayError::PreviousResponseNotFound {
                id: turn
                    .request
                    .previous_response_id
                    .clone()
                    .unwrap_or_default(),
            });
        }
    }
    rctx.model_label = plan.route.model_label.to_string();
    let span = tracing::Span::current();
    if let Some(key) = &caller.key {
        span.record("tenant", key.tenant.as_str());
        span.record("key", key.key_id.as_str());
    }
    span.record("priority", caller.priority.as_str());
    span.record("model", plan.route.model_label);
    request_log::record_request(&span, intake.endpoint, &intake.fields.model);
    rctx.key = caller.key.clone();
    rctx.priority = Some(caller.priority.as_str());

    let stream = services.streams.registry.register(
        rctx.stream_id.clone().unwrap_or_default(),
        StreamOwner {
            tenant: caller.key.as_ref().map(|k| k.tenant.clone()),
            key_id: caller.key.as_ref().map(|k| k.key_id.clone()),
            model: intake.fields.model.clone(),
            priority: caller.priority,
        },
        services.streams.queue.is_some(),
    );
    let mut ctx = ForwardCtx {
        endpoint: intake.endpoint,
        dialect: intake.dialect,
        body: intake.body,
        fields: intake.fields,
        prompt_estimate: intake.prompt_estimate,
        caller,
        route: plan.route,
        candidates: plan.candidates,
        spend: plan.spend,
        downgraded_to: plan.downgraded_to,
        stream,
        slot: None,
        native: intake.native,
        turn: intake.turn,
    };
    let answer = match attempt::wait_for_answer(services, session, &mut ctx, rctx).await {
        Ok(Some(answer)) => answer,
        // The client left while waiting: nothing to relay or record.
        Ok(None) => return Ok(()),
        Err(error) => {
            settle::record_failure(services, &ctx, &error, rctx);
            return Err(error);
        }
    };
    let upstream = answer.target.settings.name.as_str();
    let system = match answer.source {
        // The built-in engine: no provider in between.
        AnswerSource::Local(_) => "sluice",
        AnswerSource::Http(_) => answer.provider.label(),
    };
    request_log::record_answer(&span, upstream, system, &answer.upstream_model);
    rctx.upstream = Some(upstream.to_string());
    if let Some(mut relayed) = relay::relay(services, session, &mut ctx, answer, rctx).await? {
        let tail = relayed.tail.take();
        let is_sse = relayed.is_sse;
        let dialect = ctx.dialect;
        // A stored response must be findable by the time its client has
        // it whole: the tail waits for the store too.
        let conversation = settle::conversation_to_store(&ctx, &relayed);
        let tenant = ctx.tenant().map(str::to_string);
        let durable = settle::settle(services, ctx, relayed, rctx);
        if let Some((id, items)) = conversation {
            services
                .accounting
                .save_conversation(id, tenant, items)
                .await;
        }
        if let Some(tail) = tail {
            let recorded = match durable {
                Some(ack) => ack.durable().await,
                None => true,
            };
            relay::end_after_record(session, dialect, tail, is_sse, recorded).await;
        }
    }
    Ok(())
}
