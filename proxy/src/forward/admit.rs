//! Phase 2, admit: runs after intake. Checks the model against the key's
//! allow-list and admits the request against the key's and tenant's quotas
//! (reserving the estimated prompt plus `max_tokens`). At a concurrency
//! limit, a higher priority preempts the lowest-priority stream in the
//! refusing scope and tries again. `Err` is the client's answer (403, 429, 503).

use super::intake::Intake;
use super::Services;
use crate::error::GatewayError;
use pingora::protocols::http::ServerSession;
use sluice_filters::Caller;
use std::time::Duration;

/// Admission tries after preempting a stream for its slot.
const PREEMPT_ADMIT_TRIES: usize = 20;
/// The pause between those tries: the preempted request lets go of its
/// quota slot as it ends (through Redis, a moment later).
const PREEMPT_ADMIT_PAUSE: Duration = Duration::from_millis(10);

/// Runs admission for the request `intake` describes.
pub async fn admit(
    services: &Services,
    session: &ServerSession,
    intake: &Intake<'_>,
) -> Result<Caller, GatewayError> {
    // Strict durability with neither database nor spool taking records:
    // refuse cleanly now rather than serve an answer that cannot be billed.
    if !services.accounting.accepting() {
        return Err(GatewayError::LedgerUnavailable);
    }
    let access = &services.access;
    let try_admit = || {
        access.admit(
            &session.req_header().headers,
            intake.key.clone(),
            &intake.fields.model,
            intake.prompt_estimate,
            intake.fields.max_tokens,
        )
    };
    let refusal = match try_admit().await {
        Ok(caller) => return Ok(caller),
        Err(refusal) => refusal,
    };
    let Some(key) = intake.key.as_deref() else {
        return Err(refusal.into());
    };
    let priority = access.priority(&session.req_header().headers, Some(key));
    if !services.streams.preempt_for(&refusal, key, priority).await {
        return Err(refusal.into());
    }
    let mut again = Err(refusal);
    for _ in 0..PREEMPT_ADMIT_TRIES {
        again = try_admit().await;
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(PREEMPT_ADMIT_PAUSE).await;
    }
    Ok(again?)
}
