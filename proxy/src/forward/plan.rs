//! Phase 3, plan: runs after admission. Orders the route's candidates,
//! reserves the worst-case cost on the caller's budgets (refusing past a
//! hard limit), announces a soft limit crossed for the first time, and
//! re-plans on the cheaper model a soft limit asks for. `Err` is the
//! client's answer (429 `insufficient_quota`, 503).

use super::intake::Intake;
use super::Services;
use crate::error::GatewayError;
use sluice_filters::{Caller, SpendHold};
use sluice_providers::{Candidate, Route};

/// What planning decided.
pub struct Plan<'r> {
    /// The route after any downgrade.
    pub route: Route<'r>,
    /// Candidates in the order they are tried.
    pub candidates: Vec<Candidate<'r>>,
    /// The budget hold, when a budget applies.
    pub spend: Option<SpendHold>,
    /// The cheaper model routed to, if a soft limit asked for one.
    pub downgraded_to: Option<String>,
}

/// Plans the request `intake` describes for `caller`.
pub async fn plan<'r>(
    services: &'r Services,
    intake: &Intake<'r>,
    caller: &Caller,
) -> Result<Plan<'r>, GatewayError> {
    let candidates = services.router.plan(&intake.route);
    let Some(key) = caller
        .key
        .as_deref()
        .filter(|k| services.access.has_budget(k))
    else {
        return Ok(Plan {
            route: intake.route,
            candidates,
            spend: None,
            downgraded_to: None,
        });
    };
    // The worst case: every choice (`n`) at its most tokens, at the price
    // of the dearest candidate the chain may fail over to.
    let client_model = intake.fields.model.as_str();
    let max_tokens = intake
        .fields
        .max_tokens
        .unwrap_or(services.access.default_max_tokens());
    let completion = max_tokens.saturating_mul(intake.fields.choices);
    let cost_at = |model: &str| {
        let prompt = intake.prompt_estimate;
        services
            .accounting
            .cost_micros(Some(&key.tenant), model, prompt, completion)
    };
    let worst = candidates
        .iter()
        .filter_map(|c| cost_at(c.upstream_model(client_model)))
        .max()
        .or_else(|| cost_at(client_model))
        .unwrap_or(0);
    let spend = services
        .access
        .reserve_budget(key, worst)
        .await
        .inspect_err(|_| services.metrics.budget_event("hard_limit_refused"))?;
    if let Some(spend) = &spend {
        for alert in &spend.newly_alerted {
            services.alerts.soft_limit_crossed(alert);
        }
    }
    // Config validation makes every `downgrade_to` a configured model.
    let cheaper = spend
        .as_ref()
        .and_then(|s| s.downgrade_to.as_deref())
        .and_then(|m| Some((m.to_string(), services.router.resolve(m).ok()?)));
    let (route, candidates, downgraded_to) = match cheaper {
        Some((model, route)) => (route, services.router.plan(&route), Some(model)),
        None => (intake.route, candidates, None),
    };
    Ok(Plan {
        route,
        candidates,
        spend,
        downgraded_to,
    })
}
