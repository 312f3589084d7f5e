//! Forwarding an OpenAI request upstream and streaming the answer back.
//!
//! The body is read whole (bounded by `server.max_body_bytes`), parsed for
//! routing only, and sent on unchanged but for the model name. The response
//! is relayed piece by piece as the upstream produces it — SSE events reach
//! the client as they arrive, never buffered to the end.

use crate::error::GatewayError;
use crate::gateway::{Gateway, RequestCtx};
use crate::upstream::POOL_IDLE_TIMEOUT;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use sluice_providers::openai::CLIENT_HEADERS_NOT_FORWARDED;
use sluice_providers::{Endpoint, RoutingFields, UpstreamTarget, UsageTracker};
use std::time::Instant;

/// How relaying a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayOutcome {
    /// Every byte reached the client.
    Completed,
    /// The client went away; the upstream call is dropped.
    ClientGone,
    /// The upstream failed part-way.
    UpstreamBroke,
}

/// Response headers that describe one hop, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "te",
];

impl Gateway {
    /// Serves one forwarded endpoint. On `Err` nothing has been written to the
    /// client unless `session.response_written()` says so.
    pub(crate) async fn forward(
        &self,
        session: &mut ServerSession,
        endpoint: Endpoint,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let key = self.access.identify(session).await?;
        let body = read_body(session, self.max_body_bytes).await?;
        let fields = RoutingFields::parse(&body)?;
        let route = self.router.resolve(&fields.model)?;
        // A rough prompt-token estimate (4 bytes a token) for the reservation;
        // it is settled on the real usage.
        let prompt_estimate = body.len() as u64 / 4;
        let mut caller = self
            .access
            .admit(
                session,
                key,
                &fields.model,
                prompt_estimate,
                fields.max_tokens,
            )
            .await?;
        ctx.model_label = route.model_label.to_string();
        let target = &self.router.targets()[route.target];
        let span = tracing::Span::current();
        if let Some(key) = &caller.key {
            span.record("tenant", key.tenant.as_str());
            span.record("key", key.key_id.as_str());
        }
        span.record("priority", caller.priority.as_str());
        span.record("model", route.model_label);
        span.record("upstream", target.settings.name.as_str());

        let (upstream_body, asked_usage) = fields.body_for_upstream(&body, route.upstream_model);
        let request = upstream_request(session, target, endpoint, ctx, upstream_body.len())
            .map_err(|_| unavailable(target, "could not build the upstream request"))?;
        let peer = self.upstreams.peer(route.target).await?;
        let connector = &self.upstreams.connector;

        let sent = Instant::now();
        let mut upstream = self
            .exchange(connector, peer, target, &request, &upstream_body)
            .await?;
        self.metrics
            .upstream_first_byte
            .with_label_values(&[target.settings.name.as_str()])
            .observe(sent.elapsed().as_secs_f64());

        let Some(upstream_header) = upstream.response_header() else {
            return Err(unavailable(target, "no response header"));
        };
        let is_sse = upstream_header
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let mut header = self
            .client_response_header(upstream_header, ctx, session.is_http2())
            .map_err(|_| unavailable(target, "invalid response header"))?;
        if let Some(admission) = &caller.admission {
            for (name, value) in crate::error::rate_limit_headers(admission.status()) {
                let _ = header.insert_header(name, value);
            }
        }
        ctx.status = header.status.as_u16();
        if session
            .write_response_header(Box::new(header))
            .await
            .is_err()
        {
            // The client left before the answer: drop the upstream call too.
            upstream.shutdown().await;
            return Ok(());
        }

        upstream.set_read_timeout(Some(target.settings.idle_timeout));
        let mut tracker = UsageTracker::new(is_sse, asked_usage);
        let outcome = self
            .relay_body(session, &mut upstream, &mut tracker, target, is_sse)
            .await;
        if outcome == RelayOutcome::Completed && upstream.response_done() {
            connector
                .release_http_session(upstream, peer, Some(POOL_IDLE_TIMEOUT))
                .await;
        } else {
            upstream.shutdown().await;
        }
        let used = tracker
            .reported()
            .map(|u| u.prompt_tokens + u.completion_tokens);
        if let (Some(admission), Some(used)) = (caller.admission.as_mut(), used) {
            admission.settle(used);
        }
        Ok(())
    }

    /// Relays the response body to the client piece by piece, through the
    /// usage tracker. A broken upstream ends an SSE stream with an OpenAI
    /// error event; a broken plain body closes the client connection.
    async fn relay_body(
        &self,
        session: &mut ServerSession,
        upstream: &mut HttpSession,
        tracker: &mut UsageTracker,
        target: &UpstreamTarget,
        is_sse: bool,
    ) -> RelayOutcome {
        loop {
            match upstream.read_response_body().await {
                Ok(Some(chunk)) => {
                    let out = tracker.relay(chunk);
                    if session.write_response_body(out, false).await.is_err() {
                        return RelayOutcome::ClientGone;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let error = self.upstream_failure(target, &e, "reading the response body");
                    tracing::warn!(error = %e, "upstream broke off mid-response");
                    let rest = tracker.finish();
                    if is_sse {
                        // Headers are gone already: end the stream with an
                        // OpenAI error event the SDK raises, then [DONE].
                        let _ = session.write_response_body(rest, false).await;
                        let _ = session.write_response_body(error.sse_event(), true).await;
                    } else {
                        // A truncated JSON body must not look complete: drop
                        // the connection so the client sees the failure.
                        session.set_keepalive(None);
                        session.shutdown().await;
                    }
                    return RelayOutcome::UpstreamBroke;
                }
            }
        }
        let rest = tracker.finish();
        if session.write_response_body(rest, true).await.is_err() {
            return RelayOutcome::ClientGone;
        }
        RelayOutcome::Completed
    }

    /// Sends the request and reads the response header. A pooled connection
    /// the upstream has quietly closed is retried once on a fresh one; any
    /// other failure is final.
    async fn exchange(
        &self,
        connector: &Connector,
        peer: &HttpPeer,
        target: &UpstreamTarget,
        request: &RequestHeader,
        body: &Bytes,
    ) -> Result<HttpSession, GatewayError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut upstream, reused) = connector
                .get_http_session(peer)
                .await
                .map_err(|e| self.upstream_failure(target, &e, "connecting"))?;
            upstream.set_read_timeout(Some(target.settings.first_byte_timeout));
            upstream.set_write_timeout(Some(target.settings.first_byte_timeout));
            let sent = async {
                upstream
                    .write_request_header(Box::new(request.clone()))
                    .await?;
                upstream.write_request_body(body.clone(), true).await?;
                upstream.finish_request_body().await?;
                upstream.read_response_header().await
            }
            .await;
            match sent {
                Ok(()) => return Ok(upstream),
                Err(e) if reused && attempt == 1 && !is_timeout(e.etype()) => {
                    tracing::debug!(error = %e, "pooled upstream connection was stale; retrying on a new one");
                    upstream.shutdown().await;
                }
                Err(e) => {
                    upstream.shutdown().await;
                    return Err(self.upstream_failure(
                        target,
                        &e,
                        "waiting for the response header",
                    ));
                }
            }
        }
    }

    /// Classifies a pingora error into what the client sees, counting it.
    fn upstream_failure(
        &self,
        target: &UpstreamTarget,
        error: &pingora::Error,
        phase: &'static str,
    ) -> GatewayError {
        let upstream = target.settings.name.clone();
        let failure = if is_timeout(error.etype()) {
            GatewayError::UpstreamTimeout {
                upstream,
                phase: match error.etype() {
                    ErrorType::ConnectTimedout => "connect",
                    _ if phase == "reading the response body" => "idle between response chunks",
                    _ => "first byte",
                },
            }
        } else {
            GatewayError::UpstreamUnavailable {
                upstream,
                cause: match error.etype() {
                    ErrorType::ConnectRefused => "connection refused",
                    ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert => {
                        "TLS handshake failed"
                    }
                    ErrorType::ConnectError | ErrorType::ConnectNoRoute => "could not connect",
                    _ if phase == "reading the response body" => "connection broke mid-response",
                    _ => "connection failed before a response",
                },
            }
        };
        tracing::debug!(error = %error, phase, "upstream failure");
        self.metrics
            .upstream_errors
            .with_label_values(&[target.settings.name.as_str(), failure.kind()])
            .inc();
        failure
    }

    /// The client's response header: the upstream's status and headers, less
    /// hop-by-hop ones, plus sluice's own.
    fn client_response_header(
        &self,
        upstream: &ResponseHeader,
        ctx: &RequestCtx,
        downstream_h2: bool,
    ) -> pingora::Result<ResponseHeader> {
        let mut header = self.response_header(ctx, upstream.status.as_u16())?;
        let mut has_length = false;
        for (name, value) in upstream.headers.iter() {
            if HOP_BY_HOP.contains(&name.as_str()) || name == "x-request-id" {
                continue;
            }
            has_length |= name == "content-length";
            header.append_header(name.clone(), value.clone())?;
        }
        if !has_length && !downstream_h2 {
            header.insert_header("transfer-encoding", "chunked")?;
        }
        Ok(header)
    }
}

fn is_timeout(kind: &ErrorType) -> bool {
    matches!(
        kind,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

fn unavailable(target: &UpstreamTarget, cause: &'static str) -> GatewayError {
    GatewayError::UpstreamUnavailable {
        upstream: target.settings.name.clone(),
        cause,
    }
}

/// Reads the whole request body, refusing more than `limit` bytes.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = session
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // Unread body bytes would be taken for the next request: close after answering.
        session.set_keepalive(None);
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::BodyRead);
            }
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.as_ref().map_or(0, BytesMut::len);
        if so_far + chunk.len() > limit {
            session.set_keepalive(None);
            return Err(GatewayError::BodyTooLarge { limit });
        }
        // The common case is one chunk: keep it without copying.
        match (&first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(f.len() + chunk.len()));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&chunk);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match rest {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// The request header sent upstream: the client's headers minus hop-by-hop
/// and credential headers, plus the upstream's own.
fn upstream_request(
    session: &ServerSession,
    target: &UpstreamTarget,
    endpoint: Endpoint,
    ctx: &RequestCtx,
    body_len: usize,
) -> pingora::Result<RequestHeader> {
    let client = session.req_header();
    let adapter = &target.adapter;
    let mut request = RequestHeader::build(
        "POST",
        adapter.path(endpoint).as_bytes(),
        Some(client.headers.len() + 4),
    )?;
    for (name, value) in client.headers.iter() {
        if CLIENT_HEADERS_NOT_FORWARDED.contains(&name.as_str()) || name == "x-request-id" {
            continue;
        }
        request.append_header(name.clone(), value.clone())?;
    }
    request.insert_header("host", adapter.host_header())?;
    request.insert_header("content-length", body_len)?;
    request.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (name, value) in adapter.headers() {
        request.insert_header(name.to_string(), value)?;
    }
    Ok(request)
}
