//! Validated configuration: what the rest of sluice reads.

use crate::raw::{RawConfig, RawLogFormat, RawUpstream};
use crate::routing::{ModelRoute, RoutingSettings};
use crate::{ConfigError, Secret};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The model name that matches every name not listed explicitly.
pub const WILDCARD_MODEL: &str = "*";

/// A loaded, checked configuration. Built by [`crate::load_str`],
/// [`crate::load_file`] or [`Config::embedded_defaults`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How sluice listens.
    pub server: ServerSettings,
    /// Upstream servers, in name order; [`crate::RouteTarget::upstream`] indexes this.
    pub upstreams: Vec<UpstreamSettings>,
    /// Client-visible models, in file order (the wildcard, if any, included).
    pub models: Vec<ModelRoute>,
    /// Failover, retry and breaker policy.
    pub routing: RoutingSettings,
    /// Usage records and prices.
    pub ledger: crate::LedgerConfig,
    /// Tenants, keys, limits, budgets, admin key.
    pub access: crate::AccessSettings,
    /// Node capacity, fair queuing, preemption, pauses.
    pub streams: crate::StreamSettings,
    /// The access log.
    pub logging: crate::LoggingSettings,
    /// OpenTelemetry trace export.
    pub tracing: crate::TracingSettings,
}

/// `server:` after validation.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker threads.
    pub threads: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time to finish in-flight requests after SIGTERM.
    pub grace_period: Duration,
    /// Address of the admin listener (admin API, metrics, stream control,
    /// docs, health).
    pub admin_listen: SocketAddr,
    /// Unix socket of the zero-downtime upgrade hand-over.
    pub upgrade_sock: PathBuf,
    /// Log line format.
    pub log_format: LogFormat,
    /// Deadlines and caps that protect the edge.
    pub limits: crate::EdgeLimits,
    /// HTTPS on the listener; `None`: plain HTTP.
    pub tls: Option<crate::ServerTls>,
    /// HTTPS (and maybe mTLS) on the admin listener; `None`: plain HTTP.
    pub admin_tls: Option<crate::ServerTls>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl ServerSettings {
    /// Checks that the public and the admin listener can both bind: called
    /// by validation and again after command-line overrides.
    pub fn check_listeners(&self) -> Result<(), ConfigError> {
        let (public, admin) = (self.listen, self.admin_listen);
        let overlap = public.ip() == admin.ip()
            || public.ip().is_unspecified()
            || admin.ip().is_unspecified();
        if public.port() == admin.port() && overlap {
            return Err(ConfigError::validation(
                "server.admin_listen",
                format!("{admin} collides with server.listen ({public}): give the admin listener its own port"),
            ));
        }
        Ok(())
    }
}

/// Longest unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// `server.upgrade_sock`: a path short enough to bind as a unix socket.
fn upgrade_sock(text: &str) -> Result<PathBuf, ConfigError> {
    let at = "server.upgrade_sock";
    if text.is_empty() {
        return Err(ConfigError::validation(at, "must not be empty"));
    }
    if text.len() > MAX_UNIX_SOCKET_PATH {
        return Err(ConfigError::validation(
            at,
            format!(
                "a unix socket path holds at most {MAX_UNIX_SOCKET_PATH} bytes, got {}",
                text.len()
            ),
        ));
    }
    Ok(PathBuf::from(text))
}

/// What an upstream is, and what its wire format needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// OpenAI and every OpenAI-compatible server.
    OpenAi,
    /// Azure OpenAI.
    Azure {
        /// `api-version` query parameter.
        api_version: String,
    },
    /// Anthropic Messages API.
    Anthropic {
        /// `anthropic-version` header.
        version: String,
        /// `max_tokens` when the client gives none.
        default_max_tokens: u64,
    },
    /// Google Gemini.
    Gemini,
    /// AWS Bedrock Converse.
    Bedrock {
        /// Region.
        region: String,
        /// Access key id.
        access_key_id: Secret,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token.
        session_token: Option<Secret>,
    },
    /// The built-in inference engine, run inside sluice: OpenAI's request
    /// and response shape, no network address (its base URL is
    /// [`UpstreamBaseUrl::in_process`]).
    Local(crate::LocalModelSettings),
}

/// One upstream server, validated.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The key under `upstreams:`; used in metrics and logs.
    pub name: String,
    /// Wire format.
    pub kind: UpstreamKind,
    /// Where it is.
    pub base_url: UpstreamBaseUrl,
    /// Bearer key, if any.
    pub api_key: Option<Secret>,
    /// Extra headers, names lower-cased and checked.
    pub headers: Vec<(String, String)>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub first_byte_timeout: Duration,
    /// Time allowed between body pieces.
    pub idle_timeout: Duration,
    /// Time allowed for the whole exchange.
    pub total_timeout: Option<Duration>,
    /// File the API key is read from (and re-read when it changes).
    pub api_key_file: Option<std::path::PathBuf>,
    /// The only CA certificates trusted for this upstream's TLS; `None`:
    /// the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A parsed `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBaseUrl {
    /// `https`?
    pub tls: bool,
    /// Host name or IP literal (no brackets), also the TLS SNI and `Host`.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path prefix without trailing slash, e.g. `/v1`; may be empty.
    pub path_prefix: String,
}

impl UpstreamBaseUrl {
    /// Parses `http[s]://host[:port][/prefix]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("not a valid URL ({e}): {text:?}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("scheme must be http or https, not {other:?}")),
            None => {
                return Err(format!(
                    "URL needs a scheme (http:// or https://): {text:?}"
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("URL has no host: {text:?}"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if uri.query().is_some() {
            return Err(format!("base URL must not carry a query: {text:?}"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamBaseUrl {
            tls,
            host,
            port,
            path_prefix,
        })
    }

    /// The base URL of an in-process upstream (kind `local`): no network
    /// address. Host `in-process`, port 0, no TLS, empty prefix; never
    /// connected to.
    pub fn in_process() -> Self {
        UpstreamBaseUrl {
            tls: false,
            host: "in-process".to_string(),
            port: 0,
            path_prefix: String::new(),
        }
    }

    /// `host:port` as used to resolve and connect.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The validated kind of an upstream and its default base URL.
fn upstream_kind(
    up: &RawUpstream,
    at: &dyn Fn(&str) -> String,
) -> Result<(UpstreamKind, Option<String>), ConfigError> {
    let name = up.kind.as_deref().unwrap_or("openai");
    let unknown = |what: String| {
        let known: Vec<&str> = crate::presets::PRESETS.iter().map(|p| p.name).collect();
        ConfigError::validation(
            at("kind"),
            format!("{what}; valid kinds: {}", known.join(", ")),
        )
    };
    let preset = crate::presets::find_preset(name)
        .ok_or_else(|| unknown(format!("unknown kind {name:?}")))?;
    if preset.name != crate::local::LOCAL_KIND {
        crate::local::refuse_local_keys(up, name, at)?;
    }
    let mut default_url = preset.base_url.map(str::to_string);
    let kind = match preset.format {
        "openai" => UpstreamKind::OpenAi,
        "azure" => UpstreamKind::Azure {
            api_version: up
                .api_version
                .clone()
                .unwrap_or_else(|| crate::presets::AZURE_DEFAULT_API_VERSION.to_string()),
        },
        "anthropic" => UpstreamKind::Anthropic {
            version: up
                .anthropic_version
                .clone()
                .unwrap_or_else(|| crate::presets::ANTHROPIC_DEFAULT_VERSION.to_string()),
            default_max_tokens: up
                .default_max_tokens
                .unwrap_or(crate::presets::ANTHROPIC_DEFAULT_MAX_TOKENS)
                .max(1),
        },
        "gemini" => UpstreamKind::Gemini,
        "bedrock" => {
            let need = |v: &Option<Secret>, key: &str| {
                v.clone()
                    .ok_or_else(|| ConfigError::validation(at(key), "is required for kind bedrock"))
            };
            let region = up.region.clone().ok_or_else(|| {
                ConfigError::validation(at("region"), "is required for kind bedrock")
            })?;
            default_url = Some(crate::presets::bedrock_base_url(&region));
            UpstreamKind::Bedrock {
                access_key_id: need(&up.aws_access_key_id, "aws_access_key_id")?,
                secret_access_key: need(&up.aws_secret_access_key, "aws_secret_access_key")?,
                session_token: up.aws_session_token.clone(),
                region,
            }
        }
        "local" => UpstreamKind::Local(crate::local::local_settings(up, at)?),
        other => {
            // Only reachable if PRESETS names a format this match lacks.
            return Err(unknown(format!(
                "kind {name:?} has no implementation for its wire format {other:?}"
            )));
        }
    };
    Ok((kind, default_url))
}

impl Config {
    /// Validates raw settings: addresses parse, names are unique, references
    /// resolve, URLs and headers are well formed.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            ConfigError::validation(
                "server.listen",
                format!(
                    "expected an IP address and port such as 127.0.0.1:8080, got {:?}",
                    raw.server.listen
                ),
            )
        })?;
        let threads = match raw.server.threads {
            Some(0) => {
                return Err(ConfigError::validation(
                    "server.threads",
                    "must be at least 1",
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if raw.server.max_body_bytes == 0 {
            return Err(ConfigError::validation(
                "server.max_body_bytes",
                "must be at least 1",
            ));
        }
        let limits = crate::EdgeLimits::from_raw(&raw.server)?;
        let admin_listen: SocketAddr = raw.server.admin_listen.parse().map_err(|_| {
            ConfigError::validation(
                "server.admin_listen",
                format!(
                    "expected an IP address and port such as 127.0.0.1:9090, got {:?}",
                    raw.server.admin_listen
                ),
            )
        })?;
        let server = ServerSettings {
            listen,
            admin_listen,
            upgrade_sock: upgrade_sock(&raw.server.upgrade_sock)?,
            threads,
            max_body_bytes: raw.server.max_body_bytes,
            grace_period: Duration::from_secs(raw.server.grace_period_s),
            log_format: match raw.server.log_format {
                RawLogFormat::Text => LogFormat::Text,
                RawLogFormat::Json => LogFormat::Json,
            },
            limits,
            tls: raw
                .server
                .tls
                .as_ref()
                .map(|t| crate::ServerTls::from_raw(t, "server.tls"))
                .transpose()?,
            admin_tls: raw
                .server
                .admin_tls
                .as_ref()
                .map(|t| crate::ServerTls::from_raw(t, "server.admin_tls"))
                .transpose()?,
        };
        server.check_listeners()?;

        let mut upstreams = Vec::with_capacity(raw.upstreams.len());
        for (name, up) in raw.upstreams {
            let at = |key: &str| format!("upstreams.{name}.{key}");
            let (kind, default_url) = upstream_kind(&up, &at)?;
            let base_url = if matches!(kind, UpstreamKind::Local(_)) {
                UpstreamBaseUrl::in_process()
            } else {
                let text = up.base_url.clone().or(default_url).ok_or_else(|| {
                    ConfigError::validation(at("base_url"), "is required for this kind")
                })?;
                UpstreamBaseUrl::parse(&text)
                    .map_err(|m| ConfigError::validation(at("base_url"), m))?
            };
            let mut headers = Vec::with_capacity(up.headers.len());
            for (key, value) in up.headers {
                let header_name = http::HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                    ConfigError::validation(at("headers"), format!("invalid header name {key:?}"))
                })?;
                http::HeaderValue::from_str(&value).map_err(|_| {
                    ConfigError::validation(
                        format!("upstreams.{name}.headers.{key}"),
                        "header value must be visible ASCII",
                    )
                })?;
                headers.push((header_name.as_str().to_string(), value));
            }
            let mut api_key = up.api_key.clone();
            if let Some(path) = &up.api_key_file {
                if api_key.is_some() {
                    return Err(ConfigError::validation(
                        at("api_key_file"),
                        "give either api_key or api_key_file",
                    ));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::validation(
                        at("api_key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                api_key = Some(Secret::new(text.trim()));
            }
            if let Some(key) = &api_key {
                if key.expose().is_empty() {
                    return Err(ConfigError::validation(
                        at("api_key"),
                        "is empty; leave it out for an upstream without a key",
                    ));
                }
            }
            for (key, ms) in [
                ("connect_timeout_ms", up.connect_timeout_ms),
                ("first_byte_timeout_ms", up.first_byte_timeout_ms),
                ("idle_timeout_ms", up.idle_timeout_ms),
            ] {
                if ms == 0 {
                    return Err(ConfigError::validation(at(key), "must be at least 1"));
                }
            }
            if let Some(path) = &up.ca_file {
                if !base_url.tls {
                    return Err(ConfigError::validation(
                        at("ca_file"),
                        "applies to an https base_url only",
                    ));
                }
                crate::tls::readable(path, &at("ca_file"))?;
            }
            upstreams.push(UpstreamSettings {
                name,
                kind,
                base_url,
                api_key,
                api_key_file: up.api_key_file.clone(),
                ca_file: up.ca_file.clone(),
                total_timeout: up
                    .total_timeout_ms
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis),
                headers,
                connect_timeout: Duration::from_millis(up.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(up.first_byte_timeout_ms),
                idle_timeout: Duration::from_millis(up.idle_timeout_ms),
            });
        }

        let models = crate::routing::model_routes(&raw.models, &upstreams)?;
        let routing = crate::routing::routing_settings(raw.routing)?;
        let ledger = crate::ledger::ledger_config(raw.ledger, raw.pricing)?;
        let streams = crate::streams::stream_settings(raw.streams)?;
        let logging = crate::observability::logging_settings(raw.logging)?;
        let tracing = crate::observability::tracing_settings(raw.tracing)?;

        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let access =
            crate::access::access_settings(raw.auth, raw.tenants, raw.quotas, raw.budgets, &names)?;
        Ok(Config {
            server,
            upstreams,
            models,
            routing,
            ledger,
            access,
            streams,
            logging,
            tracing,
        })
    }

    /// The configuration used when sluice starts without a file: listen on
    /// 127.0.0.1:8080; serve [`crate::DEFAULT_LOCAL_MODEL_PATH`] with the
    /// built-in engine as [`crate::DEFAULT_LOCAL_MODEL_NAME`] (upstream
    /// `local`); and when `OPENAI_API_KEY` is set, forward every other model
    /// name to `OPENAI_BASE_URL` (default `https://api.openai.com/v1`),
    /// exactly as the OpenAI SDK reads those variables (upstream `openai`).
    pub fn embedded_defaults(
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::default();
        let upstream = |pairs: Vec<(&str, String)>| {
            serde_yaml_ng::from_value::<RawUpstream>(serde_yaml_ng::Value::Mapping(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ))
        };
        let local = upstream(vec![
            ("kind", crate::local::LOCAL_KIND.to_string()),
            ("model", crate::DEFAULT_LOCAL_MODEL_PATH.to_string()),
        ])
        .map_err(|e| ConfigError::validation("upstreams.local", e.to_string()))?;
        raw.upstreams.insert("local".to_string(), local);
        raw.models.push(crate::raw::RawModel {
            name: crate::DEFAULT_LOCAL_MODEL_NAME.to_string(),
            upstream: Some("local".to_string()),
            upstream_model: None,
            chain: None,
        });
        if let Some(key) = lookup_env("OPENAI_API_KEY").filter(|k| !k.is_empty()) {
            let base_url = lookup_env("OPENAI_BASE_URL")
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "https://api.openai.com/v1".to_string());
            let openai = upstream(vec![("base_url", base_url), ("api_key", key)])
                .map_err(|e| ConfigError::validation("OPENAI_BASE_URL", e.to_string()))?;
            raw.upstreams.insert("openai".to_string(), openai);
            raw.models.push(crate::raw::RawModel {
                name: WILDCARD_MODEL.to_string(),
                upstream: Some("openai".to_string()),
                upstream_model: None,
                chain: None,
            });
        }
        Config::from_raw(raw).map_err(|e| match e {
            // The only value taken from outside is the OpenAI base URL.
            ConfigError::Validation { path, message } if path.starts_with("upstreams.openai.") => {
                ConfigError::validation("OPENAI_BASE_URL", message)
            }
            other => other,
        })
    }

    /// The concrete (non-wildcard) model names, in file order: what
    /// `GET /v1/models` lists.
    pub fn listed_models(&self) -> impl Iterator<Item = &ModelRoute> {
        self.models.iter().filter(|m| m.name != WILDCARD_MODEL)
    }
}
