//! The route table: what a request asks for, from its method and path alone
//! ([`RouteKind::classify`]), which listener serves it ([`RouteKind::served`]),
//! and the same routes documented ([`ROUTES`]), from which `GET /docs/llms.txt`
//! is rendered; a test checks that every documented route classifies as
//! documented and every kind is documented.

use sluice_providers::Endpoint;

/// The listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`: the OpenAI and Anthropic surface, and health.
    Public,
    /// `server.admin_listen`: the admin and stream control APIs, metrics,
    /// docs, and health.
    Admin,
}

impl Listener {
    /// The pingora service name, also the `listener` of logs.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// Which listeners serve a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Only the public listener.
    Public,
    /// Only the admin listener.
    Admin,
    /// Both (health, and the 404 of an unknown path).
    Both,
}

impl Served {
    /// Whether `listener` serves the route.
    pub fn on(self, listener: Listener) -> bool {
        matches!(
            (self, listener),
            (Served::Both, _)
                | (Served::Public, Listener::Public)
                | (Served::Admin, Listener::Admin)
        )
    }
}

/// What a request asked for, decided from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// An OpenAI endpoint forwarded upstream.
    Forward(Endpoint),
    /// `POST /v1/messages`: Anthropic's Messages API, forwarded.
    Messages,
    /// `POST /v1/messages/count_tokens`: Anthropic's token count.
    CountTokens,
    /// `POST /v1/responses`: OpenAI's Responses API, forwarded.
    Responses,
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
    /// `GET /docs/llms.txt`: this table, for agents.
    Docs,
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
            return match path.strip_suffix('/').unwrap_or(path) {
                "/v1/messages" => RouteKind::Messages,
                "/v1/messages/count_tokens" => RouteKind::CountTokens,
                "/v1/responses" => RouteKind::Responses,
                _ => Endpoint::from_path(path).map_or(RouteKind::Unknown, RouteKind::Forward),
            };
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
            "/docs/llms.txt" => RouteKind::Docs,
            _ => RouteKind::Unknown,
        }
    }

    /// Whether requests on this route are forwarded to an upstream or the
    /// engine (and so have a gateway overhead to measure).
    pub fn is_forwarded(self) -> bool {
        matches!(
            self,
            RouteKind::Forward(_) | RouteKind::Messages | RouteKind::Responses
        )
    }

    /// Which listeners serve this route; on any other it is
    /// [`RouteKind::Unknown`], a 404 like any path that does not exist.
    pub fn served(self) -> Served {
        match self {
            RouteKind::Forward(_)
            | RouteKind::Messages
            | RouteKind::CountTokens
            | RouteKind::Responses
            | RouteKind::Models => Served::Public,
            RouteKind::Metrics
            | RouteKind::UsageReport
            | RouteKind::AdminAccess
            | RouteKind::Streams
            | RouteKind::Docs => Served::Admin,
            RouteKind::Live | RouteKind::Ready | RouteKind::Unknown => Served::Both,
        }
    }

    /// What `listener` makes of a request classified as `self`: the route
    /// itself when the listener serves it, else [`RouteKind::Unknown`].
    pub fn on(self, listener: Listener) -> Self {
        if self.served().on(listener) {
            self
        } else {
            RouteKind::Unknown
        }
    }

    /// The `route` label of metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            RouteKind::Forward(e) => e.label(),
            RouteKind::Messages => "messages",
            RouteKind::CountTokens => "count_tokens",
            RouteKind::Responses => "responses",
            RouteKind::Models => "models",
            RouteKind::Live => "health",
            RouteKind::Ready => "ready",
            RouteKind::Metrics => "metrics",
            RouteKind::UsageReport => "usage_report",
            RouteKind::AdminAccess => "admin",
            RouteKind::Streams => "streams",
            RouteKind::Docs => "docs",
            RouteKind::Unknown => "unknown",
        }
    }
}

/// One documented route.
#[derive(Debug)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: &'static str,
    /// Path, with `{placeholders}`.
    pub path: &'static str,
    /// A concrete path that [`RouteKind::classify`] must send to `kind`.
    pub example: &'static str,
    /// Where it goes.
    pub kind: RouteKind,
    /// What it does, in a line.
    pub summary: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    example: &'static str,
    kind: RouteKind,
    summary: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        example,
        kind,
        summary,
    }
}

/// Every route sluice serves, documented.
pub const ROUTES: &[RouteDoc] = &[
    route("POST", "/v1/chat/completions", "/v1/chat/completions", RouteKind::Forward(Endpoint::ChatCompletions),
        "OpenAI chat completions, streamed (SSE) or not; routed by `model` over failover chains to external providers or the built-in engine."),
    route("POST", "/v1/completions", "/v1/completions", RouteKind::Forward(Endpoint::Completions),
        "OpenAI legacy text completions."),
    route("POST", "/v1/embeddings", "/v1/embeddings", RouteKind::Forward(Endpoint::Embeddings),
        "OpenAI embeddings."),
    route("POST", "/v1/responses", "/v1/responses", RouteKind::Responses,
        "OpenAI's Responses API, streamed or not, with function tools and `previous_response_id`; passed through to OpenAI upstreams, translated for every other (and the built-in engine)."),
    route("POST", "/v1/messages", "/v1/messages", RouteKind::Messages,
        "Anthropic's Messages API (key in `x-api-key` or as a bearer), streamed or not, with tools, images and `cache_control`; untouched to Anthropic upstreams, translated for every other. Errors in Anthropic's shape."),
    route("POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens", RouteKind::CountTokens,
        "Anthropic's token count: asked of an Anthropic upstream, else estimated."),
    route("GET", "/v1/models", "/v1/models", RouteKind::Models,
        "The models this gateway serves (those the caller's key may use)."),
    route("GET", "/v1/streams", "/v1/streams", RouteKind::Streams,
        "Live streams of the caller's tenant (all of them for the admin key)."),
    route("GET", "/v1/streams/{id}", "/v1/streams/st_1", RouteKind::Streams,
        "One live stream: tenant, model, target, priority, tokens so far, state."),
    route("POST", "/v1/streams/{id}/{cancel|pause|resume|preempt}", "/v1/streams/st_1/pause", RouteKind::Streams,
        "Control a live stream; an optional JSON body `{\"reason\": \"...\"}`."),
    route("GET", "/admin/usage", "/admin/usage", RouteKind::UsageReport,
        "Usage and exact cost grouped by tenant, key, model, provider, day or hour (`group_by`, `from`, `to`, `format=csv`)."),
    route("POST", "/admin/keys", "/admin/keys", RouteKind::AdminAccess,
        "Create an API key for a tenant (admin key); the key is shown once."),
    route("GET", "/admin/keys", "/admin/keys", RouteKind::AdminAccess, "List keys (never their secrets)."),
    route("POST", "/admin/keys/{id}/{rotate|disable|enable}", "/admin/keys/k1/rotate", RouteKind::AdminAccess,
        "Rotate, disable or enable a key."),
    route("DELETE", "/admin/keys/{id}", "/admin/keys/k1", RouteKind::AdminAccess, "Delete a key."),
    route("PUT", "/admin/tenants/{name}", "/admin/tenants/acme", RouteKind::AdminAccess,
        "Create or update a tenant's limits and budget."),
    route("GET", "/admin/tenants", "/admin/tenants", RouteKind::AdminAccess, "List tenants."),
    route("DELETE", "/admin/tenants/{name}", "/admin/tenants/acme", RouteKind::AdminAccess, "Delete a tenant."),
    route("GET", "/health/live", "/health/live", RouteKind::Live, "Liveness: 200 while the process runs."),
    route("GET", "/health/ready", "/health/ready", RouteKind::Ready,
        "Readiness: 200 once serving, 503 while starting or draining."),
    route("GET", "/metrics", "/metrics", RouteKind::Metrics, "Prometheus metrics, every series `sluice_*`."),
    route("GET", "/docs/llms.txt", "/docs/llms.txt", RouteKind::Docs, "This list."),
];

/// `/docs/llms.txt` (the llmstxt.org shape: a title, a summary, then a
/// list per listener).
pub fn llms_txt() -> String {
    let mut out = String::from(
        "# sluice\n\n> An OpenAI-compatible LLM gateway: point an OpenAI SDK at it and change nothing else. \
         It authenticates the caller (`Authorization: Bearer <key>`), enforces tenant quotas and budgets, \
         routes each `model` over failover chains, and records every request's tokens and exact cost. \
         Errors are OpenAI's `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, or Anthropic's on `/v1/messages`. \
         Two listeners: the public one (`server.listen`) and the admin one (`server.admin_listen`, \
         default 127.0.0.1:9090); a route asked of the other listener answers 404 `unknown_url`.\n",
    );
    let sections = [
        (Served::Public, "Public listener (`server.listen`)"),
        (Served::Admin, "Admin listener (`server.admin_listen`)"),
        (Served::Both, "Both listeners"),
    ];
    for (served, title) in sections {
        out.push_str(&format!("\n## {title}\n\n"));
        for r in ROUTES.iter().filter(|r| r.kind.served() == served) {
            out.push_str(&format!("- `{} {}`: {}\n", r.method, r.path, r.summary));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_classifies_as_documented_and_every_kind_is_documented() {
        for r in ROUTES {
            let method = http::Method::from_bytes(r.method.as_bytes()).unwrap();
            assert_eq!(RouteKind::classify(&method, r.example), r.kind, "{r:?}");
        }
        let kinds = [
            RouteKind::Forward(Endpoint::ChatCompletions),
            RouteKind::Forward(Endpoint::Completions),
            RouteKind::Forward(Endpoint::Embeddings),
            RouteKind::Messages,
            RouteKind::CountTokens,
            RouteKind::Responses,
            RouteKind::Models,
            RouteKind::Live,
            RouteKind::Ready,
            RouteKind::Metrics,
            RouteKind::UsageReport,
            RouteKind::AdminAccess,
            RouteKind::Streams,
            RouteKind::Docs,
        ];
        for kind in kinds {
            // A new kind must be added here (the match makes the compiler ask).
            match kind {
                RouteKind::Forward(_)
                | RouteKind::Messages
                | RouteKind::CountTokens
                | RouteKind::Responses
                | RouteKind::Models
                | RouteKind::Live
                | RouteKind::Ready
                | RouteKind::Metrics
                | RouteKind::UsageReport
                | RouteKind::AdminAccess
                | RouteKind::Streams
                | RouteKind::Docs
                | RouteKind::Unknown => {}
            }
            assert!(
                ROUTES.iter().any(|r| r.kind == kind),
                "{kind:?} undocumented"
            );
        }
        let text = llms_txt();
        assert!(text.starts_with("# sluice\n"));
        assert_eq!(text.matches("\n- `").count(), ROUTES.len());
        let admin = text.find("## Admin listener").unwrap();
        let both = text.find("## Both listeners").unwrap();
        let metrics = text.find("- `GET /metrics`").unwrap();
        assert!(admin < metrics && metrics < both, "{text}");
    }

    #[test]
    fn each_listener_serves_its_own_routes_and_health() {
        use http::Method;
        let chat = RouteKind::classify(&Method::POST, "/v1/chat/completions");
        assert_eq!(chat.on(Listener::Public), chat);
        assert_eq!(chat.on(Listener::Admin), RouteKind::Unknown);
        for path in [
            "/admin/keys",
            "/admin/usage",
            "/metrics",
            "/v1/streams",
            "/docs/llms.txt",
        ] {
            let kind = RouteKind::classify(&Method::GET, path);
            assert_eq!(kind.on(Listener::Public), RouteKind::Unknown, "{path}");
            assert_eq!(kind.on(Listener::Admin), kind, "{path}");
        }
        for path in ["/health", "/health/live", "/health/ready"] {
            let kind = RouteKind::classify(&Method::GET, path);
            assert_eq!(
                (kind.on(Listener::Public), kind.on(Listener::Admin)),
                (kind, kind)
            );
        }
    }

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
