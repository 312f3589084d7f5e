//! Hot config reload, on SIGHUP or when the config file changes (its
//! modification time, checked every second).
//!
//! The new file is loaded and validated first; a file that does not load,
//! or that changes a setting only a restart can change, is refused with its
//! error logged, and the running config keeps serving. Otherwise a new
//! [`Gateway`] is assembled from it ([`Gateway::reloaded`]), sharing the
//! running one's metrics, ledger, runtimes, engines, live streams, and
//! quota and budget state, and swapped in whole: each request takes the
//! gateway current when it starts ([`LiveGateway`]) and finishes on it, so
//! in-flight requests keep the config they started with and no connection
//! is dropped. Each reload is logged and counted in
//! `sluice_config_reloads_total{outcome}`.

use super::Gateway;
use crate::ops::Metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sluice_config::{Config, ConfigError, UpstreamKind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the config file's modification time is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The gateway that serves, swapped whole by a reload.
pub struct LiveGateway {
    current: ArcSwap<Gateway>,
    /// Fixed at start (`server:` needs a restart to change).
    server_options: HttpServerOptions,
}

impl LiveGateway {
    /// Serves with `gateway` until a reload replaces it.
    pub fn new(gateway: Gateway) -> Self {
        let server_options = gateway.server_options.clone();
        LiveGateway {
            current: ArcSwap::from_pointee(gateway),
            server_options,
        }
    }

    /// The gateway serving now: a request keeps it until it finishes.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// pingora's HTTP server options (fixed at start).
    pub fn server_options(&self) -> &HttpServerOptions {
        &self.server_options
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// It changes settings only a restart can change.
    #[error("these settings need a restart to change: {}", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    /// Its prices do not load.
    #[error("prices: {0}")]
    Prices(#[from] sluice_ledger::LedgerError),
    /// The reload task failed.
    #[error("the reload did not finish")]
    Interrupted,
}

impl ReloadError {
    fn outcome(&self) -> &'static str {
        match self {
            ReloadError::Config(_) | ReloadError::Prices(_) => "invalid",
            ReloadError::NeedsRestart(_) => "needs_restart",
            ReloadError::Interrupted => "failed",
        }
    }
}

/// Loads the config again the way it was loaded at start (the file, then
/// the command line's overrides).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Reloads the config into the [`LiveGateway`].
pub struct Reloader {
    source: ConfigSource,
    /// The config file, watched for changes (`None`: embedded defaults).
    path: Option<PathBuf>,
    live: Arc<LiveGateway>,
    /// The config serving now.
    running: Mutex<Config>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// A reloader for `live`, which serves `running`, loaded from `source`
    /// (and `path`, watched when given).
    pub fn new(
        source: ConfigSource,
        path: Option<PathBuf>,
        live: Arc<LiveGateway>,
        running: Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reloader {
            source,
            path,
            live,
            running: Mutex::new(running),
            metrics,
        }
    }

    /// Loads, checks and swaps in the config. Blocking (it reads the file
    /// and the key store): call it off the async workers.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let mut next = (self.source)()?;
        let mut running = self.running.lock().map_err(|_| ReloadError::Interrupted)?;
        keep_resolved_local_models(&running, &mut next);
        let changed = restart_only_changes(&running, &next);
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart(changed));
        }
        let old = self.live.current();
        old.services.accounting.set_prices(&next)?;
        let gateway = old.reloaded(&next);
        let added: Vec<_> = gateway
            .services
            .access
            .config_keys()
            .iter()
            .filter(|k| {
                !old.services
                    .access
                    .config_keys()
                    .iter()
                    .any(|o| o.key_id == k.key_id)
            })
            .cloned()
            .collect();
        crate::admin::keys::load_stored_tenants(&gateway.services.access, &gateway.admin());
        super::server::seed_budgets_of(&gateway, &added);
        self.live.current.store(Arc::new(gateway));
        *running = next;
        Ok(())
    }

    /// [`Reloader::reload`], logged and counted.
    fn reload_and_report(&self, why: &'static str) {
        let outcome = match self.reload() {
            Ok(()) => {
                tracing::info!(trigger = why, "config reloaded");
                "ok"
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "config reload refused; the running config keeps serving");
                e.outcome()
            }
        };
        self.metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
    }

    fn modified(&self) -> Option<SystemTime> {
        let path = self.path.as_ref()?;
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }
}

/// A local model given as the default path was resolved at start (the
/// fetched or generated file): the same default in the new file means the
/// same model.
fn keep_resolved_local_models(running: &Config, next: &mut Config) {
    for upstream in &mut next.upstreams {
        let UpstreamKind::Local(settings) = &mut upstream.kind else {
            continue;
        };
        if settings.model != std::path::Path::new(sluice_config::DEFAULT_LOCAL_MODEL_PATH) {
            continue;
        }
        let resolved = running.upstreams.iter().find_map(|u| match &u.kind {
            UpstreamKind::Local(s) if u.name == upstream.name => Some(s.model.clone()),
            _ => None,
        });
        if let Some(model) = resolved {
            settings.model = model;
        }
    }
}

/// The settings `next` changes that only a restart can change: where and
/// how sluice listens, the ledger's database and writer, stream capacity,
/// the trace exporter, where quota state lives, and the built-in engines.
/// (The access log's fields do reload.)
fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // Debug output hides secrets: they are compared exposed, one by one.
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    if !same(&running.server, &next.server) {
        changed.push("server");
    }
    let (a, b) = (&running.ledger, &next.ledger);
    if a.enabled != b.enabled
        || a.database_url.expose() != b.database_url.expose()
        || a.spool_dir != b.spool_dir
        || a.node_id != b.node_id
        || a.allow_unpriced != b.allow_unpriced
        || a.queue_capacity != b.queue_capacity
        || a.batch_size != b.batch_size
        || a.flush_interval != b.flush_interval
        || !same(&a.durability, &b.durability)
    {
        changed.push("ledger");
    }
    if !same(&running.streams, &next.streams) {
        changed.push("streams");
    }
    if !same(&running.tracing, &next.tracing) {
        changed.push("tracing (the trace exporter starts once)");
    }
    let (a, b) = (&running.access, &next.access);
    if a.redis_url.as_ref().map(|u| u.expose()) != b.redis_url.as_ref().map(|u| u.expose())
        || a.redis_fail_open != b.redis_fail_open
        || a.budget_time_zone != b.budget_time_zone
    {
        changed.push("quotas (redis_url, fail_open, budget time zone)");
    }
    let engines = |c: &Config| -> Vec<String> {
        c.upstreams
            .iter()
            .filter(|u| matches!(u.kind, UpstreamKind::Local(_)))
            .map(|u| format!("{u:?}"))
            .collect()
    };
    if engines(running) != engines(next) {
        changed.push("upstreams of kind local (the built-in engine)");
    }
    changed
}

/// Watches for SIGHUP and for the config file changing, and reloads.
pub struct ReloadWatch(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for ReloadWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot watch SIGHUP: config reload by signal is off");
            return;
        };
        let mut seen = self.0.modified();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            let why = tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangups.recv() => "sighup",
                _ = tick.tick() => {
                    if self.0.modified() == seen {
                        continue;
                    }
                    "file_changed"
                }
            };
            let reloader = self.0.clone();
            let done = tokio::task::spawn_blocking(move || reloader.reload_and_report(why)).await;
            if done.is_err() {
                tracing::error!("config reload task failed");
            }
            // Whatever woke it, the file as loaded now is the one seen (a
            // SIGHUP after editing the file must not reload it twice).
            seen = self.0.modified();
        }
    }
}
