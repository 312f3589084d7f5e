//! The configuration file as written: every key, its meaning and its default.
//!
//! These types only describe the YAML; [`crate::Config::from_raw`] turns them
//! into validated settings. Unknown keys are refused everywhere so that a typo
//! is an error, not a silently ignored line.

pub use crate::raw_access::{
    RawAuth, RawBudget, RawBudgets, RawJwt, RawKey, RawLimits, RawQuotas, RawTenant, RawTenants,
};
pub use crate::raw_routing::{RawBreaker, RawModel, RawRouting, RawStep, RawTarget};
use crate::{DecimalText, Secret};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file. Every section may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener and request-handling settings. Default: see [`RawServer`].
    #[serde(default)]
    pub server: RawServer,
    /// Named upstream servers that requests can be sent to. Default: none.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// The model names clients may ask for, and where each goes. Default: none.
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// Usage records. Default: SQLite under `sluice-data/`.
    #[serde(default)]
    pub ledger: crate::ledger::RawLedger,
    /// Price overrides and additions, USD per million tokens. Default: none
    /// (the table shipped with sluice).
    #[serde(default)]
    pub pricing: Vec<crate::ledger::RawPrice>,
    /// Failover, retries, breakers. Default: see [`RawRouting`].
    #[serde(default)]
    pub routing: RawRouting,
    /// Admin key and whether clients need a key. Default: see [`RawAuth`].
    #[serde(default)]
    pub auth: RawAuth,
    /// Tenants, their keys, limits and budgets. Default: none.
    #[serde(default)]
    pub tenants: RawTenants,
    /// Where limit state lives. Default: this node only.
    #[serde(default)]
    pub quotas: RawQuotas,
    /// Budget periods and alerts. Default: UTC, no webhook.
    #[serde(default)]
    pub budgets: RawBudgets,
    /// Node capacity, fair queuing, preemption, pauses. Default: see
    /// [`crate::streams::RawStreams`].
    #[serde(default)]
    pub streams: crate::streams::RawStreams,
    /// The access log. Default: on, with its default fields (see
    /// [`crate::observability::RawLogging`]).
    #[serde(default)]
    pub logging: crate::observability::RawLogging,
    /// OpenTelemetry trace export. Default: none unless
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see
    /// [`crate::observability::RawTracing`]).
    #[serde(default)]
    pub tracing: crate::observability::RawTracing,
}

/// `server:` — how sluice listens and what it accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on (HTTP/1.1 and h2c, or HTTPS with `tls`).
    /// Default `127.0.0.1:8080`; the `--listen` flag overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Worker threads serving requests. Default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Largest request body accepted, in bytes; larger ones get a 413.
    /// Default 16777216 (16 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds to keep serving in-flight requests after SIGTERM. Default 5.
    #[serde(default = "default_grace_period_s")]
    pub grace_period_s: u64,
    /// Address of the admin listener, which serves `/admin/...`, `/metrics`,
    /// the stream control API (`/v1/streams...`), `/docs/llms.txt` and
    /// health; the public `listen` address serves only the OpenAI and
    /// Anthropic endpoints and health. Default `127.0.0.1:9090`; the
    /// `--admin-listen` flag overrides it.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Unix socket through which a new sluice started with `--upgrade` takes
    /// the listening sockets over from this one (zero-downtime upgrade).
    /// Default `sluice-data/upgrade.sock`, relative to the working
    /// directory like the default ledger; both processes must name the same.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    /// Log line format: `text` or `json`. Default `text`; `--log-format` overrides it.
    #[serde(default)]
    pub log_format: RawLogFormat,
    /// Milliseconds a client has to send a whole request header (and the
    /// HTTP/2 preface) once its connection opens or its first byte arrives.
    /// Default 10000.
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds a request body may go without a byte arriving. Default 30000.
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    /// Seconds an idle keep-alive connection stays open between requests.
    /// Default 60.
    #[serde(default)]
    pub keepalive_timeout_s: Option<u64>,
    /// Open client connections, in all. Default 10000.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Open client connections from one IP address. Default 1000.
    #[serde(default)]
    pub max_connections_per_client: Option<usize>,
    /// Request header fields. Default 100.
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// Bytes of request header names and values. Default 65536.
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// HTTPS on `listen`: certificates, SNI, reloading. Default: none
    /// (plain HTTP). See [`crate::RawTls`].
    #[serde(default)]
    pub tls: Option<crate::RawTls>,
    /// HTTPS on `admin_listen`, and with `client_ca_file` mutual TLS (only
    /// clients holding a certificate from that CA reach the admin API and
    /// metrics). Default: none (plain HTTP; keep it on loopback).
    #[serde(default)]
    pub admin_tls: Option<crate::RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            threads: None,
            max_body_bytes: default_max_body_bytes(),
            grace_period_s: default_grace_period_s(),
            admin_listen: default_admin_listen(),
            upgrade_sock: default_upgrade_sock(),
            log_format: RawLogFormat::default(),
            header_timeout_ms: None,
            body_timeout_ms: None,
            keepalive_timeout_s: None,
            max_connections: None,
            max_connections_per_client: None,
            max_headers: None,
            max_header_bytes: None,
            tls: None,
            admin_tls: None,
        }
    }
}

/// `server.log_format`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `upstreams.<name>:` — one upstream server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// What the upstream is: `openai` (the default) or an OpenAI-compatible
    /// preset (`groq`, `mistral`, `deepseek`, `together`, `openrouter`,
    /// `vllm`, `ollama`, `tgi`, `sluice`), or a translated API (`azure`,
    /// `anthropic`, `gemini`, `bedrock`), or `local`: the built-in inference
    /// engine, run inside sluice (it takes the `local` keys below and refuses
    /// `base_url`, `api_key`, `api_key_file`, `headers` and the other
    /// remote-only keys).
    #[serde(default)]
    pub kind: Option<String>,
    /// Base URL including the API version prefix, e.g.
    /// `https://api.openai.com/v1`. `http` and `https` only. Default: the
    /// kind's well-known URL; required for `azure` and `sluice`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// API key: `Authorization: Bearer` (OpenAI-compatible), `api-key`
    /// (Azure), `x-api-key` (Anthropic), `x-goog-api-key` (Gemini); usually
    /// `${ENV_VAR}`. Default: none. Never logged or echoed.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// A file holding the API key instead of `api_key` (a mounted secret);
    /// re-read when it changes, without a restart. Default: none.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Milliseconds a whole exchange may take, streaming included. Default: no limit.
    #[serde(default)]
    pub total_timeout_ms: Option<u64>,
    /// Azure `api-version`. Default `2024-10-21`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Anthropic `anthropic-version` header. Default `2023-06-01`.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Anthropic `max_tokens` when the client gives none. Default 4096.
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
    /// Bedrock region, e.g. `us-east-1`. Required for `bedrock`.
    #[serde(default)]
    pub region: Option<String>,
    /// Bedrock access key id. Required for `bedrock`.
    #[serde(default)]
    pub aws_access_key_id: Option<Secret>,
    /// Bedrock secret access key. Required for `bedrock`.
    #[serde(default)]
    pub aws_secret_access_key: Option<Secret>,
    /// Bedrock session token of temporary credentials. Default: none.
    #[serde(default)]
    pub aws_session_token: Option<Secret>,
    /// Extra headers sent on every request to this upstream. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `local` only: a GGUF file, or an HF model folder (`config.json`,
    /// `model.safetensors`, `tokenizer.json`); relative paths are relative to
    /// the working directory. Required for `local`.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// `local` only: where the model runs, `cpu` or `cuda:N` (N the GPU
    /// index). Default `cpu`.
    #[serde(default)]
    pub device: Option<String>,
    /// `local` only: KV cache size in blocks; give this or `kv_cache_bytes`,
    /// not both. Default: neither (the engine sizes the cache from a memory
    /// budget).
    #[serde(default)]
    pub kv_cache_blocks: Option<usize>,
    /// `local` only: KV cache size in bytes; give this or `kv_cache_blocks`,
    /// not both. Default: neither.
    #[serde(default)]
    pub kv_cache_bytes: Option<u64>,
    /// `local` only: most sequences decoded together. Default 64.
    #[serde(default)]
    pub max_sequences: Option<usize>,
    /// `local` only: most requests waiting for the engine beyond
    /// `max_sequences`; past it the engine answers overloaded at once and a
    /// chain moves on. Default 4 × `max_sequences`; 0 queues nothing.
    #[serde(default)]
    pub max_waiting: Option<usize>,
    /// `local` only: most tokens (prompt chunks and decodes) in one engine
    /// step. Default 512.
    #[serde(default)]
    pub max_tokens_per_step: Option<usize>,
    /// `local` only: threads for the CPU kernels. Default 0: every core.
    #[serde(default)]
    pub threads: Option<usize>,
    /// `local` only: a Jinja chat template file that replaces the model's own
    /// (GGUF `tokenizer.chat_template`, or `tokenizer_config.json`). Default:
    /// the model's.
    #[serde(default)]
    pub chat_template: Option<PathBuf>,
    /// `local` only: what the ledger charges for this model's tokens.
    /// Default: free (`input: "0"`, `output: "0"`).
    #[serde(default)]
    pub price: Option<RawLocalPrice>,
    /// PEM file of the CA certificates that sign this upstream's TLS
    /// certificate (a private CA); with it, only these are trusted for this
    /// upstream, in place of the system's roots. `https` base URLs only.
    /// Default: none (the system's roots; verification is always on).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Milliseconds to establish the TCP (and TLS) connection. Default 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Milliseconds from sending the request to the response headers; a
    /// non-streamed completion only answers when it is done, so this is long.
    /// Default 600000 (10 minutes).
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Milliseconds allowed between two pieces of a response body. Default 300000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// `upstreams.<name>.price:` (kind `local`) — USD per million tokens, as
/// decimals written as numbers or strings (`"0.05"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalPrice {
    /// USD per million prompt tokens. Default `"0"`.
    #[serde(default = "DecimalText::zero")]
    pub input: DecimalText,
    /// USD per million completion tokens. Default `"0"`.
    #[serde(default = "DecimalText::zero")]
    pub output: DecimalText,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_string()
}
fn default_upgrade_sock() -> String {
    "sluice-data/upgrade.sock".to_string()
}
fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_grace_period_s() -> u64 {
    5
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_first_byte_timeout_ms() -> u64 {
    600_000
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
