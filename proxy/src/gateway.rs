//! The gateway: one pingora HTTP application serving the OpenAI API.
//!
//! Why `HttpServerApp` and not pingora's `ProxyHttp`: `ProxyHttp` picks the
//! upstream (`upstream_peer`) before the request body is read, but an OpenAI
//! request names its model — and so its upstream — inside the JSON body.
//! Reading the body early only works for bodies under pingora's 64 KiB retry
//! buffer (pingora issue #780), and long prompts are larger. So sluice reads
//! the body itself, decides, and forwards through pingora's own connector and
//! pool ([`crate::forward`]); this also skips the proxy's duplex task channels
//! on the hot path.

use crate::access::Access;
use crate::accounting::Accounting;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::upstream::UpstreamPool;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use sluice_config::Config;
use sluice_filters::RequestId;
use sluice_providers::{Endpoint, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What a request asked for, decided from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    /// An OpenAI endpoint forwarded upstream.
    Forward(Endpoint),
    /// `GET /v1/models`.
    Models,
    /// `GET /health` and `/health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /admin/usage`.
    UsageReport,
    /// `/admin/keys...` and `/admin/tenants...`.
    AdminAccess,
    /// `/v1/streams...`: the stream control API.
    Streams,
    /// Anything else.
    Unknown,
}

impl RouteKind {
    fn classify(method: &http::Method, path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        if path.starts_with("/admin/keys") || path.starts_with("/admin/tenants") {
            return RouteKind::AdminAccess;
        }
        if path == "/v1/streams" || path.starts_with("/v1/streams/") {
            return RouteKind::Streams;
        }
        if method == http::Method::POST {
            return Endpoint::from_path(path).map_or(RouteKind::Unknown, RouteKind::Forward);
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return RouteKind::Unknown;
        }
        match path.strip_suffix('/').unwrap_or(path) {
            "/v1/models" => RouteKind::Models,
            "/health" | "/health/live" => RouteKind::Live,
            "/health/ready" => RouteKind::Ready,
            "/metrics" => RouteKind::Metrics,
            "/admin/usage" => RouteKind::UsageReport,
            _ => RouteKind::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            RouteKind::Forward(e) => e.label(),
            RouteKind::Models => "models",
            RouteKind::Live => "health",
            RouteKind::Ready => "ready",
            RouteKind::Metrics => "metrics",
            RouteKind::UsageReport => "usage_report",
            RouteKind::AdminAccess => "admin",
            RouteKind::Streams => "streams",
            RouteKind::Unknown => "unknown",
        }
    }
}

/// Per-request state, filled in as the request moves along.
pub struct RequestCtx {
    /// The id echoed to the client and sent upstream.
    pub request_id: RequestId,
    /// When the request headers were read.
    pub started: Instant,
    /// The same moment as unix microseconds, for the ledger.
    pub started_unix_us: i64,
    /// Model label for metrics: a configured name, `*`, or `-` when unknown.
    pub model_label: String,
    /// The status sent to the client.
    pub status: u16,
    /// The stream id of a forwarded request, sent as `x-sluice-stream-id`.
    pub stream_id: Option<String>,
}

/// The sluice HTTP application; one instance serves every connection.
pub struct Gateway {
    /// Model name to upstream.
    pub(crate) router: Router,
    /// Keys, quotas, budgets.
    pub(crate) access: Access,
    /// Prices and the usage ledger.
    pub(crate) accounting: Arc<Accounting>,
    /// Configured model names (to validate budgets created at run time).
    pub(crate) model_names: Vec<String>,
    /// Connections to upstreams, one peer per router target.
    pub(crate) upstreams: UpstreamPool,
    /// Largest accepted request body.
    pub(crate) max_body_bytes: usize,
    /// Every metric.
    pub(crate) metrics: Arc<Metrics>,
    /// Live streams, node slots, cross-node control.
    pub(crate) streams: crate::streams::StreamControl,
    /// Set once the server is up; read by `/health/ready`.
    ready: Arc<AtomicBool>,
    /// `GET /v1/models`, rendered once from config.
    models_body: Bytes,
    /// h2c on, for pingora.
    server_options: HttpServerOptions,
}

impl Gateway {
    /// Builds the gateway for a validated config.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        accounting: Arc<Accounting>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let router = Router::new(config);
        let model_names: Vec<String> = config.models.iter().map(|m| m.name.clone()).collect();
        let upstreams = UpstreamPool::new(router.targets());
        let models_body = render_models(router.listed_models());
        let mut server_options = HttpServerOptions::default();
        server_options.h2c = true;
        Gateway {
            access: Access::new(
                &config.access,
                accounting.store().cloned().map(|store| {
                    Arc::new(crate::admin_keys::DbKeys {
                        store,
                        runtime: accounting.handle(),
                        models: Arc::new(model_names.clone()),
                    }) as Arc<dyn sluice_filters::KeySource>
                }),
            ),
            streams: crate::streams::StreamControl::new(
                &config.streams,
                config.access.redis_url.as_ref().map(|u| u.expose()),
                &accounting.handle(),
            ),
            model_names,
            accounting,
            router,
            upstreams,
            max_body_bytes: config.server.max_body_bytes,
            metrics,
            ready,
            models_body,
            server_options,
        }
    }

    async fn serve(&self, session: &mut ServerSession, route: RouteKind, ctx: &mut RequestCtx) {
        let result = match route {
            RouteKind::Forward(endpoint) => self.forward(session, endpoint, ctx).await,
            RouteKind::Models => self.models(session, ctx).await,
            // Cold paths, boxed so that their (database) futures do not
            // swell the state every forwarded request carries.
            RouteKind::UsageReport => Box::pin(self.usage_report(session, ctx)).await,
            RouteKind::AdminAccess => Box::pin(self.admin_access(session, ctx)).await,
            RouteKind::Streams => Box::pin(self.stream_api(session, ctx)).await,
            RouteKind::Live => {
                self.respond(
                    session,
                    ctx,
                    200,
                    "application/json",
                    Bytes::from_static(b"{\"status\":\"ok\"}"),
                )
                .await;
                Ok(())
            }
            RouteKind::Ready => {
                let (status, body) = if self.ready.load(Ordering::Acquire) {
                    (200, &b"{\"status\":\"ready\"}"[..])
                } else {
                    (503, &b"{\"status\":\"starting\"}"[..])
                };
                self.respond(
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
                if let Some(up) = self.access.quotas.store_up() {
                    self.metrics.quota_store_up.set(i64::from(up));
                }
                for target in self.router.targets() {
                    self.metrics
                        .upstream_breaker_state
                        .with_label_values(&[target.settings.name.as_str()])
                        .set(target.health.breaker_state().as_gauge());
                }
                self.observe_streams();
                if let Some(stats) = self.accounting.stats() {
                    self.metrics.observe_ledger(&stats);
                }
                let errors = self.access.quotas.store_errors();
                let seen = self.metrics.quota_store_errors.get();
                self.metrics
                    .quota_store_errors
                    .inc_by(errors.saturating_sub(seen));
                match self.metrics.render() {
                    Ok(text) => {
                        self.respond(session, ctx, 200, "text/plain; version=0.0.4", text.into())
                            .await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot render metrics");
                        self.respond(
                            session,
                            ctx,
                            500,
                            "text/plain",
                            Bytes::from_static(b"metrics unavailable"),
                        )
                        .await
                    }
                }
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
                self.respond_error(session, ctx, &error).await;
            }
        }
    }

    /// Sends a complete response with a known length.
    pub(crate) async fn respond(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        status: u16,
        content_type: &'static str,
        body: Bytes,
    ) {
        ctx.status = status;
        let header = match self.response_header(ctx, status) {
            Ok(mut h) => {
                let _ = h.insert_header("content-type", content_type);
                let _ = h.insert_header("content-length", body.len());
                h
            }
            Err(_) => return,
        };
        if session
            .write_response_header(Box::new(header))
            .await
            .is_err()
        {
            return;
        }
        let _ = session.write_response_body(body, true).await;
    }

    /// `GET /v1/models`: every configured model, or the caller key's allowed ones.
    async fn models(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let key = self.access.identify(session).await?;
        let body = match key.as_ref().and_then(|k| k.models.as_ref()) {
            None => self.models_body.clone(),
            Some(allowed) => {
                let names: Vec<String> = self
                    .router
                    .listed_models()
                    .iter()
                    .filter(|m| allowed.contains(m))
                    .cloned()
                    .collect();
                render_models(&names)
            }
        };
        self.respond(session, ctx, 200, "application/json", body)
            .await;
        Ok(())
    }

    /// Sends `error` as OpenAI's error body with its status and headers.
    pub(crate) async fn respond_error(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        error: &GatewayError,
    ) {
        ctx.status = error.status();
        let Ok(mut header) = self.response_header(ctx, ctx.status) else {
            return;
        };
        let body = error.body();
        let _ = header.insert_header("content-type", "application/json");
        let _ = header.insert_header("content-length", body.len());
        for (name, value) in error.headers() {
            let _ = header.insert_header(name, value);
        }
        if session
            .write_response_header(Box::new(header))
            .await
            .is_ok()
        {
            let _ = session.write_response_body(body, true).await;
        }
    }

    /// A response header with sluice's own headers on it.
    pub(crate) fn response_header(
        &self,
        ctx: &RequestCtx,
        status: u16,
    ) -> pingora::Result<ResponseHeader> {
        // No case map: header names go out lower-case (HTTP/2 requires it,
        // HTTP/1.1 ignores case), and every insert skips a second map.
        // Room for a typical upstream's headers plus sluice's own.
        let mut header = ResponseHeader::build_no_case(status, Some(16))?;
        header.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(id) = &ctx.stream_id {
            header.insert_header("x-sluice-stream-id", id.as_str())?;
        }
        Ok(header)
    }

    fn observe(&self, route: RouteKind, ctx: &RequestCtx) {
        let status = status_label(ctx.status);
        let labels = [route.label(), ctx.model_label.as_str(), status];
        self.metrics.requests.with_label_values(&labels).inc();
        self.metrics
            .request_duration
            .with_label_values(&labels)
            .observe(ctx.started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The client closed an idle keep-alive connection, or sent garbage.
            Ok(false) | Err(_) => return None,
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
        let route = RouteKind::classify(&header.method, header.uri.path());
        let mut ctx = RequestCtx {
            request_id: RequestId::accept_or_mint(
                session.get_header("x-request-id").map(|v| v.as_bytes()),
            ),
            started: Instant::now(),
            started_unix_us: sluice_ledger::unix_micros_now(),
            model_label: "-".to_string(),
            status: 0,
            stream_id: None,
        };
        let span = tracing::info_span!(
            "request",
            request_id = %ctx.request_id,
            route = route.label(),
            model = tracing::field::Empty,
            tenant = tracing::field::Empty,
            priority = tracing::field::Empty,
            key = tracing::field::Empty,
            upstream = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let in_flight = self.metrics.in_flight.with_label_values(&[route.label()]);
        in_flight.inc();
        self.serve(&mut session, route, &mut ctx)
            .instrument(span.clone())
            .await;
        span.record("status", ctx.status);
        self.observe(route, &ctx);
        // After observing, so a scrape that sees no request in flight sees its metrics.
        in_flight.dec();

        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, persistent)),
            _ => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.server_options)
    }
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

fn render_models(names: &[String]) -> Bytes {
    let data: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "sluice"})
        })
        .collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_routes() {
        use http::Method;
        assert_eq!(
            RouteKind::classify(&Method::POST, "/v1/chat/completions"),
            RouteKind::Forward(Endpoint::ChatCompletions)
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/v1/chat/completions"),
            RouteKind::Unknown
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/v1/models/"),
            RouteKind::Models
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/health/ready?x"),
            RouteKind::Ready
        );
        assert_eq!(
            RouteKind::classify(&Method::POST, "/v1/streams/st_1/cancel"),
            RouteKind::Streams
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/v1/streams"),
            RouteKind::Streams
        );
        assert_eq!(
            RouteKind::classify(&Method::DELETE, "/health"),
            RouteKind::Unknown
        );
    }

    #[test]
    fn models_list_has_openai_shape() {
        let body = render_models(&["a".into(), "b".into()]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["id"], "b");
        assert_eq!(v["data"][0]["object"], "model");
    }
}
