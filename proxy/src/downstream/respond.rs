//! Writing a whole answer to the client: sluice's own headers on every
//! response, complete bodies with a known length, and errors as OpenAI's
//! error body (through [`GatewayError`]'s one mapping).

use super::RequestCtx;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

/// A response header with sluice's own headers on it (`x-request-id`, and
/// `x-sluice-stream-id` for forwarded requests).
pub fn response_header(ctx: &RequestCtx, status: u16) -> pingora::Result<ResponseHeader> {
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

/// Sends a complete response with a known length. A client that has left
/// is not an error here: there is nobody to tell.
pub async fn respond(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &'static str,
    body: Bytes,
) {
    respond_with(session, ctx, status, content_type, &[], body).await;
}

/// Sends `error` as OpenAI's error body with its status and headers.
pub async fn respond_error(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    error: &GatewayError,
) {
    let headers = error.headers();
    respond_with(
        session,
        ctx,
        error.status(),
        "application/json",
        &headers,
        error.body(),
    )
    .await;
}

async fn respond_with(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &'static str,
    extra: &[(&'static str, String)],
    body: Bytes,
) {
    ctx.status = status;
    let Ok(mut header) = response_header(ctx, status) else {
        return;
    };
    let _ = header.insert_header("content-type", content_type);
    let _ = header.insert_header("content-length", body.len());
    for (name, value) in extra {
        let _ = header.insert_header(*name, value);
    }
    if session
        .write_response_header(Box::new(header))
        .await
        .is_ok()
    {
        let _ = session.write_response_body(body, true).await;
    }
}
