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

/// Sends `error` with its status and headers, its body in the client's
/// dialect (OpenAI's error shape, or Anthropic's on `/v1/messages`).
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
        ctx.dialect.error_body(error),
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

/// `error` as a whole HTTP/1.1 response that closes the connection, for
/// refusals made before an HTTP session exists (a connection over its cap,
/// a client that never sent a request).
pub fn raw_error(error: &GatewayError) -> Vec<u8> {
    let status = error.status();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = error.body();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in error.headers() {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(&value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// How a body of unknown length (a stream) is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownLength {
    /// HTTP/2 frames it itself.
    Http2,
    /// HTTP/1.1: `transfer-encoding: chunked`.
    Chunked,
    /// HTTP/1.0: the body ends when the connection closes (RFC 9112 §6.1
    /// forbids sending chunked to a 1.0 client).
    CloseDelimited,
}

impl UnknownLength {
    /// The framing `session`'s client understands; a close-delimited body
    /// turns keep-alive off, since closing is what ends it.
    pub fn choose(session: &mut ServerSession) -> Self {
        if session.is_http2() {
            UnknownLength::Http2
        } else if session.req_header().version == http::Version::HTTP_10 {
            session.set_keepalive(None);
            UnknownLength::CloseDelimited
        } else {
            UnknownLength::Chunked
        }
    }

    /// Adds what the framing needs to `header`.
    pub fn apply(self, header: &mut ResponseHeader) -> pingora::Result<()> {
        if self == UnknownLength::Chunked {
            header.insert_header("transfer-encoding", "chunked")?;
        }
        Ok(())
    }
}
