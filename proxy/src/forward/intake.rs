//! Phase 1, intake: runs first, on a request whose header has been read.
//! Checks the key, reads the body once (bounded), converts a body in
//! another client dialect to the chat shape every adapter reads (keeping
//! the original for upstreams that speak it; a Responses request's stored
//! conversation loaded first), parses its routing fields once, resolves the
//! model to a route and estimates its prompt tokens once. `Err` is the
//! client's answer (401, 400, 404, 413).

use super::{Dialect, Services};
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use sluice_filters::KeyEntry;
use sluice_providers::dialects::responses::ResponsesRequest;
use sluice_providers::dialects::{messages, responses, ClientDialect};
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
    /// The client's own body, when its dialect was converted.
    pub native: Option<NativeBody>,
    /// A Responses API request's turn.
    pub turn: Option<ResponsesTurn>,
    /// How long the client took to send the body.
    pub body_wait: std::time::Duration,
}

/// A client's body in a converted dialect, kept as sent for upstreams that
/// speak that dialect themselves.
pub struct NativeBody {
    /// The dialect it is in.
    pub dialect: ClientDialect,
    /// The body as the client sent it.
    pub body: Bytes,
    /// Its routing fields (the model's place in it).
    pub fields: RoutingFields,
}

/// One turn of a Responses API conversation: what its reply is written
/// with and what is stored under its id.
pub struct ResponsesTurn {
    /// The id its response gets (`resp_` and the stream id).
    pub id: String,
    /// The request, parsed.
    pub request: ResponsesRequest,
    /// The items of the conversation before it, oldest first.
    pub history: Vec<serde_json::Value>,
    /// Whether `previous_response_id` named nothing sluice stored (an
    /// upstream that keeps its own state may still know it).
    pub previous_unknown: bool,
}

impl ResponsesTurn {
    /// The items to store under this turn's id once answered: the history,
    /// this request's input, then `output`.
    pub fn conversation(&self, output: &[serde_json::Value]) -> String {
        let items: Vec<&serde_json::Value> = self
            .history
            .iter()
            .chain(&self.request.input_items)
            .chain(output)
            .collect();
        serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_string())
    }
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
    rctx: &crate::downstream::RequestCtx,
) -> Result<Intake<'r>, GatewayError> {
    let dialect = rctx.dialect;
    let body_timeout = rctx.body_timeout;
    let stream_id = rctx.stream_id.as_deref().unwrap_or_default();
    let key = services
        .access
        .identify(&session.req_header().headers)
        .await?;
    let reading = std::time::Instant::now();
    let body =
        crate::downstream::body::read_body(session, services.max_body_bytes, body_timeout).await?;
    let body_wait = reading.elapsed();
    let tenant = key.as_deref().map(|k| k.tenant.as_str());
    let (body, native, turn) = match dialect {
        Dialect::OpenAi => (body, None, None),
        Dialect::Messages => {
            let fields = RoutingFields::parse(&body)?;
            let chat = Bytes::from(messages::to_chat(&body)?);
            let native = NativeBody {
                dialect: ClientDialect::Messages,
                body,
                fields,
            };
            (chat, Some(native), None)
        }
        Dialect::Responses => {
            let fields = RoutingFields::parse(&body)?;
            let turn = responses_turn(services, &body, tenant, stream_id).await?;
            let chat = Bytes::from(responses::to_chat(&body, &turn.history)?);
            let native = NativeBody {
                dialect: ClientDialect::Responses,
                body,
                fields,
            };
            (chat, Some(native), Some(turn))
        }
    };
    let fields = RoutingFields::parse(&body)?;
    let route = services.router.resolve(&fields.model)?;
    Ok(Intake {
        endpoint,
        dialect,
        key,
        prompt_estimate: estimate_tokens(body.len()),
        body,
        fields,
        route,
        native,
        turn,
        body_wait,
    })
}

/// Parses a Responses request and loads the conversation it continues.
async fn responses_turn(
    services: &Services,
    body: &[u8],
    tenant: Option<&str>,
    stream_id: &str,
) -> Result<ResponsesTurn, GatewayError> {
    let request = ResponsesRequest::parse(body)?;
    let mut history = Vec::new();
    let mut previous_unknown = false;
    if let Some(previous) = &request.previous_response_id {
        match services
            .accounting
            .load_conversation(previous, tenant)
            .await?
        {
            Some(items) => {
                history = serde_json::from_str(&items).map_err(|e| {
                    tracing::error!(error = %e, id = %previous, "stored response unreadable");
                    GatewayError::StoredRecordInvalid { what: "response" }
                })?;
            }
            None => previous_unknown = true,
        }
    }
    Ok(ResponsesTurn {
        id: format!("resp_{stream_id}"),
        request,
        history,
        previous_unknown,
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
