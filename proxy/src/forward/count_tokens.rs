//! `POST /v1/messages/count_tokens`, Anthropic's token count: asked of the
//! first Anthropic upstream in the model's chain (the client's body as
//! sent, the answer relayed as it came), else counted here with tiktoken's
//! encoding for the model over the request converted to chat (an estimate
//! for models tokenized otherwise). Costs nothing, so nothing is recorded;
//! the key and the model allow-list still apply.

use super::exchange::{self, HttpAttempt};
use super::Services;
use crate::downstream::respond::respond;
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;
use sluice_providers::dialects::{messages, ClientDialect};
use sluice_providers::RoutingFields;

/// Largest count reply read from an upstream.
const MAX_REPLY: usize = 64 * 1024;

/// Serves one count request.
pub async fn serve(
    services: &Services,
    session: &mut ServerSession,
    rctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let key = services
        .access
        .identify(&session.req_header().headers)
        .await?;
    let body =
        crate::downstream::body::read_body(session, services.max_body_bytes, rctx.body_timeout)
            .await?;
    let fields = RoutingFields::parse(&body)?;
    let route = services.router.resolve(&fields.model)?;
    if key.as_ref().is_some_and(|k| !k.allows_model(&fields.model)) {
        return Err(GatewayError::Auth(
            sluice_filters::AuthError::ModelNotAllowed {
                model: fields.model.clone(),
            },
        ));
    }
    rctx.model_label = route.model_label.to_string();
    let candidates = services.router.plan(&route);
    for candidate in &candidates {
        let target = &services.router.targets()[candidate.target];
        let provider = target.provider();
        if services.local[candidate.target].is_some()
            || !provider.speaks(ClientDialect::CountTokens)
        {
            continue;
        }
        let upstream_model = candidate.upstream_model(&fields.model);
        let Some(outgoing) =
            provider.native_request(ClientDialect::CountTokens, &body, &fields, upstream_model)
        else {
            continue;
        };
        let attempt = HttpAttempt {
            candidate,
            target,
            provider: &provider,
            client: session.req_header(),
            rctx,
            outgoing: &outgoing,
        };
        let budget = target.settings.first_byte_timeout;
        let Ok(mut upstream) = exchange::send(services, &attempt, budget).await else {
            continue;
        };
        let status = upstream
            .response_header()
            .map_or(502, |h| h.status.as_u16());
        let mut reply = BytesMut::new();
        while let Ok(Some(piece)) = upstream.read_response_body().await {
            if reply.len() + piece.len() > MAX_REPLY {
                break;
            }
            reply.extend_from_slice(&piece);
        }
        upstream.shutdown().await;
        respond(session, rctx, status, "application/json", reply.freeze()).await;
        return Ok(());
    }
    let chat = messages::count_tokens_to_chat(&body)?;
    let text = String::from_utf8_lossy(&chat);
    let tokens = sluice_ledger::count_tokens(&fields.model, &text);
    let answer = serde_json::json!({ "input_tokens": tokens });
    respond(
        session,
        rctx,
        200,
        "application/json",
        Bytes::from(answer.to_string()),
    )
    .await;
    Ok(())
}
