//! The route table: what a request asks for, from its method and path alone.

use sluice_providers::Endpoint;

/// What a request asked for, decided from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// An OpenAI endpoint forwarded upstream.
    Forward(Endpoint),
    /// `GET /v1/models`.
    Models,
    /// `GET /health` and `/health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /admin/usage`.
    UsageReport,
    /// `/admin/keys...` and `/admin/tenants...`.
    AdminAccess,
    /// `/v1/streams...`: the stream control API.
    Streams,
    /// Anything else.
    Unknown,
}

impl RouteKind {
    /// Classifies a request by method and path (a query string is ignored).
    pub fn classify(method: &http::Method, path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        if path.starts_with("/admin/keys") || path.starts_with("/admin/tenants") {
            return RouteKind::AdminAccess;
        }
        if path == "/v1/streams" || path.starts_with("/v1/streams/") {
            return RouteKind::Streams;
        }
        if method == http::Method::POST {
            return Endpoint::from_path(path).map_or(RouteKind::Unknown, RouteKind::Forward);
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return RouteKind::Unknown;
        }
        match path.strip_suffix('/').unwrap_or(path) {
            "/v1/models" => RouteKind::Models,
            "/health" | "/health/live" => RouteKind::Live,
            "/health/ready" => RouteKind::Ready,
            "/metrics" => RouteKind::Metrics,
            "/admin/usage" => RouteKind::UsageReport,
            _ => RouteKind::Unknown,
        }
    }

    /// The `route` label of metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            RouteKind::Forward(e) => e.label(),
            RouteKind::Models => "models",
            RouteKind::Live => "health",
            RouteKind::Ready => "ready",
            RouteKind::Metrics => "metrics",
            RouteKind::UsageReport => "usage_report",
            RouteKind::AdminAccess => "admin",
            RouteKind::Streams => "streams",
            RouteKind::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_routes() {
        use http::Method;
        assert_eq!(
            RouteKind::classify(&Method::POST, "/v1/chat/completions"),
            RouteKind::Forward(Endpoint::ChatCompletions)
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/v1/chat/completions"),
            RouteKind::Unknown
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/v1/models/"),
            RouteKind::Models
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/health/ready?x"),
            RouteKind::Ready
        );
        assert_eq!(
            RouteKind::classify(&Method::POST, "/v1/streams/st_1/cancel"),
            RouteKind::Streams
        );
        assert_eq!(
            RouteKind::classify(&Method::GET, "/v1/streams"),
            RouteKind::Streams
        );
        assert_eq!(
            RouteKind::classify(&Method::DELETE, "/health"),
            RouteKind::Unknown
        );
    }
}
