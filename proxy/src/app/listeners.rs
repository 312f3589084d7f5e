//! The two listeners and the pingora server they run in.
//!
//! - **public** (`server.listen`): the OpenAI and Anthropic endpoints and
//!   health;
//! - **admin** (`server.admin_listen`): the admin and stream control APIs,
//!   `/metrics`, `/docs/llms.txt` and health.
//!
//! Both are the same [`Gateway`] behind their own [`Edge`] (the same edge
//! limits, each its own connection count, so a flood on the public port
//! leaves room to scrape and administer). The route table decides what each
//! serves ([`RouteKind::served`](super::routes::RouteKind::served)); a route
//! of the other listener answers exactly as a path that does not exist.
//!
//! [`pingora_server`] also wires the zero-downtime upgrade: a process started
//! with [`Start::Upgrade`] takes both listening sockets over from the running
//! one through `server.upgrade_sock` (pingora's hand-over: the old process
//! sends them on SIGQUIT, keeps accepting for 5 s, then drains like SIGTERM).

use super::edge::Edge;
use super::reload::LiveGateway;
use super::routes::Listener;
use super::{Gateway, Reuse};
use crate::tls::ServerTlsParts;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use sluice_config::ServerSettings;
use std::path::PathBuf;
use std::sync::Arc;

/// How this process comes by its listening sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// Binds them itself.
    #[default]
    Fresh,
    /// Takes them over from a running sluice through `server.upgrade_sock`
    /// (`sluice serve --upgrade`); that one must be sent SIGQUIT.
    Upgrade,
}

/// The upgrade socket's directory could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the directory of server.upgrade_sock ({path}): {source}")]
pub struct UpgradeSockError {
    /// The directory.
    path: PathBuf,
    /// Why.
    source: std::io::Error,
}

/// The gateway as one listener serves it.
pub struct ListenerApp {
    /// The gateway both listeners share, swapped whole by a reload.
    live: Arc<LiveGateway>,
    /// Which routes this listener serves.
    listener: Listener,
}

impl ListenerApp {
    /// Serves one request of this listener (see [`Gateway::serve_one`]).
    pub async fn serve_one(
        &self,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<Reuse> {
        // The gateway current as the request starts: it finishes on it.
        self.live
            .current()
            .serve_one(session, shutdown, self.listener)
            .await
    }

    /// The gateway behind it now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.current()
    }
}

/// Pingora's HTTP/2 server calls this for each stream (HTTP/1.x goes
/// through [`Edge`]).
#[async_trait]
impl HttpServerApp for ListenerApp {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.serve_one(session, shutdown)
            .await
            .map(|reuse| ReusedHttpStream::new(reuse.stream, Some(reuse.settings)))
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(self.live.server_options())
    }
}

/// The public and the admin listener over `gateway`, as pingora services
/// bound to `server.listen` and `server.admin_listen`; each serves HTTPS
/// through `tls` when `server.tls` (`server.admin_tls`, with mutual TLS
/// when it names a `client_ca_file`) is set, else plain HTTP.
pub fn listeners(
    live: Arc<LiveGateway>,
    server: &ServerSettings,
    tls: &ServerTlsParts,
) -> [Service<Edge>; 2] {
    [
        (Listener::Public, server.listen),
        (Listener::Admin, server.admin_listen),
    ]
    .map(|(listener, addr)| {
        let app = ListenerApp {
            live: live.clone(),
            listener,
        };
        let name = format!("sluice-{}", listener.label());
        let acceptor: Option<Arc<Acceptor>> = match listener {
            Listener::Public => tls.acceptor.clone(),
            Listener::Admin => tls.admin_acceptor.clone(),
        };
        let edge = Edge::new(app, server.limits.clone()).with_tls(acceptor);
        let mut service = Service::new(name, edge);
        service.add_tcp(&addr.to_string());
        service
    })
}

/// The pingora server for `server`: threads, the SIGTERM grace period and,
/// with [`Start::Upgrade`], the listening sockets taken over from the running
/// process (this blocks until it sends them, for up to 5 s; pingora exits
/// the process with status 1 when none arrive).
pub fn pingora_server(server: &ServerSettings, start: Start) -> Result<Server, UpgradeSockError> {
    if let Some(dir) = server
        .upgrade_sock
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| UpgradeSockError {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let grace = server.grace_period.as_secs();
    let conf = ServerConf {
        threads: server.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        upgrade_sock: server.upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: start == Start::Upgrade,
        ..Opt::default()
    };
    let mut pingora = Server::new_with_opt_and_conf(opt, conf);
    if start == Start::Upgrade {
        tracing::info!(
            upgrade_sock = %server.upgrade_sock.display(),
            "waiting for the running sluice to hand its listening sockets over (send it SIGQUIT)"
        );
    }
    pingora.bootstrap();
    if start == Start::Upgrade {
        tracing::info!("listening sockets taken over");
    }
    Ok(pingora)
}
