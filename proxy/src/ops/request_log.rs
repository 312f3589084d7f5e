//! The request span and the access log: the one `tracing` span each request
//! runs in (its fields, the OpenTelemetry GenAI attributes among them, so
//! they reach JSON logs and, with the `otel` feature, exported traces), and
//! the one `sluice::access` event written when the request has finished.
//!
//! The access event carries only what [`AccessField`] offers: nothing that
//! can hold a prompt, a body or a credential.

use crate::downstream::RequestCtx;
use pingora::protocols::http::ServerSession;
use sluice_config::{AccessField, AccessLogSettings};
use sluice_providers::{Endpoint, Usage};
use tracing::field::Empty;
use tracing::Span;

/// The span a request is served in, its facts recorded as they become
/// known. With the `otel` feature, a client's `traceparent` becomes its
/// parent.
pub fn span(
    session: &ServerSession,
    ctx: &RequestCtx,
    route: &'static str,
    listener: &'static str,
) -> Span {
    let span = tracing::info_span!(
        "request",
        request_id = %ctx.request_id,
        route = route,
        listener = listener,
        model = Empty,
        tenant = Empty,
        priority = Empty,
        key = Empty,
        upstream = Empty,
        status = Empty,
        gen_ai.system = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        server.address = Empty,
        http.response.status_code = Empty,
    );
    #[cfg(feature = "otel")]
    super::otel::continue_trace(&span, &session.req_header().headers);
    #[cfg(not(feature = "otel"))]
    let _ = session;
    span
}

/// The GenAI operation an endpoint performs, as OpenTelemetry names it.
pub fn operation_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// Records on `span` what is known once the request is admitted.
pub fn record_request(span: &Span, endpoint: Endpoint, client_model: &str) {
    span.record("gen_ai.operation.name", operation_name(endpoint));
    span.record("gen_ai.request.model", client_model);
}

/// Records on `span` the upstream that answered: its config name, its
/// provider label (`openai`, `anthropic`, ...) and the model it was called with.
pub fn record_answer(span: &Span, upstream: &str, system: &str, upstream_model: &str) {
    span.record("upstream", upstream);
    span.record("server.address", upstream);
    span.record("gen_ai.system", system);
    span.record("gen_ai.response.model", upstream_model);
}

/// Records on `span` the settled token usage. As `i64`: tracing-opentelemetry
/// exports a `u64` as a string attribute.
pub fn record_usage(span: &Span, usage: &Usage) {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.record("gen_ai.usage.input_tokens", count(usage.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", count(usage.completion_tokens));
}

/// Records the status sent to the client on `span`, then writes the access
/// line (when `access` is configured). Called once, after the request is served.
pub fn finish(
    span: &Span,
    access: Option<&AccessLogSettings>,
    session: &ServerSession,
    ctx: &RequestCtx,
    route: &'static str,
) {
    span.record("status", ctx.status);
    span.record("http.response.status_code", i64::from(ctx.status));
    if let Some(access) = access {
        write_access(access, session, ctx, route);
    }
}

/// The `sluice::access` event: every field present only when configured
/// and known. Written outside the request span, so a JSON line holds the
/// configured fields and no others.
fn write_access(
    access: &AccessLogSettings,
    session: &ServerSession,
    ctx: &RequestCtx,
    route: &'static str,
) {
    let on = |field| access.has(field);
    let header = session.req_header();
    let key = ctx.key.as_deref();
    let usage = ctx.usage.as_ref();
    let time = on(AccessField::Time)
        .then(|| jiff::Timestamp::from_microsecond(ctx.started_unix_us).ok())
        .flatten();
    let client_ip = on(AccessField::ClientIp)
        .then(|| {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
        })
        .flatten();
    let user_agent = on(AccessField::UserAgent)
        .then(|| {
            session
                .get_header("user-agent")
                .and_then(|v| v.to_str().ok())
        })
        .flatten();
    tracing::info!(
        target: "sluice::access",
        time = time.map(tracing::field::display),
        request_id = on(AccessField::RequestId).then(|| ctx.request_id.as_str()),
        method = on(AccessField::Method).then(|| header.method.as_str()),
        path = on(AccessField::Path).then(|| header.uri.path()),
        route = on(AccessField::Route).then_some(route),
        status = on(AccessField::Status).then_some(ctx.status),
        duration_ms = on(AccessField::DurationMs).then(|| ctx.started.elapsed().as_millis() as u64),
        model = on(AccessField::Model).then_some(ctx.model_label.as_str()),
        upstream = on(AccessField::Upstream).then_some(ctx.upstream.as_deref()).flatten(),
        tenant = on(AccessField::Tenant).then_some(key.map(|k| k.tenant.as_str())).flatten(),
        key_id = on(AccessField::KeyId).then_some(key.map(|k| k.key_id.as_str())).flatten(),
        priority = on(AccessField::Priority).then_some(ctx.priority).flatten(),
        prompt_tokens = on(AccessField::PromptTokens).then_some(usage.map(|u| u.prompt_tokens)).flatten(),
        completion_tokens = on(AccessField::CompletionTokens)
            .then_some(usage.map(|u| u.completion_tokens))
            .flatten(),
        cost_usd = on(AccessField::CostUsd)
            .then_some(ctx.cost_micros.map(|m| m as f64 / 1e6))
            .flatten(),
        stream_id = on(AccessField::StreamId).then_some(ctx.stream_id.as_deref()).flatten(),
        client_ip = client_ip.map(tracing::field::display),
        user_agent = user_agent,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_to_genai_operation_names() {
        assert_eq!(operation_name(Endpoint::ChatCompletions), "chat");
        assert_eq!(operation_name(Endpoint::Completions), "text_completion");
        assert_eq!(operation_name(Endpoint::Embeddings), "embeddings");
    }
}
