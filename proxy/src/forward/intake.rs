//! Phase 1, intake: runs first, on a request whose header has been read.
//! Checks the key, reads the body once (bounded), parses its routing fields
//! once, resolves the model to a route and estimates its prompt tokens once.
//! `Err` is the client's answer (401, 400, 404, 413).

use super::{Dialect, Services};
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use sluice_filters::KeyEntry;
use sluice_providers::{Endpoint, Route, RoutingFields};
use std::sync::Arc;

/// Bytes per token for estimates made before the real count is known.
const BYTES_PER_TOKEN: u64 = 4;

/// What intake learned about a request.
pub struct Intake<'r> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The shape the client speaks.
    pub dialect: Dialect,
    /// The presented key, checked; `None` when auth is off.
    pub key: Option<Arc<KeyEntry>>,
    /// The body.
    pub body: Bytes,
    /// Its routing fields.
    pub fields: RoutingFields,
    /// The route of the model asked for.
    pub route: Route<'r>,
    /// Estimated prompt tokens.
    pub prompt_estimate: u64,
}

/// Tokens in `text_len` bytes, estimated (about four bytes a token); the
/// one estimate used for reservations, running costs and stream token counts.
pub fn estimate_tokens(text_len: usize) -> u64 {
    text_len as u64 / BYTES_PER_TOKEN
}

/// Runs intake for a request to `endpoint`.
pub async fn intake<'r>(
    services: &'r Services,
    session: &mut ServerSession,
    endpoint: Endpoint,
    body_timeout: std::time::Duration,
) -> Result<Intake<'r>, GatewayError> {
    let key = services
        .access
        .identify(&session.req_header().headers)
        .await?;
    let body =
        crate::downstream::body::read_body(session, services.max_body_bytes, body_timeout).await?;
    let fields = RoutingFields::parse(&body)?;
    let route = services.router.resolve(&fields.model)?;
    Ok(Intake {
        endpoint,
        dialect: Dialect::of(endpoint),
        key,
        prompt_estimate: estimate_tokens(body.len()),
        body,
        fields,
        route,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bytes_make_a_token() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(7), 1);
        assert_eq!(estimate_tokens(400), 100);
    }
}
