//! Log output through `tracing`: text or JSON lines on stderr, filtered by
//! `RUST_LOG` (default `info`). pingora's own `log` records are bridged in.
//!
//! Lines are gathered in memory and written in batches ([`BatchedStderr`]):
//! every [`FLUSH_INTERVAL`], when [`BATCH_BYTES`] are waiting, at once for a
//! warning or an error (after what came before it), and when sluice stops.
//! The access log is a line per request; one `write` each cost about as
//! much CPU as the rest of sluice's filters (`load-tests/access_log.sh`).
//! A crash can lose at most the last interval's info lines.
//! With the `otel` cargo feature and an OTLP endpoint (`tracing.otlp_endpoint`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported as well
//! ([`super::otel`]).

use sluice_config::{LogFormat, TracingSettings};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Longest an info line waits in memory before it is written.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
/// Bytes waiting that get written at once.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Log lines gathered in memory, written to stderr in batches. Why by hand:
/// tracing-appender's non-blocking writer wakes its thread for every line,
/// which on a busy 2-core node cost more than the `write` it saves.
#[derive(Clone)]
pub struct BatchedStderr {
    waiting: Arc<Mutex<Vec<u8>>>,
}

impl BatchedStderr {
    /// A batch, and the thread that writes it every [`FLUSH_INTERVAL`].
    fn start() -> Self {
        let batched = BatchedStderr {
            waiting: Arc::new(Mutex::new(Vec::with_capacity(BATCH_BYTES))),
        };
        let flusher = batched.clone();
        let _ = std::thread::Builder::new()
            .name("sluice-log".to_string())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush_now();
            });
        batched
    }

    /// Writes what is waiting.
    fn flush_now(&self) {
        let Ok(mut waiting) = self.waiting.lock() else {
            return;
        };
        if !waiting.is_empty() {
            let _ = std::io::stderr().write_all(&waiting);
            waiting.clear();
        }
    }
}

/// One event's line: added to the batch when the event is written.
pub struct BatchedLine<'a> {
    batch: &'a BatchedStderr,
    /// Warnings and errors are written at once.
    urgent: bool,
}

impl Write for BatchedLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let Ok(mut waiting) = self.batch.waiting.lock() else {
            return std::io::stderr().write(bytes);
        };
        waiting.extend_from_slice(bytes);
        if self.urgent || waiting.len() >= BATCH_BYTES {
            let _ = std::io::stderr().write_all(&waiting);
            waiting.clear();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = BatchedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchedLine {
            batch: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        BatchedLine {
            batch: self,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Keeps span export running, and writes the log lines still waiting when
/// dropped (it flushes the spans not yet sent too). Hold it until the
/// server has stopped.
#[must_use = "dropping the guard stops span export"]
pub struct LogGuard {
    /// Written out on drop.
    lines: BatchedStderr,
    /// The exporter's provider, shut down (flushed) on drop.
    #[cfg(feature = "otel")]
    _exporting: Option<super::otel::Exporting>,
}

/// Installs the global subscriber; call once, first thing, outside any
/// async runtime (the span exporter starts its own thread).
pub fn init(format: LogFormat, tracing: &TracingSettings) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let batch = BatchedStderr::start();
    let lines = tracing_subscriber::fmt::layer().with_writer(batch.clone());
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
            lines: batch,
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
        LogGuard { lines: batch }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.lines.flush_now();
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
