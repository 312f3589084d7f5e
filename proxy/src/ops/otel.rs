//! OpenTelemetry traces, built only with the `otel` cargo feature: every
//! `tracing` span (the request span with its GenAI attributes above all)
//! exported over OTLP/HTTP (protobuf) by `tracing-opentelemetry`, and W3C
//! trace context carried through: a client's `traceparent` is the request
//! span's parent ([`continue_trace`]), and the request span's context is
//! what the upstream receives ([`inject`]).
//!
//! Export runs when `tracing.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the batch processor
//! honours the SDK's `OTEL_BSP_*` variables. Without an exporter nothing
//! here acts, and a client's `traceparent` passes upstream untouched.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;
use sluice_config::TracingSettings;
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// The exporting tracer provider; dropping it flushes and stops export.
pub struct Exporting {
    /// Shut down on drop, which exports the spans still queued.
    provider: SdkTracerProvider,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The `tracing` layer that exports spans, and the guard that keeps it
/// exporting.
pub type ExportLayer<S> = (OpenTelemetryLayer<S, SdkTracer>, Exporting);

/// The `tracing` layer exporting spans, and the guard that keeps it
/// exporting; `None` when no OTLP endpoint is configured. Call outside any
/// async runtime (the HTTP client is a blocking one on the processor's thread).
pub fn layer<S>(settings: &TracingSettings) -> Result<Option<ExportLayer<S>>, ExporterBuildError>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let from_env = super::logging::env_endpoint().is_some();
    if settings.otlp_traces_url.is_none() && !from_env {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    // Left out, the exporter reads the OTEL_EXPORTER_OTLP_* variables.
    if let Some(url) = &settings.otlp_traces_url {
        exporter = exporter.with_endpoint(url.as_str());
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    // Left out, the SDK reads OTEL_SERVICE_NAME, else `unknown_service`.
    let service_name = settings
        .service_name
        .clone()
        .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "sluice".to_string());
    resource = resource.with_service_name(service_name);
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("sluice");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok(Some((layer, Exporting { provider })))
}

/// Makes the trace of a client's `traceparent` (and `tracestate`) the
/// parent of `span`; call right after creating it. Nothing happens without
/// a valid header or without export.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no exporting layer is installed: nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// Sets `traceparent` (and `tracestate`) on the upstream `request` to the
/// current span's context, replacing the client's. Leaves the request as it
/// is when no span is exported.
pub fn inject(request: &mut RequestHeader) -> pingora::Result<()> {
    let context: Context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Ok(());
    }
    let mut fields = Fields(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    for (name, value) in fields.0 {
        request.insert_header(name, value)?;
    }
    Ok(())
}

/// A client's request headers, read by the propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The headers the propagator writes, collected to set on a pingora header.
struct Fields(Vec<(&'static str, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator writes only these two.
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn without_an_exporter_the_clients_traceparent_is_left_alone() {
        let mut request = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        let client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        request.insert_header("traceparent", client).unwrap();
        let span = tracing::info_span!("request");
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", client.parse().unwrap());
        continue_trace(&span, &headers);
        span.in_scope(|| inject(&mut request)).unwrap();
        assert_eq!(request.headers["traceparent"], client);
    }

    #[test]
    fn the_extractor_reads_the_w3c_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let cx = TraceContextPropagator::new().extract(&Headers(&headers));
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }
}
