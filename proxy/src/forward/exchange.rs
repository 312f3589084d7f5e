//! The HTTP answer source's exchange: the upstream request header built
//! from the client's and the adapter's, sent through pingora's pooled
//! connector, read up to the response headers within the attempt's time.

use super::attempt_error::{AttemptError, AttemptErrorKind};
use super::Services;
use crate::downstream::RequestCtx;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::ErrorType;
use sluice_providers::openai::CLIENT_HEADERS_NOT_FORWARDED;
use sluice_providers::{Candidate, Provider, UpstreamRequest, UpstreamTarget};
use std::time::Duration;

/// One HTTP attempt: what goes where.
pub struct HttpAttempt<'a> {
    /// The candidate tried.
    pub candidate: &'a Candidate<'a>,
    /// Its target.
    pub target: &'a UpstreamTarget,
    /// The target's adapter, fetched once for the whole request.
    pub provider: &'a Provider,
    /// The client's request header (headers forwarded to compatible upstreams).
    pub client: &'a RequestHeader,
    /// The request's id, sent upstream.
    pub rctx: &'a RequestCtx,
    /// What the adapter built.
    pub outgoing: &'a UpstreamRequest,
}

/// Sends the attempt's request and reads the response header within
/// `budget`. A pooled connection the upstream has quietly closed is retried
/// once on a fresh one, with the request header built anew (pingora keeps
/// the header it sent, so building again beats copying every time).
pub async fn send(
    services: &Services,
    attempt: &HttpAttempt<'_>,
    budget: Duration,
) -> Result<HttpSession, AttemptError> {
    let HttpAttempt {
        candidate,
        target,
        provider,
        client,
        rctx,
        outgoing,
    } = *attempt;
    let name = target.settings.name.as_str();
    let unbuildable = || {
        AttemptError::new(
            name,
            AttemptErrorKind::Broken("could not build the upstream request"),
        )
    };
    let peer = services
        .upstreams
        .peer(candidate.target)
        .await
        .map_err(|why| AttemptError::new(name, AttemptErrorKind::Connect(why)))?;
    let first_byte = target.settings.first_byte_timeout.min(budget);
    let mut retried = false;
    loop {
        let header =
            upstream_request(client, provider, rctx, outgoing).map_err(|_| unbuildable())?;
        let (mut upstream, reused) = services
            .upstreams
            .session(peer)
            .await
            .map_err(|e| AttemptError::from_pingora(name, &e, false))?;
        upstream.set_read_timeout(Some(first_byte));
        upstream.set_write_timeout(Some(first_byte));
        let sent = async {
            upstream.write_request_header(Box::new(header)).await?;
            upstream
                .write_request_body(outgoing.body.clone(), true)
                .await?;
            upstream.finish_request_body().await?;
            upstream.read_response_header().await
        }
        .await;
        match sent {
            Ok(()) => return Ok(upstream),
            Err(e) if reused && !retried && !is_timeout(e.etype()) => {
                tracing::debug!(error = %e, "pooled upstream connection was stale; retrying on a new one");
                upstream.shutdown().await;
                retried = true;
            }
            Err(e) => {
                upstream.shutdown().await;
                return Err(AttemptError::from_pingora(name, &e, false));
            }
        }
    }
}

fn is_timeout(kind: &ErrorType) -> bool {
    matches!(
        kind,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// The request header sent upstream: for OpenAI-compatible upstreams the
/// client's headers minus hop-by-hop and credential headers; with the
/// `otel` feature exporting, sluice's `traceparent`; then the adapter's own
/// (credentials, version, signature).
fn upstream_request(
    client: &RequestHeader,
    provider: &Provider,
    rctx: &RequestCtx,
    outgoing: &UpstreamRequest,
) -> pingora::Result<RequestHeader> {
    let mut request = RequestHeader::build_no_case(
        outgoing.method.clone(),
        outgoing.path_and_query.as_bytes(),
        Some(client.headers.len() + outgoing.headers.len() + 3),
    )?;
    if outgoing.forward_client_headers {
        for (name, value) in client.headers.iter() {
            if CLIENT_HEADERS_NOT_FORWARDED.contains(&name.as_str()) || name == "x-request-id" {
                continue;
            }
            request.append_header(name.clone(), value.clone())?;
        }
    }
    request.insert_header("host", provider.host_header())?;
    request.insert_header("content-length", outgoing.body.len())?;
    request.insert_header("x-request-id", rctx.request_id.as_str())?;
    // The request span's context in place of the client's (whose trace it continues).
    #[cfg(feature = "otel")]
    crate::ops::otel::inject(&mut request)?;
    for (name, value) in &outgoing.headers {
        request.insert_header(name.clone(), value.clone())?;
    }
    Ok(request)
}
