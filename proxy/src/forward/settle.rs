//! Phase 6, settle: runs last, after the relay, whatever its outcome.
//! Settles the token quota on the reported usage, writes the one ledger
//! record (priced; delivered text counted when nothing was reported), and
//! settles the budget hold to the real cost. Never blocks: the ledger
//! queues the record; under `ledger.durability: strict` it returns what
//! resolves once the record is durable, and the forward pipeline sends the
//! response's held tail only then.

use super::relay::{RelayOutcome, Relayed};
use super::{ForwardCtx, Services};
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use crate::ops::accounting::Finished;
use crate::ops::request_log;
use sluice_ledger::{DurableAck, EndState};

/// Records a request whose every attempt failed: one ledger record with no
/// usage and the status the client got, so the ledger holds one record per
/// forwarded request whatever became of it.
pub fn record_failure(
    services: &Services,
    ctx: &ForwardCtx<'_>,
    error: &GatewayError,
    rctx: &RequestCtx,
) {
    let GatewayError::AllAttemptsFailed { upstream, .. } = error else {
        return;
    };
    let key = ctx.caller.key.as_deref();
    let _ = services.accounting.record(Finished {
        time_us: rctx.started_unix_us,
        request_id: rctx.request_id.as_str(),
        tenant: key.map(|k| k.tenant.as_str()),
        key_id: key.map(|k| k.key_id.as_str()),
        model: &ctx.fields.model,
        provider: upstream.as_deref().unwrap_or("-"),
        upstream_model: &ctx.fields.model,
        reported: Some(sluice_providers::Usage::default()),
        request_body: &ctx.body,
        delivered_text: "",
        latency_ms: rctx.started.elapsed().as_millis() as u64,
        ttft_ms: None,
        status: error.status(),
        stream: ctx.fields.stream,
        end_state: EndState::Broken,
    });
}

/// The Responses turn to store, as `(id, items)`, when `ctx` is one with
/// `store` on, its reply was written by sluice (an upstream that speaks the
/// Responses API keeps its own) and it completed.
pub fn conversation_to_store(
    ctx: &ForwardCtx<'_>,
    relayed: &Relayed<'_>,
) -> Option<(String, String)> {
    let turn = ctx.turn.as_ref().filter(|t| t.request.store)?;
    if relayed.outcome != RelayOutcome::Completed
        || !(200..300).contains(&relayed.translator.status())
    {
        return None;
    }
    let writer = relayed.translator.dialect_writer()?.responses()?;
    Some((turn.id.clone(), turn.conversation(writer.output_items())))
}

/// Settles what `relayed` delivered for the request `ctx`.
pub fn settle(
    services: &Services,
    ctx: ForwardCtx<'_>,
    relayed: Relayed<'_>,
    rctx: &mut RequestCtx,
) -> Option<DurableAck> {
    let ForwardCtx {
        mut caller,
        spend,
        body,
        fields,
        ..
    } = ctx;
    let reported = relayed.translator.usage();
    if let (Some(admission), Some(u)) = (caller.admission.as_mut(), reported) {
        admission.settle(u.prompt_tokens + u.completion_tokens);
    }
    let key = caller.key.as_deref();
    let (cost, durable) = services.accounting.record(Finished {
        time_us: rctx.started_unix_us,
        request_id: rctx.request_id.as_str(),
        tenant: key.map(|k| k.tenant.as_str()),
        key_id: key.map(|k| k.key_id.as_str()),
        model: &fields.model,
        provider: &relayed.target.settings.name,
        upstream_model: &relayed.upstream_model,
        reported,
        request_body: &body,
        delivered_text: relayed.translator.delivered_text(),
        latency_ms: rctx.started.elapsed().as_millis() as u64,
        ttft_ms: relayed
            .first_byte_at
            .map(|t| t.duration_since(rctx.started).as_millis() as u64),
        status: rctx.status,
        stream: fields.stream,
        end_state: match relayed.outcome {
            RelayOutcome::Completed => EndState::Completed,
            RelayOutcome::Ended(_) => EndState::Cancelled,
            RelayOutcome::SourceBroke => EndState::Broken,
        },
    });
    if let Some(spend) = spend {
        spend.reservation.settle(cost.unwrap_or(0));
    }
    if let Some(usage) = &reported {
        request_log::record_usage(&tracing::Span::current(), usage);
    }
    rctx.usage = reported;
    rctx.cost_micros = cost;
    durable
}
