//! The client side of the edge: open connections, and what the edge
//! refused before any route saw a request (caps, deadlines, unreadable
//! headers), and the listener's TLS: handshakes that failed, certificate
//! reloads and expiry.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Connection series.
pub struct EdgeMetrics {
    /// Client connections open now.
    pub open: IntGauge,
    /// Connections answered 503 and closed at once, by reason:
    /// `max_connections`, `max_connections_per_client`.
    pub refused: IntCounterVec,
    /// Clients too slow to send, by phase: `preface`, `header`, `body`.
    pub timeouts: IntCounterVec,
    /// Request headers that could not be accepted, by reason:
    /// `too_many_headers`, `header_too_large`, `bad_framing`.
    pub unreadable: IntCounterVec,
    /// TLS handshakes that did not finish, by reason: `timeout`, `error`.
    pub tls_handshake_failures: IntCounterVec,
    /// Certificate file checks that re-read something, by outcome:
    /// `reloaded`, `refused` (the old certificate kept serving).
    pub tls_reloads: IntCounterVec,
    /// When each served certificate expires, in Unix seconds (its
    /// `notAfter`), by name: `default` or the SNI hostname.
    pub tls_expiry: IntGaugeVec,
}

impl EdgeMetrics {
    /// Registers the series in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = EdgeMetrics {
            open: IntGauge::new(
                "sluice_connections_open",
                "Client connections open now.",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "sluice_connections_refused_total",
                    "Connections answered 503 at once: max_connections, max_connections_per_client.",
                ),
                &["reason"],
            )?,
            timeouts: IntCounterVec::new(
                Opts::new(
                    "sluice_client_timeouts_total",
                    "Clients too slow to send their request, by phase: preface, header, body.",
                ),
                &["phase"],
            )?,
            unreadable: IntCounterVec::new(
                Opts::new(
                    "sluice_unreadable_requests_total",
                    "Request headers refused before routing: too_many_headers, header_too_large, bad_framing.",
                ),
                &["reason"],
            )?,
            tls_handshake_failures: IntCounterVec::new(
                Opts::new(
                    "sluice_tls_handshake_failures_total",
                    "TLS handshakes on the listener that did not finish: timeout, error.",
                ),
                &["reason"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new(
                    "sluice_tls_reloads_total",
                    "Changed certificate files re-read: reloaded, refused (old one kept).",
                ),
                &["outcome"],
            )?,
            tls_expiry: IntGaugeVec::new(
                Opts::new(
                    "sluice_tls_certificate_expiry_seconds",
                    "Unix time at which each served certificate expires (notAfter).",
                ),
                &["name"],
            )?,
        };
        registry.register(Box::new(m.open.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.timeouts.clone()))?;
        registry.register(Box::new(m.unreadable.clone()))?;
        registry.register(Box::new(m.tls_handshake_failures.clone()))?;
        registry.register(Box::new(m.tls_reloads.clone()))?;
        registry.register(Box::new(m.tls_expiry.clone()))?;
        Ok(m)
    }
}
