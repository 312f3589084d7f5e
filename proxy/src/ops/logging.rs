//! Log output through `tracing`: text or JSON lines on stderr, filtered by
//! `RUST_LOG` (default `info`). pingora's own `log` records are bridged in.

use sluice_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; call once, first thing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
