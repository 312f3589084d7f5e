//! The `logging:` and `tracing:` sections: the access log (one line per
//! finished request, its fields chosen here) and OpenTelemetry trace export.
//!
//! The access log offers no field that can hold a prompt, a body or a
//! credential: [`AccessField`] is the whole list, and a name not on it is a
//! config error at its key path (`logging.access.fields[2]`).

use crate::ConfigError;
use serde::Deserialize;

/// `logging:` — what is logged besides the operational events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// The access log. Default: on, with [`AccessField::DEFAULTS`].
    #[serde(default)]
    pub access: RawAccessLog,
}

/// `logging.access:` — one structured event per finished request, target
/// `sluice::access`, written with the other log lines (text or JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Whether each finished request is logged. Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The fields of each line, in any order, each at most once. Default:
    /// `time`, `request_id`, `method`, `path`, `route`, `status`,
    /// `duration_ms`, `model`, `upstream`, `tenant`, `key_id`,
    /// `prompt_tokens`, `completion_tokens`, `cost_usd`. Also offered:
    /// `priority`, `stream_id`, `client_ip`, `user_agent` (the last two
    /// identify people: opt in knowingly).
    #[serde(default)]
    pub fields: Option<Vec<AccessField>>,
}

/// One field an access-log line may carry. Nothing here can hold a prompt,
/// a body, an API key or a provider credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessField {
    /// When the request's header was read, RFC 3339 in UTC.
    Time,
    /// The request id (the client's `x-request-id` or one sluice minted).
    RequestId,
    /// The HTTP method.
    Method,
    /// The request path, never its query string.
    Path,
    /// The route label, as in metrics (`chat_completions`, `models`, ...).
    Route,
    /// The status sent to the client.
    Status,
    /// Milliseconds from the header read to the answer's end.
    DurationMs,
    /// The model label: a configured name, `*`, or `-` when unknown.
    Model,
    /// The upstream that answered, by its config name.
    Upstream,
    /// The caller's tenant.
    Tenant,
    /// The caller key's id (never the key itself).
    KeyId,
    /// The caller's effective priority class.
    Priority,
    /// Prompt tokens, as reported (or counted) when the request settled.
    PromptTokens,
    /// Completion tokens, likewise.
    CompletionTokens,
    /// The request's cost in USD, when priced.
    CostUsd,
    /// The stream id sent as `x-sluice-stream-id`.
    StreamId,
    /// The client's IP address (opt-in: identifies people).
    ClientIp,
    /// The client's `User-Agent` header (opt-in).
    UserAgent,
}

impl AccessField {
    /// The fields logged when `logging.access.fields` is left out.
    pub const DEFAULTS: &'static [AccessField] = &[
        AccessField::Time,
        AccessField::RequestId,
        AccessField::Method,
        AccessField::Path,
        AccessField::Route,
        AccessField::Status,
        AccessField::DurationMs,
        AccessField::Model,
        AccessField::Upstream,
        AccessField::Tenant,
        AccessField::KeyId,
        AccessField::PromptTokens,
        AccessField::CompletionTokens,
        AccessField::CostUsd,
    ];
}

/// Validated `logging:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// The access log; `None` when turned off.
    pub access: Option<AccessLogSettings>,
}

/// Validated `logging.access:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// The fields of each line, none twice.
    pub fields: Vec<AccessField>,
}

impl AccessLogSettings {
    /// Whether lines carry `field`.
    pub fn has(&self, field: AccessField) -> bool {
        self.fields.contains(&field)
    }
}

/// `tracing:` — OpenTelemetry trace export (OTLP over HTTP, protobuf). Only
/// a sluice built with the `otel` cargo feature exports; others warn at
/// start when an endpoint is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`
    /// (`/v1/traces` is appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    /// Default: `OTEL_EXPORTER_OTLP_ENDPOINT` when set, else no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans. Default: `OTEL_SERVICE_NAME`
    /// when set, else `sluice`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces sampled, 0.0 to 1.0; a request that comes with a
    /// `traceparent` follows its sampled flag instead. Default 1.0.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
}

/// Validated `tracing:` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's traces URL (`.../v1/traces`), when set in the file.
    pub otlp_traces_url: Option<String>,
    /// `service.name`, when set in the file.
    pub service_name: Option<String>,
    /// Share of new traces sampled.
    pub sample_ratio: f64,
}

pub(crate) fn logging_settings(raw: RawLogging) -> Result<LoggingSettings, ConfigError> {
    if raw.access.enabled == Some(false) {
        return Ok(LoggingSettings { access: None });
    }
    let fields = match raw.access.fields {
        None => AccessField::DEFAULTS.to_vec(),
        Some(fields) => {
            if fields.is_empty() {
                return Err(ConfigError::validation(
                    "logging.access.fields",
                    "is empty; set logging.access.enabled: false to turn the access log off",
                ));
            }
            for (i, field) in fields.iter().enumerate() {
                if fields[..i].contains(field) {
                    return Err(ConfigError::validation(
                        format!("logging.access.fields[{i}]"),
                        "is listed twice",
                    ));
                }
            }
            fields
        }
    };
    Ok(LoggingSettings {
        access: Some(AccessLogSettings { fields }),
    })
}

pub(crate) fn tracing_settings(raw: RawTracing) -> Result<TracingSettings, ConfigError> {
    let otlp_traces_url = match raw.otlp_endpoint.filter(|e| !e.is_empty()) {
        None => None,
        Some(endpoint) => Some(
            traces_url(&endpoint)
                .map_err(|message| ConfigError::validation("tracing.otlp_endpoint", message))?,
        ),
    };
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError::validation(
            "tracing.sample_ratio",
            "must be between 0.0 and 1.0",
        ));
    }
    if raw.service_name.as_deref() == Some("") {
        return Err(ConfigError::validation(
            "tracing.service_name",
            "is empty; leave it out for the default",
        ));
    }
    Ok(TracingSettings {
        otlp_traces_url,
        service_name: raw.service_name,
        sample_ratio,
    })
}

/// The traces URL of the collector at `endpoint`, as the OpenTelemetry
/// specification derives it from `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("expected a URL such as http://127.0.0.1:4318, got {endpoint:?}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "expected an http:// or https:// URL with a host, got {endpoint:?}"
        ));
    }
    if uri.query().is_some() {
        return Err("must not have a query string".to_string());
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::{load_str, AccessField, ConfigError};

    fn load(yaml: &str) -> Result<crate::Config, ConfigError> {
        load_str(yaml, &|_| None)
    }

    #[test]
    fn access_log_is_on_with_default_fields_when_left_out() {
        let config = load("").unwrap();
        let access = config.logging.access.unwrap();
        assert_eq!(access.fields, AccessField::DEFAULTS);
        assert!(!access.has(AccessField::ClientIp));
        assert_eq!(config.tracing.otlp_traces_url, None);
        assert_eq!(config.tracing.sample_ratio, 1.0);
    }

    #[test]
    fn access_fields_are_read_and_can_be_turned_off() {
        let config = load("logging: {access: {fields: [status, key_id, client_ip]}}").unwrap();
        assert_eq!(
            config.logging.access.unwrap().fields,
            [
                AccessField::Status,
                AccessField::KeyId,
                AccessField::ClientIp
            ]
        );
        let off = load("logging: {access: {enabled: false}}").unwrap();
        assert_eq!(off.logging.access, None);
    }

    #[test]
    fn an_unknown_access_field_names_its_key_path() {
        let error = load("logging: {access: {fields: [status, request_body]}}").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("logging.access.fields[1]: unknown variant `request_body`"),
            "{text}"
        );
        let error = load("logging: {access: {fields: [status, status]}}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "logging.access.fields[1]: is listed twice"
        );
        let error = load("logging: {acess: {}}").unwrap_err().to_string();
        assert!(
            error.starts_with("logging.acess: unknown field `acess`"),
            "{error}"
        );
    }

    #[test]
    fn otlp_endpoint_becomes_the_traces_url() {
        let config =
            load("tracing: {otlp_endpoint: 'http://127.0.0.1:4318/', sample_ratio: 0.25}").unwrap();
        assert_eq!(
            config.tracing.otlp_traces_url.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(config.tracing.sample_ratio, 0.25);
        let given = load("tracing: {otlp_endpoint: 'https://c.example/v1/traces'}").unwrap();
        assert_eq!(
            given.tracing.otlp_traces_url.as_deref(),
            Some("https://c.example/v1/traces")
        );
    }

    #[test]
    fn bad_tracing_values_name_their_key() {
        for (yaml, path) in [
            (
                "tracing: {otlp_endpoint: 'collector:4318'}",
                "tracing.otlp_endpoint",
            ),
            ("tracing: {sample_ratio: 1.5}", "tracing.sample_ratio"),
            ("tracing: {service_name: ''}", "tracing.service_name"),
        ] {
            let error = load(yaml).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("{path}: ")),
                "{yaml}: {error}"
            );
        }
    }
}
