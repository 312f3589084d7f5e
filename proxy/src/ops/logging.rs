//! Log output through `tracing`: text or JSON lines on stderr, filtered by
//! `RUST_LOG` (default `info`). pingora's own `log` records are bridged in.
//! With the `otel` cargo feature and an OTLP endpoint (`tracing.otlp_endpoint`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported as well
//! ([`super::otel`]).

use sluice_config::{LogFormat, TracingSettings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps span export running; dropping it flushes the spans not yet sent.
/// Hold it until the server has stopped.
#[must_use = "dropping the guard stops span export"]
pub struct LogGuard {
    /// The exporter's provider, shut down (flushed) on drop.
    #[cfg(feature = "otel")]
    _exporting: Option<super::otel::Exporting>,
}

/// Installs the global subscriber; call once, first thing, outside any
/// async runtime (the span exporter starts its own thread).
pub fn init(format: LogFormat, tracing: &TracingSettings) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Json => lines.json().with_current_span(true).boxed(),
        LogFormat::Text => lines.boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(lines);

    #[cfg(feature = "otel")]
    {
        let (layer, exporting, failed) = match super::otel::layer(tracing) {
            Ok(Some((layer, exporting))) => (Some(layer), Some(exporting), None),
            Ok(None) => (None, None, None),
            Err(e) => (None, None, Some(e)),
        };
        let _ = subscriber.with(layer).try_init();
        if let Some(e) = failed {
            tracing::error!(error = %e, "cannot export traces; serving without");
        }
        LogGuard {
            _exporting: exporting,
        }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = subscriber.try_init();
        if tracing.otlp_traces_url.is_some() || env_endpoint().is_some() {
            tracing::warn!(
                "an OTLP endpoint is set but this sluice was built without the `otel` feature: no traces are exported"
            );
        }
        LogGuard {}
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or its traces-only variant), when set.
pub fn env_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}
