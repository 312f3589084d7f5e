//! Reading a request body whole, bounded in size, without copying the
//! common one-chunk case.

use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;
use std::time::Duration;

/// Most of an oversized body read and discarded before answering 413.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Longest time spent discarding it.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards what is left of a refused body (bounded in bytes and
/// time), so that a client still uploading reads the 413 instead of a
/// broken pipe; nginx calls this a lingering close.
async fn drain_body(session: &mut ServerSession) {
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_MAX_TIME;
    while drained < DRAIN_MAX_BYTES {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => drained += chunk.len(),
            _ => break,
        }
    }
}

/// Reads the whole request body, refusing more than `limit` bytes, and
/// answering 408 when no byte arrives for `idle` (a slow-loris body).
pub async fn read_body(
    session: &mut ServerSession,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
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
        let chunk = match tokio::time::timeout(idle, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) if *e.etype() == pingora::ErrorType::ReadTimedout => {
                session.set_keepalive(None);
                return Err(GatewayError::RequestTimeout { phase: "body" });
            }
            Ok(Err(_)) => {
                session.set_keepalive(None);
                return Err(GatewayError::BodyRead);
            }
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::RequestTimeout { phase: "body" });
            }
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.as_ref().map_or(0, BytesMut::len);
        if so_far + chunk.len() > limit {
            drain_body(session).await;
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
