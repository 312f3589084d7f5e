//! The provider adapter API: one [`Provider`] per upstream, statically
//! dispatched over the wire formats sluice speaks.
//!
//! For each request the proxy calls [`Provider::build_request`] (method,
//! path, headers, body in the provider's format) and, once the upstream's
//! status is known, [`Provider::response_translator`], which it feeds the
//! response body piece by piece: OpenAI-compatible upstreams pass through
//! untouched (only usage is read), the others are rewritten into OpenAI JSON
//! or `chat.completion.chunk` SSE as their bytes arrive.

use crate::anthropic::{self, Anthropic};
use crate::azure::Azure;
use crate::bedrock::{self, Bedrock};
use crate::chunk::ChunkWriter;
use crate::gemini::{self, Gemini};
use crate::openai::OpenAiCompatible;
use crate::{
    Endpoint, ProviderError, RoutingFields, UpstreamError, UpstreamErrorKind, Usage, UsageTracker,
};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use sluice_config::{UpstreamBaseUrl, UpstreamSettings};

/// Which wire format an upstream speaks, with the settings only that format
/// needs: config's validated upstream kind, used as is.
pub use sluice_config::UpstreamKind as ProviderKind;

pub use sluice_config::{find_preset, Preset, PRESETS};

/// What every adapter shares: where the upstream is and the fixed headers
/// (credentials first, then configured extras).
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub path_prefix: String,
    pub host_header: String,
    pub tls: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Base {
    /// Builds the base; `auth` names the header that carries the key and
    /// how to render it (`None`: the key is not sent as a header).
    pub fn new(settings: &UpstreamSettings, auth: Option<(&'static str, &str)>) -> Self {
        let mut headers = Vec::with_capacity(settings.headers.len() + 2);
        if let (Some((name, prefix)), Some(key)) = (auth, &settings.api_key) {
            if let Ok(mut value) = HeaderValue::from_str(&format!("{prefix}{}", key.expose())) {
                value.set_sensitive(true);
                headers.push((HeaderName::from_static(name), value));
            }
        }
        headers.extend(settings.headers.iter().filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        }));
        Base {
            path_prefix: settings.base_url.path_prefix.clone(),
            host_header: host_header(&settings.base_url),
            tls: settings.base_url.tls,
            headers,
        }
    }

    /// Adds a fixed header (after credentials, before nothing in particular).
    pub fn push_static(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
    }
}

/// The `Host` header for a base URL: the port only when not the scheme's default.
pub(crate) fn host_header(url: &UpstreamBaseUrl) -> String {
    let default_port = if url.tls { 443 } else { 80 };
    if url.port == default_port {
        if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        }
    } else {
        url.authority()
    }
}

/// Percent-encodes one path segment (a model name, a deployment): everything
/// but RFC 3986 unreserved characters, so a client-chosen name (wildcard
/// routes) can never add path segments or a query.
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the response translator needs to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Whether the client asked for a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Pass-through only: sluice asked for usage on the client's behalf, so
    /// the usage-only chunk is dropped on the way back.
    pub strip_usage_chunk: bool,
    /// The model named in translated replies when the provider names none.
    pub model: String,
}

/// One request as it goes upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Always `POST` today.
    pub method: http::Method,
    /// Path and query, e.g. `/v1/messages` or `/v1beta/models/x:streamGenerateContent?alt=sse`.
    pub path_and_query: String,
    /// Headers to set (credentials, version, content type, signature); set
    /// after any forwarded client headers, replacing same-named ones.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the client's own headers (less [`crate::openai::CLIENT_HEADERS_NOT_FORWARDED`])
    /// may travel too: true for OpenAI-compatible upstreams, false for
    /// translated ones (an `accept-encoding` would make the reply unreadable
    /// to the translator, and SigV4 signs exact headers).
    pub forward_client_headers: bool,
    /// The body to send.
    pub body: Bytes,
    /// Keep this for [`Provider::response_translator`].
    pub reply: ReplyContext,
}

/// An upstream's adapter: configuration and code in one enum.
#[derive(Debug, Clone)]
pub enum Provider {
    /// OpenAI-compatible: the body passes through (model renamed).
    OpenAi(OpenAiCompatible),
    /// Azure OpenAI: OpenAI's format at deployment URLs.
    Azure(Azure),
    /// Anthropic Messages.
    Anthropic(Anthropic),
    /// Google Gemini.
    Gemini(Gemini),
    /// AWS Bedrock Converse.
    Bedrock(Bedrock),
}

impl Provider {
    /// The adapter for a configured upstream, as its `kind` says.
    pub fn from_settings(settings: &UpstreamSettings) -> Self {
        Provider::new(settings, settings.kind.clone())
    }

    /// Builds the adapter for one upstream from its validated settings
    /// (address, `api_key`, extra headers) and its kind.
    pub fn new(settings: &UpstreamSettings, kind: ProviderKind) -> Self {
        match kind {
            // `Local` (the built-in engine) speaks OpenAI's shape; the gateway
            // serves it in-process and never sends it an HTTP request.
            ProviderKind::OpenAi | ProviderKind::Local(_) => {
                Provider::OpenAi(OpenAiCompatible::new(settings))
            }
            ProviderKind::Azure { api_version } => {
                Provider::Azure(Azure::new(settings, &api_version))
            }
            ProviderKind::Anthropic {
                version,
                default_max_tokens,
            } => Provider::Anthropic(Anthropic::new(settings, &version, default_max_tokens)),
            ProviderKind::Gemini => Provider::Gemini(Gemini::new(settings)),
            ProviderKind::Bedrock {
                region,
                access_key_id,
                secret_access_key,
                session_token,
            } => Provider::Bedrock(Bedrock::new(
                settings,
                bedrock::Credentials {
                    region,
                    access_key_id: access_key_id.expose().to_string(),
                    secret_access_key,
                    session_token,
                },
            )),
        }
    }

    /// A label for metrics and logs: `openai`, `azure`, `anthropic`, `gemini`, `bedrock`.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::OpenAi(_) => "openai",
            Provider::Azure(_) => "azure",
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gemini",
            Provider::Bedrock(_) => "bedrock",
        }
    }

    /// Whether replies pass through unchanged (OpenAI wire format upstream).
    pub fn is_passthrough(&self) -> bool {
        matches!(self, Provider::OpenAi(_) | Provider::Azure(_))
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> &str {
        match self {
            Provider::OpenAi(a) => a.host_header(),
            Provider::Azure(a) => &a.base.host_header,
            Provider::Anthropic(a) => &a.base.host_header,
            Provider::Gemini(a) => &a.base.host_header,
            Provider::Bedrock(a) => &a.base.host_header,
        }
    }

    /// Turns the client's OpenAI request into the upstream's: `body` is the
    /// raw request, `fields` its parsed routing fields, `upstream_model` the
    /// name (or Azure deployment, or Bedrock model id) to call.
    pub fn build_request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        fields: &RoutingFields,
        upstream_model: &str,
    ) -> Result<UpstreamRequest, ProviderError> {
        let mut reply = ReplyContext {
            endpoint,
            stream: fields.stream,
            include_usage: fields.include_usage,
            strip_usage_chunk: false,
            model: upstream_model.to_string(),
        };
        let (path_and_query, headers, body, forward) = match self {
            Provider::OpenAi(a) => {
                let (body, asked) = fields.body_for_upstream(body, upstream_model);
                reply.strip_usage_chunk = asked;
                (a.path(endpoint), a.wire_headers().to_vec(), body, true)
            }
            Provider::Azure(a) => {
                let (body, asked) = fields.body_for_upstream(body, upstream_model);
                reply.strip_usage_chunk = asked;
                (
                    a.path(endpoint, upstream_model),
                    a.base.headers.clone(),
                    body,
                    true,
                )
            }
            Provider::Anthropic(a) => {
                let (path, out) = a.request(endpoint, body, fields.stream, upstream_model)?;
                (path, a.base.headers.clone(), Bytes::from(out), false)
            }
            Provider::Gemini(a) => {
                let (path, out) = a.request(endpoint, body, fields.stream, upstream_model)?;
                (path, a.base.headers.clone(), Bytes::from(out), false)
            }
            Provider::Bedrock(a) => {
                let (path, out) = a.request(endpoint, body, fields.stream, upstream_model)?;
                let headers = a.signed_headers(&path, &out, std::time::SystemTime::now())?;
                (path, headers, Bytes::from(out), false)
            }
        };
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path_and_query,
            headers,
            forward_client_headers: forward,
            body,
            reply,
        })
    }

    /// A translator for one response, created when its status is known.
    pub fn response_translator(&self, reply: &ReplyContext, status: u16) -> ResponseTranslator {
        let success = (200..300).contains(&status);
        let format = match self {
            Provider::OpenAi(_) | Provider::Azure(_) => {
                // OpenAI's own 401 names part of the key: reword credential
                // failures; pass every other reply through untouched.
                if matches!(status, 401 | 403) {
                    return ResponseTranslator::error(Format::OpenAi, status);
                }
                let sse = success && reply.stream;
                return ResponseTranslator {
                    status,
                    mode: Mode::Passthrough(UsageTracker::new(sse, reply.strip_usage_chunk)),
                };
            }
            Provider::Anthropic(_) => Format::Anthropic,
            Provider::Gemini(_) => Format::Gemini,
            Provider::Bedrock(_) => Format::Bedrock,
        };
        if !success {
            return ResponseTranslator::error(format, status);
        }
        let mode = if reply.stream && reply.endpoint == Endpoint::ChatCompletions {
            let writer = ChunkWriter::new(&reply.model, reply.include_usage);
            let decoder = match format {
                Format::Anthropic => StreamDecoder::Anthropic(anthropic::StreamState::default()),
                Format::Gemini => StreamDecoder::Gemini(gemini::StreamState::default()),
                _ => StreamDecoder::Bedrock(bedrock::StreamState::default()),
            };
            Mode::Stream(Box::new(StreamMode {
                writer,
                decoder,
                out: BytesMut::new(),
            }))
        } else {
            Mode::Body {
                format,
                reply: reply.clone(),
                buf: BytesMut::new(),
                usage: None,
            }
        };
        ResponseTranslator { status, mode }
    }

    /// Classifies a complete error reply (`status` not 2xx) without
    /// streaming: for callers that read error bodies whole before deciding
    /// on failover.
    pub fn translate_error(&self, status: u16, body: &[u8]) -> UpstreamError {
        match self {
            Provider::OpenAi(_) | Provider::Azure(_) => openai_error(status, body),
            Provider::Anthropic(_) => anthropic::error(status, body),
            Provider::Gemini(_) => gemini::error(status, body),
            Provider::Bedrock(_) => bedrock::error(status, body),
        }
    }
}

/// Reads an OpenAI-shaped error body (`{"error":{"message":..}}`).
fn openai_error(status: u16, body: &[u8]) -> UpstreamError {
    #[derive(serde::Deserialize)]
    struct E {
        error: Option<M>,
    }
    #[derive(serde::Deserialize)]
    struct M {
        message: Option<String>,
    }
    let message = serde_json::from_slice::<E>(body)
        .ok()
        .and_then(|e| e.error)
        .and_then(|m| m.message);
    UpstreamError::new(UpstreamErrorKind::from_status(status), message.as_deref())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

fn format_error(format: Format, status: u16, body: &[u8]) -> UpstreamError {
    match format {
        Format::OpenAi => openai_error(status, body),
        Format::Anthropic => anthropic::error(status, body),
        Format::Gemini => gemini::error(status, body),
        Format::Bedrock => bedrock::error(status, body),
    }
}

/// Largest non-stream body buffered for translation.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest error body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Rewrites one response on its way to the client. Feed every piece of the
/// upstream body to [`ResponseTranslator::relay`] and send what it returns;
/// call [`ResponseTranslator::finish`] at the end of the upstream body.
#[derive(Debug)]
pub struct ResponseTranslator {
    status: u16,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// OpenAI format both sides: bytes relayed as they come, usage read.
    Passthrough(UsageTracker),
    /// A whole translated reply, written at the end.
    Body {
        format: Format,
        reply: ReplyContext,
        buf: BytesMut,
        usage: Option<Usage>,
    },
    /// A non-2xx reply, re-worded at the end.
    Error {
        format: Format,
        upstream_status: u16,
        buf: BytesMut,
        error: Option<UpstreamError>,
    },
    /// A translated stream, rewritten event by event.
    Stream(Box<StreamMode>),
}

#[derive(Debug)]
struct StreamMode {
    writer: ChunkWriter,
    decoder: StreamDecoder,
    out: BytesMut,
}

#[derive(Debug)]
enum StreamDecoder {
    Anthropic(anthropic::StreamState),
    Gemini(gemini::StreamState),
    Bedrock(bedrock::StreamState),
}

impl ResponseTranslator {
    fn error(format: Format, upstream_status: u16) -> Self {
        ResponseTranslator {
            status: UpstreamErrorKind::from_status(upstream_status).status(),
            mode: Mode::Error {
                format,
                upstream_status,
                buf: BytesMut::new(),
                error: None,
            },
        }
    }

    /// The status to send the client (an upstream error's status is mapped
    /// from the status alone; the body only refines the message).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `content-type` to send, when the body is rewritten (then also
    /// drop the upstream's `content-length`); `None`: keep the upstream's.
    pub fn content_type(&self) -> Option<&'static str> {
        match self.mode {
            Mode::Passthrough(_) => None,
            Mode::Stream(_) => Some("text/event-stream"),
            Mode::Body { .. } | Mode::Error { .. } => Some("application/json"),
        }
    }

    /// Takes a piece of the upstream body; returns what to send the client
    /// now (possibly nothing).
    pub fn relay(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.mode {
            Mode::Passthrough(t) => t.relay(chunk),
            Mode::Body { buf, .. } => {
                if buf.len() + chunk.len() <= MAX_BODY {
                    buf.extend_from_slice(&chunk);
                }
                Bytes::new()
            }
            Mode::Error { buf, .. } => {
                let room = MAX_ERROR_BODY.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                Bytes::new()
            }
            Mode::Stream(s) => {
                let StreamMode {
                    writer,
                    decoder,
                    out,
                } = &mut **s;
                match decoder {
                    StreamDecoder::Anthropic(d) => d.feed(&chunk, writer, out),
                    StreamDecoder::Gemini(d) => d.feed(&chunk, writer, out),
                    StreamDecoder::Bedrock(d) => d.feed(&chunk, writer, out),
                }
                out.split().freeze()
            }
        }
    }

    /// Call when the upstream body has ended; returns the rest to send.
    pub fn finish(&mut self) -> Bytes {
        match &mut self.mode {
            Mode::Passthrough(t) => t.finish(),
            Mode::Body {
                format,
                reply,
                buf,
                usage,
            } => {
                let body = std::mem::take(buf);
                let result = match format {
                    Format::Anthropic => anthropic::response(reply, &body),
                    Format::Gemini => gemini::response(reply, &body),
                    Format::Bedrock => bedrock::response(reply, &body),
                    Format::OpenAi => Ok((body.freeze(), None)),
                };
                match result {
                    Ok((out, u)) => {
                        *usage = u;
                        out
                    }
                    Err(e) => {
                        self.status = e.status();
                        e.openai_body()
                    }
                }
            }
            Mode::Error {
                format,
                upstream_status,
                buf,
                error,
            } => {
                let e = format_error(*format, *upstream_status, buf);
                let body = e.openai_body();
                *error = Some(e);
                body
            }
            Mode::Stream(s) => {
                let StreamMode {
                    writer,
                    decoder,
                    out,
                } = &mut **s;
                match decoder {
                    StreamDecoder::Anthropic(d) => d.finish(writer, out),
                    StreamDecoder::Gemini(d) => d.finish(writer, out),
                    StreamDecoder::Bedrock(d) => d.finish(writer, out),
                }
                out.split().freeze()
            }
        }
    }

    /// The provider's own usage, if it reported one (complete after [`ResponseTranslator::finish`]).
    pub fn usage(&self) -> Option<Usage> {
        match &self.mode {
            Mode::Passthrough(t) => t.reported(),
            Mode::Body { usage, .. } => *usage,
            Mode::Error { .. } => None,
            Mode::Stream(s) => s.writer.usage(),
        }
    }

    /// Text delivered in stream deltas, for counting when no usage came.
    pub fn delivered_text(&self) -> &str {
        match &self.mode {
            Mode::Passthrough(t) => t.delivered_text(),
            Mode::Stream(s) => s.writer.delivered_text(),
            Mode::Body { .. } | Mode::Error { .. } => "",
        }
    }

    /// Whether the stream ended properly (`[DONE]` went by).
    pub fn saw_done(&self) -> bool {
        match &self.mode {
            Mode::Passthrough(t) => t.saw_done(),
            Mode::Stream(s) => s.writer.done(),
            Mode::Body { .. } | Mode::Error { .. } => false,
        }
    }

    /// The upstream error this reply carried: a non-2xx reply (after
    /// [`ResponseTranslator::finish`]) or an error event in a translated stream.
    pub fn upstream_error(&self) -> Option<&UpstreamError> {
        match &self.mode {
            Mode::Error { error, .. } => error.as_ref(),
            Mode::Stream(s) => match &s.decoder {
                StreamDecoder::Anthropic(d) => d.error(),
                StreamDecoder::Gemini(d) => d.error(),
                StreamDecoder::Bedrock(d) => d.error(),
            },
            _ => None,
        }
    }
}

/// Translates a whole reply in one call (tests, benches, and callers that
/// buffer): returns the client status and body.
pub fn translate_whole(
    provider: &Provider,
    reply: &ReplyContext,
    status: u16,
    body: Bytes,
) -> (u16, Bytes) {
    let mut t = provider.response_translator(reply, status);
    let mut out = BytesMut::new();
    out.extend_from_slice(&t.relay(body));
    out.extend_from_slice(&t.finish());
    (t.status(), out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::load_str;

    fn settings(yaml: &str) -> UpstreamSettings {
        load_str(yaml, &|_| None).unwrap().upstreams[0].clone()
    }

    #[test]
    fn openai_passes_through_and_rewords_auth_failures() {
        let s =
            settings("upstreams:\n  u: {base_url: 'https://api.openai.com/v1', api_key: sk-1}\n");
        let p = Provider::new(&s, ProviderKind::OpenAi);
        let body = Bytes::from_static(br#"{"model":"a","stream":true,"messages":[]}"#);
        let fields = RoutingFields::parse(&body).unwrap();
        let req = p
            .build_request(Endpoint::ChatCompletions, &body, &fields, "b")
            .unwrap();
        assert_eq!(req.path_and_query, "/v1/chat/completions");
        assert!(req.forward_client_headers);
        assert!(req.reply.strip_usage_chunk);
        assert_eq!(req.headers[0].1, "Bearer sk-1");
        assert!(req.headers[0].1.is_sensitive());
        let (status, out) = translate_whole(
            &p,
            &req.reply,
            401,
            Bytes::from_static(br#"{"error":{"message":"Incorrect API key provided: sk-1"}}"#),
        );
        assert_eq!(status, 502);
        assert!(!String::from_utf8_lossy(&out).contains("sk-1"));
        let t = p.response_translator(&req.reply, 200);
        assert_eq!(t.content_type(), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("gemini-2.0_flash~1"), "gemini-2.0_flash~1");
        assert_eq!(
            encode_segment("anthropic.claude-v2:1/../x?y"),
            "anthropic.claude-v2%3A1%2F..%2Fx%3Fy"
        );
    }

    #[test]
    fn presets_cover_every_format() {
        for format in ["openai", "azure", "anthropic", "gemini", "bedrock"] {
            assert!(PRESETS.iter().any(|p| p.format == format));
        }
        assert_eq!(
            find_preset("groq").unwrap().base_url,
            Some("https://api.groq.com/openai/v1")
        );
    }
}
