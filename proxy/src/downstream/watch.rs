//! Noticing that a client has left while sluice waits on an upstream, so
//! the upstream call is dropped at once rather than at the next write.

use pingora::protocols::http::ServerSession;

/// What the client did while sluice waited on the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// Its connection closed.
    Gone,
    /// It sent more bytes (a pipelining client is not a leaving one): stop watching.
    SentMore,
}

/// Watches the client's side of the connection once its request is read;
/// resolves when the client closes or sends more bytes.
pub async fn client_event(session: &mut ServerSession) -> ClientEvent {
    match session.read_body_or_idle(true).await {
        Err(_) => ClientEvent::Gone,
        Ok(_) => ClientEvent::SentMore,
    }
}
