//! `GET /v1/streams`, `GET /v1/streams/{id}`, `POST /v1/streams/{id}/{verb}`:
//! the stream control API. Any key of the stream's tenant may call it, and
//! the admin key; another tenant's id answers exactly as an unknown id does.

use super::StreamControl;
use crate::downstream::body::read_body;
use crate::downstream::respond::respond;
use crate::downstream::RequestCtx;
use crate::error::GatewayError;
use pingora::protocols::http::ServerSession;
use sluice_filters::{Command, Viewer};

/// Largest body accepted by a control call (`{"reason": ...}`).
const MAX_CONTROL_BODY: usize = 16 * 1024;

/// Serves one call of the stream control API.
pub async fn serve(
    streams: &StreamControl,
    access: &sluice_filters::AccessPolicy,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let viewer = if access.is_admin(&session.req_header().headers) {
        Viewer::Admin
    } else {
        Viewer::Tenant(
            access
                .identify(&session.req_header().headers)
                .await?
                .map(|k| k.tenant.clone()),
        )
    };
    let header = session.req_header();
    let method = header.method.clone();
    let path = header.uri.path().to_string();
    let rest = path.strip_prefix("/v1/streams").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let body = match (&method, parts.as_slice()) {
        (&http::Method::GET, []) => {
            let mut listed = streams.registry.list(&viewer);
            if let Some(bus) = &streams.bus {
                listed.extend(bus.list(&viewer).await);
            }
            let data: Vec<serde_json::Value> = listed.iter().map(|s| s.to_json()).collect();
            serde_json::json!({"object": "list", "data": data})
        }
        (&http::Method::GET, [id]) => {
            let found = match streams.registry.get(id, &viewer) {
                Some(view) => Some(view),
                None => match &streams.bus {
                    Some(bus) => bus.list(&viewer).await.into_iter().find(|s| s.id == *id),
                    None => None,
                },
            };
            found
                .ok_or_else(|| GatewayError::StreamNotFound { id: id.to_string() })?
                .to_json()
        }
        (&http::Method::POST, [id, verb]) => {
            let Some(command) = Command::parse(verb) else {
                return Err(GatewayError::UnknownRoute {
                    method: method.to_string(),
                    path,
                });
            };
            let reason = control_reason(session, ctx.body_timeout).await?;
            apply(streams, id, &viewer, command, reason)
                .await?
                .to_json()
        }
        _ => {
            return Err(GatewayError::UnknownRoute {
                method: method.to_string(),
                path,
            })
        }
    };
    respond(
        session,
        ctx,
        200,
        "application/json",
        body.to_string().into(),
    )
    .await;
    Ok(())
}

/// Applies `command` to stream `id`, on this node or, through the bus, on
/// the node that holds it.
async fn apply(
    streams: &StreamControl,
    id: &str,
    viewer: &Viewer,
    command: Command,
    reason: Option<String>,
) -> Result<sluice_filters::StreamView, GatewayError> {
    let local = streams
        .registry
        .command(id, viewer, command, reason.clone());
    let found = match (local, &streams.bus) {
        (Some(view), _) => Some(view),
        (None, Some(bus)) => bus.command(id, viewer, command, reason.as_deref()).await,
        (None, None) => None,
    };
    let view = found.ok_or_else(|| GatewayError::StreamNotFound { id: id.to_string() })?;
    tracing::info!(stream = id, command = command.as_str(), node = %view.node, "stream control");
    Ok(view)
}

/// The optional `{"reason": "..."}` of a control call.
async fn control_reason(
    session: &mut ServerSession,
    idle: std::time::Duration,
) -> Result<Option<String>, GatewayError> {
    let body = read_body(session, MAX_CONTROL_BODY, idle).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| GatewayError::BadQuery {
            message: format!("The body must be JSON such as {{\"reason\": \"...\"}}: {e}"),
        })?;
    Ok(value
        .get("reason")
        .and_then(|r| r.as_str())
        .map(|r| r.chars().take(200).collect()))
}
