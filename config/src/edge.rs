//! `server:` limits that protect the edge from slow, silent and greedy
//! clients: deadlines on every read before a request is routed, caps on
//! open connections (in all and per client address), and on header size.

use crate::raw::RawServer;
use crate::ConfigError;
use std::time::Duration;

/// Validated edge limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Time to send a whole request header (and the h2 preface).
    pub header_timeout: Duration,
    /// Longest wait for the next byte of a request body.
    pub body_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Open client connections, in all.
    pub max_connections: usize,
    /// Open client connections from one IP address.
    pub max_connections_per_client: usize,
    /// Request header fields.
    pub max_headers: usize,
    /// Bytes of request header names and values.
    pub max_header_bytes: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl EdgeLimits {
    /// Reads the limits from `server:`, checking every key is positive; a
    /// missing key takes its default.
    pub(crate) fn from_raw(raw: &RawServer) -> Result<EdgeLimits, ConfigError> {
        let d = EdgeLimits::default();
        let positive = |key: &str, value: Option<u64>| -> Result<Option<u64>, ConfigError> {
            match value {
                Some(0) => Err(ConfigError::validation(
                    format!("server.{key}"),
                    "must be at least 1",
                )),
                v => Ok(v),
            }
        };
        let count = |key: &str, value: Option<usize>, default: usize| {
            positive(key, value.map(|v| v as u64)).map(|v| v.map_or(default, |v| v as usize))
        };
        let limits = EdgeLimits {
            header_timeout: positive("header_timeout_ms", raw.header_timeout_ms)?
                .map_or(d.header_timeout, Duration::from_millis),
            body_timeout: positive("body_timeout_ms", raw.body_timeout_ms)?
                .map_or(d.body_timeout, Duration::from_millis),
            keepalive_timeout: positive("keepalive_timeout_s", raw.keepalive_timeout_s)?
                .map_or(d.keepalive_timeout, Duration::from_secs),
            max_connections: count("max_connections", raw.max_connections, d.max_connections)?,
            max_connections_per_client: count(
                "max_connections_per_client",
                raw.max_connections_per_client,
                d.max_connections_per_client,
            )?,
            max_headers: count("max_headers", raw.max_headers, d.max_headers)?,
            max_header_bytes: count("max_header_bytes", raw.max_header_bytes, d.max_header_bytes)?,
        };
        if limits.max_connections_per_client > limits.max_connections {
            return Err(ConfigError::validation(
                "server.max_connections_per_client",
                format!(
                    "must not exceed server.max_connections ({})",
                    limits.max_connections
                ),
            ));
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_keys() {
        let limits = EdgeLimits::from_raw(&RawServer::default()).unwrap();
        assert_eq!(limits, EdgeLimits::default());
    }

    #[test]
    fn zero_is_refused_with_its_key() {
        let raw = RawServer {
            header_timeout_ms: Some(0),
            ..RawServer::default()
        };
        let err = EdgeLimits::from_raw(&raw).unwrap_err().to_string();
        assert!(err.contains("server.header_timeout_ms"), "{err}");
    }

    #[test]
    fn per_client_cap_above_total_is_refused() {
        let raw = RawServer {
            max_connections: Some(10),
            max_connections_per_client: Some(20),
            ..RawServer::default()
        };
        let err = EdgeLimits::from_raw(&raw).unwrap_err().to_string();
        assert!(err.contains("max_connections_per_client"), "{err}");
    }
}
