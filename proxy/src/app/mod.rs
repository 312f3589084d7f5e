//! The HTTP application: one [`Gateway`] serving every route — health,
//! metrics and `/v1/models` here, the OpenAI endpoints through the forward
//! pipeline, the stream control and admin APIs through their modules — on
//! two listeners, each serving its own routes ([`listeners`]). [`server`]
//! assembles the pingora server around it.
//!
//! Why `HttpServerApp` and not pingora's `ProxyHttp`: `ProxyHttp` picks the
//! upstream (`upstream_peer`) before the request body is read, but an OpenAI
//! request names its model — and so its upstream — inside the JSON body.
//! Reading the body early only works for bodies under pingora's 64 KiB retry
//! buffer (pingora issue #780), and long prompts are larger. So sluice reads
//! the body itself, decides, and forwards through pingora's own connector and
//! pool ([`crate::forward`]); this also skips the proxy's duplex task channels
//! on the hot path.

pub mod edge;
pub mod listeners;
pub mod reload;
pub mod routes;
pub mod server;

use crate::admin::AdminContext;
use crate::downstream::respond::{respond, respond_error};
use crate::downstream::{Dialect, RequestCtx};
use crate::error::GatewayError;
use crate::forward::upstream_pool::UpstreamPool;
use crate::forward::{NamedBackends, Services};
use crate::ops::{request_log, Accounting, Alerts, Metrics};
use crate::streams::StreamControl;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerOptions};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use routes::{Listener, RouteKind};
use sluice_config::{Config, EdgeLimits};
use sluice_providers::dialects::ClientDialect;
use sluice_providers::{Endpoint, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::Instrument;

/// The sluice HTTP application; one instance, shared by both listeners,
/// serves every connection.
pub struct Gateway {
    /// What forwarded requests use: router, access, accounting, streams, metrics.
    pub services: Services,
    /// The control runtime's handle (admin and report database calls).
    control: tokio::runtime::Handle,
    /// Configured model names (to validate budgets created at run time).
    model_names: Vec<String>,
    /// Set once the server is up; read by `/health/ready`.
    ready: Arc<AtomicBool>,
    /// `GET /v1/models`, rendered once from config.
    models_body: Bytes,
    /// Every listed model's `/v1/models` entry, for keys limited to some.
    model_entries: Vec<serde_json::Value>,
    /// `GET /docs/llms.txt`, rendered once from the route table.
    docs_body: Bytes,
    /// h2c on, for pingora.
    server_options: HttpServerOptions,
    /// Header deadline and header caps.
    limits: EdgeLimits,
    /// The in-process backends by upstream name, for a reloaded gateway.
    named_local: NamedBackends,
    /// The access log's fields; `None` when it is off.
    access_log: Option<sluice_config::AccessLogSettings>,
}

/// A connection whose request was answered and may carry another.
pub struct Reuse {
    /// The connection.
    pub stream: Stream,
    /// Bytes of the next request already read.
    pub prefix: Option<BytesMut>,
    /// Keep-alive state carried to the next request.
    pub settings: HttpPersistentSettings,
}

/// What the gateway is built from, besides its config.
pub struct GatewayParts {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Prices and the ledger.
    pub accounting: Arc<Accounting>,
    /// The control runtime's handle.
    pub control: tokio::runtime::Handle,
    /// Flipped by the server once it runs.
    pub ready: Arc<AtomicBool>,
    /// In-process backends by upstream name (the built-in engine).
    pub local: NamedBackends,
}

impl Gateway {
    /// Builds the gateway for a validated config.
    pub fn new(config: &Config, parts: GatewayParts) -> Self {
        let streams = Arc::new(StreamControl::new(
            &config.streams,
            config.access.redis_url.as_ref().map(|u| u.expose()),
            &parts.control,
            parts.metrics.clone(),
        ));
        Gateway::assemble(config, parts, streams, |key_source| {
            sluice_filters::AccessPolicy::new(&config.access, key_source)
        })
    }

    /// The gateway of a reloaded `config`, sharing this one's metrics,
    /// ledger, runtimes, engines, live streams, and quota and budget state
    /// (its settings that need a restart are checked to be unchanged first,
    /// in `reload.rs`).
    pub fn reloaded(&self, config: &Config) -> Self {
        let parts = GatewayParts {
            metrics: self.services.metrics.clone(),
            accounting: self.services.accounting.clone(),
            control: self.control.clone(),
            ready: self.ready.clone(),
            local: self.named_local.clone(),
        };
        Gateway::assemble(config, parts, self.services.streams.clone(), |key_source| {
            self.services
                .access
                .reconfigured(&config.access, key_source)
        })
    }

    fn assemble(
        config: &Config,
        parts: GatewayParts,
        streams: Arc<StreamControl>,
        access: impl FnOnce(Option<Arc<dyn sluice_filters::KeySource>>) -> sluice_filters::AccessPolicy,
    ) -> Self {
        let GatewayParts {
            metrics,
            accounting,
            control,
            ready,
            local: named_local,
        } = parts;
        let local = &named_local;
        let router = Router::new(config);
        let model_names: Vec<String> = config.models.iter().map(|m| m.name.clone()).collect();
        let upstreams = UpstreamPool::new(router.targets());
        let local: Vec<Option<Arc<dyn crate::forward::LocalBackend>>> = router
            .targets()
            .iter()
            .map(|t| {
                local
                    .iter()
                    .find(|(name, _)| *name == t.settings.name)
                    .map(|(_, backend)| backend.clone())
            })
            .collect();
        let model_entries = model_entries(&router, &local);
        let models_body = render_models(&model_entries, None);
        let mut server_options = HttpServerOptions::default();
        server_options.h2c = true;
        server_options.h2_idle_timeout = Some(config.server.limits.keepalive_timeout);
        let key_source = accounting.store().cloned().map(|store| {
            Arc::new(crate::admin::keys::DbKeys {
                store,
                runtime: control.clone(),
                models: Arc::new(model_names.clone()),
            }) as Arc<dyn sluice_filters::KeySource>
        });
        let access = access(key_source);
        let alerts = Alerts::new(access.alert_webhook().map(str::to_string), metrics.clone());
        Gateway {
            services: Services {
                router,
                upstreams,
                local,
                access,
                accounting,
                streams,
                metrics,
                alerts,
                max_body_bytes: config.server.max_body_bytes,
            },
            control,
            model_names,
            ready,
            models_body,
            model_entries,
            docs_body: Bytes::from(routes::llms_txt()),
            server_options,
            limits: config.server.limits.clone(),
            named_local,
            access_log: config.logging.access.clone(),
        }
    }

    /// The control runtime's handle.
    pub fn control(&self) -> &tokio::runtime::Handle {
        &self.control
    }

    /// What the admin handlers work with.
    pub fn admin(&self) -> AdminContext<'_> {
        AdminContext {
            access: &self.services.access,
            accounting: &self.services.accounting,
            control: &self.control,
            model_names: &self.model_names,
        }
    }

    async fn serve(&self, session: &mut ServerSession, route: RouteKind, ctx: &mut RequestCtx) {
        let services = &self.services;
        ctx.dialect = match route {
            RouteKind::Messages | RouteKind::CountTokens => Dialect::Messages,
            RouteKind::Responses => Dialect::Responses,
            _ => Dialect::OpenAi,
        };
        let result = match route {
            RouteKind::Forward(endpoint) => {
                crate::forward::forward(services, session, endpoint, ctx).await
            }
            RouteKind::Messages | RouteKind::Responses => {
                let chat = Endpoint::ChatCompletions;
                crate::forward::forward(services, session, chat, ctx).await
            }
            RouteKind::CountTokens => {
                Box::pin(crate::forward::count_tokens::serve(services, session, ctx)).await
            }
            RouteKind::Models => self.models(session, ctx).await,
            // Cold paths, boxed so that their (database) futures do not
            // swell the state every forwarded request carries.
            RouteKind::UsageReport => {
                Box::pin(crate::admin::usage::serve(&self.admin(), session, ctx)).await
            }
            RouteKind::AdminAccess => {
                Box::pin(crate::admin::keys::serve(&self.admin(), session, ctx)).await
            }
            RouteKind::Streams => {
                let api =
                    crate::streams::api::serve(&services.streams, &services.access, session, ctx);
                Box::pin(api).await
            }
            RouteKind::Live => {
                let body = Bytes::from_static(b"{\"status\":\"ok\"}");
                respond(session, ctx, 200, "application/json", body).await;
                Ok(())
            }
            RouteKind::Ready => {
                let (status, body) = if self.ready.load(Ordering::Acquire) {
                    (200, &b"{\"status\":\"ready\"}"[..])
                } else {
                    (503, &b"{\"status\":\"starting\"}"[..])
                };
                respond(
                    session,
                    ctx,
                    status,
                    "application/json",
                    Bytes::from_static(body),
                )
                .await;
                Ok(())
            }
            RouteKind::Metrics => {
                self.metrics_page(session, ctx).await;
                Ok(())
            }
            RouteKind::Docs => {
                let body = self.docs_body.clone();
                respond(session, ctx, 200, "text/plain; charset=utf-8", body).await;
                Ok(())
            }
            RouteKind::Unknown => Err(GatewayError::UnknownRoute {
                method: session.req_header().method.to_string(),
                path: session.req_header().uri.path().to_string(),
            }),
        };
        if let Err(error) = result {
            if error.status() >= 500 {
                tracing::warn!(error = %error, kind = error.kind(), "request failed");
            } else {
                tracing::debug!(error = %error, kind = error.kind(), "request refused");
            }
            if session.response_written().is_none() {
                respond_error(session, ctx, &error).await;
            }
        }
    }

    /// `GET /metrics`: gauges read at scrape time, then the registry as text.
    async fn metrics_page(&self, session: &mut ServerSession, ctx: &mut RequestCtx) {
        let Services {
            access,
            router,
            streams,
            accounting,
            metrics,
            ..
        } = &self.services;
        if let Some(up) = access.quotas().store_up() {
            metrics.quota_store_up.set(i64::from(up));
        }
        for target in router.targets() {
            metrics
                .upstream_breaker_state
                .with_label_values(&[target.settings.name.as_str()])
                .set(target.health.breaker_state().as_gauge());
        }
        streams.observe();
        for (target, backend) in router.targets().iter().zip(&self.services.local) {
            if let Some(load) = match backend {
                Some(backend) => backend.load().await,
                None => None,
            } {
                metrics.engine.observe(&target.settings.name, &load);
            }
        }
        if let Some(stats) = accounting.stats() {
            metrics.observe_ledger(&stats);
        }
        let errors = access.quotas().store_errors();
        let seen = metrics.quota_store_errors.get();
        metrics
            .quota_store_errors
            .inc_by(errors.saturating_sub(seen));
        match metrics.render() {
            Ok(text) => respond(session, ctx, 200, "text/plain; version=0.0.4", text.into()).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot render metrics");
                let body = Bytes::from_static(b"metrics unavailable");
                respond(session, ctx, 500, "text/plain", body).await
            }
        }
    }

    /// `GET /v1/models`: every configured model, or the caller key's allowed ones.
    async fn models(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let key = self
            .services
            .access
            .identify(&session.req_header().headers)
            .await?;
        let body = match key.as_ref().and_then(|k| k.models.as_ref()) {
            None => self.models_body.clone(),
            Some(allowed) => render_models(&self.model_entries, Some(allowed)),
        };
        respond(session, ctx, 200, "application/json", body).await;
        Ok(())
    }

    fn observe(&self, route: RouteKind, ctx: &RequestCtx) {
        let status = status_label(ctx.status);
        let labels = [route.label(), ctx.model_label.as_str(), status];
        let metrics = &self.services.metrics;
        metrics.requests.with_label_values(&labels).inc();
        let elapsed = ctx.started.elapsed();
        metrics
            .request_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        if route.is_forwarded() {
            metrics
                .gateway_overhead
                .with_label_values(&[route.label()])
                .observe(elapsed.saturating_sub(ctx.waited).as_secs_f64());
        }
    }
}

impl Gateway {
    /// Serves one request that came in on `listener`: reads its header
    /// under `server.header_timeout_ms` (408 when late, 400 or 431 when it
    /// cannot be accepted), routes and answers it (a route of the other
    /// listener is an unknown path here), and gives the connection back when
    /// it may carry another.
    pub async fn serve_one(
        &self,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
        listener: Listener,
    ) -> Option<Reuse> {
        match tokio::time::timeout(self.limits.header_timeout, session.read_request()).await {
            Ok(Ok(true)) => {}
            // The client closed an idle keep-alive connection.
            Ok(Ok(false)) => return None,
            Ok(Err(e)) => {
                if let Some(error) = unreadable(&e, &self.limits) {
                    self.refuse_header(&mut session, &error).await;
                }
                return None;
            }
            Err(_) => {
                let error = GatewayError::RequestTimeout { phase: "header" };
                self.refuse_header(&mut session, &error).await;
                return None;
            }
        }
        let headers = &session.req_header().headers;
        if headers.len() > self.limits.max_headers
            || header_bytes(headers) > self.limits.max_header_bytes
        {
            let error = GatewayError::HeaderTooLarge {
                max_headers: self.limits.max_headers,
                max_bytes: self.limits.max_header_bytes,
            };
            self.refuse_header(&mut session, &error).await;
            return None;
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        // sluice watches the client's socket while it waits on the upstream
        // (to cancel the moment the client leaves). A keep-alive client may
        // send its next request as soon as it has read this answer, before
        // the relay has noticed the answer is complete; with pipelining on,
        // pingora keeps the byte that watch read for the next request
        // instead of dropping it.
        session.set_pipelining_enabled(true);
        let header = session.req_header();
        let route = RouteKind::classify(&header.method, header.uri.path()).on(listener);
        let client_id = session.get_header("x-request-id").map(|v| v.as_bytes());
        let mut ctx = RequestCtx::new(client_id, self.limits.body_timeout);
        let span = request_log::span(&session, &ctx, route.label(), listener.label());
        let in_flight = self
            .services
            .metrics
            .in_flight
            .with_label_values(&[route.label()]);
        in_flight.inc();
        self.serve(&mut session, route, &mut ctx)
            .instrument(span.clone())
            .await;
        let access_log = self.access_log.as_ref();
        request_log::finish(&span, access_log, &session, &ctx, route.label());
        self.observe(route, &ctx);
        // After observing, so a scrape that sees no request in flight sees its metrics.
        in_flight.dec();

        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(reusable)) => {
                let (stream, prefix) = reusable.into_parts();
                Some(Reuse {
                    stream,
                    prefix,
                    settings,
                })
            }
            _ => None,
        }
    }

    /// Answers a request whose header was refused, then closes.
    async fn refuse_header(&self, session: &mut ServerSession, error: &GatewayError) {
        let edge = &self.services.metrics.edge;
        match error {
            GatewayError::RequestTimeout { .. } => {
                edge.timeouts.with_label_values(&["header"]).inc()
            }
            GatewayError::HeaderTooLarge { .. } => edge
                .unreadable
                .with_label_values(&["header_too_large"])
                .inc(),
            _ => edge.unreadable.with_label_values(&["bad_framing"]).inc(),
        }
        tracing::debug!(error = %error, kind = error.kind(), "request header refused");
        session.set_keepalive(None);
        let mut ctx = RequestCtx::new(None, self.limits.body_timeout);
        respond_error(session, &mut ctx, error).await;
        session.shutdown().await;
    }
}

/// What to answer a header pingora could not read, if anything: the
/// client's own bytes never reach the message.
fn unreadable(e: &pingora::Error, limits: &EdgeLimits) -> Option<GatewayError> {
    use pingora::ErrorType;
    match e.etype() {
        ErrorType::ReadTimedout => Some(GatewayError::RequestTimeout { phase: "header" }),
        ErrorType::InvalidHTTPHeader => {
            let context = e.context.as_ref().map_or("", |c| c.as_str());
            let too_many = e
                .root_cause()
                .downcast_ref::<httparse::Error>()
                .is_some_and(|c| *c == httparse::Error::TooManyHeaders);
            Some(
                if too_many || context.starts_with("Request header larger") {
                    // Past pingora's own ceilings (256 fields, 1 MiB), so past
                    // sluice's lower ones too: name those, the ones to fit.
                    GatewayError::HeaderTooLarge {
                        max_headers: limits.max_headers,
                        max_bytes: limits.max_header_bytes,
                    }
                } else if context.contains("Content-Length") {
                    GatewayError::BadFraming {
                        reason: "conflicting or invalid Content-Length",
                    }
                } else if context.contains("Transfer-Encoding") {
                    GatewayError::BadFraming {
                        reason: "unsupported Transfer-Encoding",
                    }
                } else {
                    GatewayError::BadFraming {
                        reason: "malformed request header",
                    }
                },
            )
        }
        // The client hung up or the socket broke: nobody to answer.
        _ => None,
    }
}

/// Bytes of header names and values.
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// Status as a label without allocating for the common codes.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// Each listed model's `/v1/models` entry: OpenAI's fields, and which
/// client dialects its first upstream serves `native`ly (the client's body
/// as sent) or `translated` through chat.
fn model_entries(
    router: &Router,
    local: &[Option<Arc<dyn crate::forward::LocalBackend>>],
) -> Vec<serde_json::Value> {
    let how = |native: bool| if native { "native" } else { "translated" };
    router
        .listed_models()
        .iter()
        .map(|name| {
            let first = router
                .resolve(name)
                .ok()
                .and_then(|route| router.plan(&route).first().map(|c| c.target));
            let dialects = first.map(|i| {
                let provider = router.targets()[i].provider();
                let in_process = local.get(i).is_some_and(Option::is_some);
                let speaks = |d| !in_process && provider.speaks(d);
                serde_json::json!({
                    "chat_completions": how(in_process || provider.is_passthrough()),
                    "messages": how(speaks(ClientDialect::Messages)),
                    "responses": how(speaks(ClientDialect::Responses)),
                })
            });
            serde_json::json!({
                "id": name, "object": "model", "created": 0, "owned_by": "sluice",
                "dialects": dialects,
            })
        })
        .collect()
}

/// The `/v1/models` list: every entry, or those whose id is `allowed`.
fn render_models(entries: &[serde_json::Value], allowed: Option<&[String]>) -> Bytes {
    let data: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| {
            allowed.is_none_or(|names| names.iter().any(|n| e["id"].as_str() == Some(n.as_str())))
        })
        .collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_list_has_openai_shape() {
        let entries = [
            serde_json::json!({"id": "a", "object": "model"}),
            serde_json::json!({"id": "b", "object": "model"}),
        ];
        let body = render_models(&entries, None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["id"], "b");
        assert_eq!(v["data"][0]["object"], "model");
        let only_b = render_models(&entries, Some(&["b".to_string()]));
        let v: serde_json::Value = serde_json::from_slice(&only_b).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["id"], "b");
    }
}
