//! Assembling and running the pingora server around the [`Gateway`].

use super::listeners::{listeners, pingora_server, Start, UpgradeSockError};
use super::reload::{ConfigSource, LiveGateway, ReloadWatch, Reloader};
use super::{Gateway, GatewayParts};
use crate::forward::NamedBackends;
use crate::ops::{Accounting, ControlRuntime, Metrics};
use async_trait::async_trait;
use pingora::server::{RunArgs, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use sluice_config::Config;
use sluice_filters::{AccessPolicy, KeyEntry, Scope};
use sluice_ledger::{round_picos_to_micros, GroupKey};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Metrics could not be registered (a duplicate name: a bug).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The ledger or price table could not start.
    #[error(transparent)]
    Accounting(#[from] crate::ops::accounting::AccountingError),
    /// A runtime thread could not start.
    #[error("cannot start the control runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A certificate, key or CA file of `server.tls` or an upstream's
    /// `ca_file` could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The upgrade socket's directory could not be made.
    #[error(transparent)]
    UpgradeSock(#[from] UpgradeSockError),
    /// A local model could not be loaded.
    #[error("cannot start local model {upstream}: {message}")]
    LocalModel {
        /// The upstream's configured name.
        upstream: String,
        /// What went wrong.
        message: String,
    },
}

/// Flips readiness on once pingora runs its services, and off again when
/// shutdown begins, so load balancers stop sending before the listener closes.
struct Readiness(Arc<AtomicBool>);

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.0.store(true, Ordering::Release);
        tracing::info!("sluice is ready");
        let _ = shutdown.changed().await;
        self.0.store(false, Ordering::Release);
    }
}

/// Loads what every budgeted key and tenant already spent this period, the
/// ledger being the durable source of truth.
fn seed_budgets(access: &AccessPolicy, accounting: &Accounting, control: &tokio::runtime::Handle) {
    let requests = access.budgets_to_seed(access.config_keys());
    seed(access, accounting, control, &requests);
}

/// After a reload, seeds the budgets of keys the new config `added` (the
/// running ones keep their state; tenants' too).
pub fn seed_budgets_of(gateway: &Gateway, added: &[KeyEntry]) {
    let access = &gateway.services.access;
    let requests: Vec<_> = access
        .budgets_to_seed(added)
        .into_iter()
        .filter(|r| matches!(r.scope, Scope::Key(_)))
        .collect();
    seed(
        access,
        &gateway.services.accounting,
        gateway.control(),
        &requests,
    );
}

fn seed(
    access: &AccessPolicy,
    accounting: &Accounting,
    control: &tokio::runtime::Handle,
    requests: &[sluice_filters::SeedRequest],
) {
    for request in requests {
        let (group, name) = match &request.scope {
            Scope::Key(id) => (GroupKey::Key, id),
            Scope::Tenant(tenant) => (GroupKey::Tenant, tenant),
        };
        let spent_picos: i128 = accounting
            .spent_since(request.since_unix_us, group)
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, picos)| picos)
            .sum();
        // Budgets count micro-dollars: the exact sum, rounded once.
        let spent = round_picos_to_micros(spent_picos);
        control.block_on(access.seed(request, spent));
    }
    if !requests.is_empty() {
        tracing::info!(budgets = requests.len(), "budgets seeded from the ledger");
    }
}

/// Where a reload reads the config again: how to load it, and the file to
/// watch for changes (`None`: embedded defaults, reloaded on SIGHUP only).
pub struct ReloadFrom {
    /// Loads the config as at start.
    pub source: ConfigSource,
    /// The config file.
    pub path: Option<std::path::PathBuf>,
}

/// Runs sluice with `config` until SIGTERM (graceful), SIGQUIT (graceful,
/// after handing the listening sockets to a process started with
/// [`Start::Upgrade`]) or SIGINT (fast). `local` are the in-process
/// backends, by upstream name; `reload`, when given, reloads the config on
/// SIGHUP and when its file changes.
pub fn run(
    config: Config,
    local: NamedBackends,
    start: Start,
    reload: Option<ReloadFrom>,
) -> Result<(), StartupError> {
    let metrics = Arc::new(Metrics::new()?);
    let tls = crate::tls::for_server(&config, &metrics)?;
    let ready = Arc::new(AtomicBool::new(false));
    let control = ControlRuntime::start()?;
    let accounting = Arc::new(Accounting::start(
        &config,
        metrics.clone(),
        control.handle(),
    )?);
    let gateway = Gateway::new(
        &config,
        GatewayParts {
            metrics,
            accounting: accounting.clone(),
            control: control.handle(),
            ready: ready.clone(),
            local,
        },
    );
    let access = &gateway.services.access;
    crate::admin::keys::load_stored_tenants(access, &gateway.admin());
    // Spend is rebuilt from the ledger: let a spool from the last run land first.
    accounting.catch_up();
    seed_budgets(access, &accounting, &control.handle());
    if !access.required() {
        tracing::warn!("auth is off: anyone who reaches this port uses the upstream keys (declare tenants or set auth.required)");
    }

    let mut server = pingora_server(&config.server, start)?;
    let metrics = gateway.services.metrics.clone();
    let live = Arc::new(LiveGateway::new(gateway));
    for listener in listeners(live.clone(), &config.server, &tls) {
        server.add_service(listener);
    }
    server.add_service(background_service("readiness", Readiness(ready)));
    for reloader in tls.reloaders {
        server.add_service(background_service("tls-reload", reloader));
    }
    if let Some(from) = reload {
        let reloader = Reloader::new(from.source, from.path, live, config.clone(), metrics);
        server.add_service(background_service(
            "config reload",
            ReloadWatch(Arc::new(reloader)),
        ));
    }

    tracing::info!(
        listen = %config.server.listen,
        tls = config.server.tls.is_some(),
        admin_listen = %config.server.admin_listen,
        threads = config.server.threads,
        upstreams = config.upstreams.len(),
        models = config.models.len(),
        "starting sluice"
    );
    server.run(RunArgs::default());
    // Every request has finished: flush the ledger (or spool it) before exit.
    accounting.shutdown();
    tracing::info!("sluice stopped");
    Ok(())
}
