//! The connection layer in front of the [`Gateway`](super::Gateway) (one per listener):
//! what happens between `accept` and a request header, where pingora itself
//! sets no deadline.
//!
//! - **Caps**: at most `server.max_connections` open client connections,
//!   and `server.max_connections_per_client` from one IP address; one more
//!   is answered 503 with `retry-after` and closed.
//! - **Deadlines**: a connection must send its first byte (and, with h2c,
//!   the HTTP/2 preface) within `server.header_timeout_ms`, or it is
//!   answered 408; with `server.tls`, it must finish the TLS handshake
//!   within the same time, or it is closed; an idle keep-alive connection is closed after
//!   `server.keepalive_timeout_s`; the header deadline itself is the
//!   gateway's ([`Gateway::serve_one`](super::Gateway::serve_one)).
//!
//! Pingora's own `ServerApp` for an `HttpServerApp` waits for 24 bytes of a
//! possible h2c preface with no deadline, so a client sending fewer bytes
//! was held forever; this layer sniffs the protocol from the first bytes
//! under a deadline, runs HTTP/1.1 keep-alive itself, and hands HTTP/2
//! connections to pingora's once the preface is already buffered. With
//! TLS the edge runs the handshake (see [`crate::tls`] for why not
//! pingora's listener) and ALPN, not sniffing, picks h2 or HTTP/1.1.

use super::listeners::ListenerApp;
use super::Reuse;
use crate::downstream::respond::raw_error;
use crate::error::GatewayError;
use crate::ops::Metrics;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use prometheus::IntGauge;
use sluice_config::EdgeLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a refused connection's request is read and discarded after the
/// answer, so closing does not reset the answer away (a lingering close).
const LINGER: Duration = Duration::from_millis(500);

/// The pingora application: caps and deadlines, then the gateway.
pub struct Edge {
    /// The gateway as this listener serves it.
    app: Arc<ListenerApp>,
    limits: EdgeLimits,
    h2c: bool,
    gate: ConnectionGate,
    metrics: Arc<Metrics>,
    /// `server.tls`: the handshake every admitted connection goes through.
    tls: Option<Arc<Acceptor>>,
}

impl Edge {
    /// Puts the edge in front of one listener's `app`.
    pub fn new(app: ListenerApp, limits: EdgeLimits) -> Self {
        let gateway = app.gateway();
        let metrics = gateway.services.metrics.clone();
        Edge {
            h2c: gateway.server_options.h2c,
            app: Arc::new(app),
            gate: ConnectionGate::new(&limits, metrics.edge.open.clone()),
            limits,
            metrics,
            tls: None,
        }
    }

    /// Serves HTTPS: every connection's TLS handshake through `acceptor`.
    pub fn with_tls(mut self, acceptor: Option<Arc<Acceptor>>) -> Self {
        self.tls = acceptor;
        self
    }

    /// Runs the TLS handshake on a plain TCP connection under the header
    /// deadline; `None` when it failed or was too slow (counted, closed).
    async fn handshake(&self, acceptor: &Acceptor, stream: Stream) -> Option<Stream> {
        let failures = &self.metrics.edge.tls_handshake_failures;
        // The listener is plain TCP (`Service::add_tcp`), so this is pingora's
        // L4 stream; the acceptor needs the concrete type.
        let Ok(tcp) = stream
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
        else {
            tracing::error!("TLS configured on a listener that is not plain TCP");
            return None;
        };
        match tokio::time::timeout(self.limits.header_timeout, acceptor.tls_handshake(*tcp)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                failures.with_label_values(&["error"]).inc();
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                failures.with_label_values(&["timeout"]).inc();
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }

    /// Answers `error` on a connection with no HTTP session yet, then closes it.
    async fn refuse(&self, mut stream: Stream, error: &GatewayError, linger: bool) {
        let _ = stream.write_all(&raw_error(error)).await;
        let _ = stream.flush().await;
        if linger {
            let mut sink = [0u8; 4096];
            let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(LINGER, drain).await;
        }
        let _ = stream.shutdown().await;
    }

    /// HTTP/1.x: one request after another on the connection, each idle
    /// wait bounded by the keep-alive timeout.
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        let keepalive = if *shutdown.borrow() {
            None
        } else {
            Some(self.limits.keepalive_timeout.as_secs())
        };
        session.set_keepalive(keepalive);
        let mut next = self.app.serve_one(session, shutdown).await;
        while let Some(Reuse {
            mut stream,
            prefix,
            settings,
        }) = next
        {
            let mut prefix = prefix;
            if prefix.as_ref().is_none_or(|p| p.is_empty()) {
                // Nothing buffered: wait (bounded) for the next request's first byte.
                let idle = self.limits.keepalive_timeout;
                match tokio::time::timeout(idle, next_byte(&mut stream)).await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(byte))) => prefix = Some(BytesMut::from(&[byte][..])),
                    // Closed by the client, or idle too long: close quietly,
                    // as keep-alive allows.
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            let mut session = ServerSession::new_http1(stream);
            settings.apply_to_session(&mut session);
            if let Some(prefix) = prefix {
                session.set_pipelined_prefix(prefix);
            }
            next = self.app.serve_one(session, shutdown).await;
        }
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _permit = match self.gate.admit(client) {
            Ok(permit) => permit,
            Err(refusal) => {
                self.metrics
                    .edge
                    .refused
                    .with_label_values(&[refusal.label()])
                    .inc();
                let error = GatewayError::TooManyConnections {
                    per_client: refusal == Refusal::PerClient,
                };
                self.refuse(stream, &error, true).await;
                return None;
            }
        };

        if let Some(acceptor) = &self.tls {
            stream = self.handshake(acceptor, stream).await?;
        }
        let h2 = if stream.get_ssl_digest().is_some() {
            matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
        } else {
            let sniff = sniff_protocol(&mut stream, self.h2c);
            match tokio::time::timeout(self.limits.header_timeout, sniff).await {
                Ok(Ok(Some(h2))) => h2,
                // The client closed before sending anything.
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => {
                    self.metrics
                        .edge
                        .timeouts
                        .with_label_values(&["preface"])
                        .inc();
                    let error = GatewayError::RequestTimeout { phase: "header" };
                    self.refuse(stream, &error, false).await;
                    return None;
                }
            }
        };
        if h2 {
            // Pingora's HTTP/2 server: its own preface check now finds the
            // preface already buffered.
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        self.serve_http1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.app).await;
    }
}

/// Waits for the next request's first byte on a kept-alive connection:
/// peeked where the stream allows (plain TCP: `None`, the byte stays in the
/// stream), else read and returned (TLS cannot un-read decrypted bytes; the
/// caller hands the byte on as the next request's prefix).
async fn next_byte(stream: &mut Stream) -> std::io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    if stream.try_peek(&mut byte).await? {
        return Ok(None);
    }
    match stream.read(&mut byte).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(Some(byte[0])),
    }
}

/// Waits for the first bytes: `Some(true)` for the h2c preface, `Some(false)`
/// for anything else (HTTP/1.x), `None` when the client closed first.
///
/// Peeking one byte cannot lose data when the deadline cancels it: the
/// read either took that byte (and put it back) or nothing. Only a request
/// starting with `P` needs more, and only `PRI` needs the whole preface; a
/// client cancelled inside those reads is closed anyway.
async fn sniff_protocol(stream: &mut Stream, h2c: bool) -> std::io::Result<Option<bool>> {
    let mut first = [0u8; 1];
    match stream.try_peek(&mut first).await {
        Ok(true) => {}
        // Not peekable: let pingora decide, as it would.
        Ok(false) => return Ok(Some(h2c)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if !h2c || first[0] != b'P' {
        return Ok(Some(false));
    }
    let mut method = [0u8; 3];
    stream.try_peek(&mut method).await?;
    if &method != b"PRI" {
        return Ok(Some(false));
    }
    let mut preface = [0u8; H2_PREFACE.len()];
    stream.try_peek(&mut preface).await?;
    Ok(Some(preface == H2_PREFACE))
}

/// Why a connection was refused at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `server.max_connections` are open.
    Total,
    /// `server.max_connections_per_client` are open from this address.
    PerClient,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerClient => "max_connections_per_client",
        }
    }
}

/// Counts open connections, in all and per client address.
struct ConnectionGate {
    open: AtomicUsize,
    /// `sluice_connections_open`.
    open_gauge: IntGauge,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    max_per_client: usize,
}

/// One admitted connection; dropping it frees its place.
struct Permit<'g> {
    gate: &'g ConnectionGate,
    client: Option<IpAddr>,
}

impl ConnectionGate {
    fn new(limits: &EdgeLimits, open_gauge: IntGauge) -> Self {
        ConnectionGate {
            open: AtomicUsize::new(0),
            open_gauge,
            per_client: Mutex::new(HashMap::new()),
            max: limits.max_connections,
            max_per_client: limits.max_connections_per_client,
        }
    }

    fn admit(&self, client: Option<IpAddr>) -> Result<Permit<'_>, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        if let Some(ip) = client {
            let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_client.entry(ip).or_insert(0);
            if *count >= self.max_per_client {
                drop(per_client);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerClient);
            }
            *count += 1;
        }
        self.open_gauge.inc();
        Ok(Permit { gate: self, client })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.client {
            let mut per_client = self
                .gate
                .per_client
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_client.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_client.remove(&ip);
                }
            }
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        self.gate.open_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, max_per_client: usize) -> ConnectionGate {
        ConnectionGate::new(
            &EdgeLimits {
                max_connections: max,
                max_connections_per_client: max_per_client,
                ..EdgeLimits::default()
            },
            IntGauge::new("open", "open").unwrap(),
        )
    }

    #[test]
    fn per_client_cap_leaves_room_for_others() {
        let gate = gate(10, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let _a1 = gate.admit(Some(a)).unwrap();
        let _a2 = gate.admit(Some(a)).unwrap();
        assert_eq!(gate.admit(Some(a)).err(), Some(Refusal::PerClient));
        assert!(gate.admit(Some(b)).is_ok());
    }

    #[test]
    fn total_cap_and_release() {
        let gate = gate(2, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let first = gate.admit(Some(a)).unwrap();
        let _second = gate.admit(None).unwrap();
        assert_eq!(gate.admit(None).err(), Some(Refusal::Total));
        drop(first);
        assert!(gate.admit(Some(a)).is_ok());
        assert_eq!(gate.open.load(Ordering::Acquire), 1);
        assert!(gate.per_client.lock().unwrap().is_empty());
    }
}
