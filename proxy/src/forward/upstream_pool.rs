//! Upstream connections: one pingora peer per configured upstream, resolved
//! on first use, and one shared keep-alive pool.

use pingora::connectors::http::v1;
use pingora::connectors::ConnectorOptions;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use sluice_providers::UpstreamTarget;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Idle upstream connections kept for reuse, across all upstreams.
const KEEPALIVE_POOL_SIZE: usize = 1024;
/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A configured upstream's peer, resolved lazily so that sluice starts (and
/// answers health probes) even while an upstream's DNS is failing.
struct LazyPeer {
    name: String,
    authority: String,
    tls: bool,
    sni: String,
    connect_timeout: Duration,
    /// `ca_file`: the only roots trusted for this upstream; `None`: the system's.
    ca: Option<Arc<CaType>>,
    resolved: OnceCell<HttpPeer>,
}

/// Peers and the shared connection pool.
pub struct UpstreamPool {
    /// pingora's HTTP/1.1 connector (upstreams speak HTTP/1.1); its pool
    /// reuses connections per peer.
    connector: v1::Connector,
    peers: Vec<LazyPeer>,
}

impl UpstreamPool {
    /// One lazy peer per router target, in the same order.
    pub fn new(targets: &[UpstreamTarget]) -> Self {
        let peers = targets
            .iter()
            .map(|t| LazyPeer {
                name: t.settings.name.clone(),
                authority: t.settings.base_url.authority(),
                tls: t.settings.base_url.tls,
                sni: t.settings.base_url.host.clone(),
                connect_timeout: t.settings.connect_timeout,
                ca: t.settings.ca_file.as_deref().map(|path| {
                    crate::tls::upstream_roots(path).unwrap_or_else(|error| {
                        // Checked at startup; a file broken since fails closed.
                        tracing::error!(upstream = %t.settings.name, %error, "upstream ca_file unusable; its TLS connections will fail");
                        Arc::from(Vec::new())
                    })
                }),
                resolved: OnceCell::new(),
            })
            .collect();
        UpstreamPool {
            connector: v1::Connector::new(Some(ConnectorOptions::new(KEEPALIVE_POOL_SIZE))),
            peers,
        }
    }

    /// A connection to `peer`: a pooled one when there is one, else a new
    /// one; the flag says whether it was pooled.
    ///
    /// Connecting is a future of about 9 KB, and every enclosing future holds
    /// its callee twice over (rust-lang/rust#62958), so the request's whole
    /// state grew to ~80 KB, copied and allocated per request. Taking the
    /// pool first and boxing only the rare connect keeps it small.
    pub async fn session(&self, peer: &HttpPeer) -> pingora::Result<(HttpSession, bool)> {
        if let Some(pooled) = self.connector.reused_http_session(peer).await {
            return Ok((HttpSession::H1(pooled), true));
        }
        let (fresh, reused) = Box::pin(self.connector.get_http_session(peer)).await?;
        Ok((HttpSession::H1(fresh), reused))
    }

    /// Returns a finished exchange's connection to the pool.
    pub async fn release(&self, session: HttpSession, peer: &HttpPeer) {
        match session {
            HttpSession::H1(h1) => {
                self.connector
                    .release_http_session(h1, peer, Some(POOL_IDLE_TIMEOUT))
                    .await
            }
            mut other => other.shutdown().await,
        }
    }

    /// The peer for target `index`, resolving its address on first use;
    /// `Err` says why there is none.
    pub async fn peer(&self, index: usize) -> Result<&HttpPeer, &'static str> {
        let lazy = self.peers.get(index).ok_or("no such upstream")?;
        lazy.resolved
            .get_or_try_init(|| async {
                let addr = tokio::net::lookup_host(lazy.authority.as_str())
                    .await
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| {
                        tracing::warn!(upstream = %lazy.name, authority = %lazy.authority, "cannot resolve upstream address");
                        "address could not be resolved"
                    })?;
                let mut peer = HttpPeer::new(addr, lazy.tls, lazy.sni.clone());
                peer.options.connection_timeout = Some(lazy.connect_timeout);
                peer.options.total_connection_timeout = Some(lazy.connect_timeout);
                peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
                peer.options.ca = lazy.ca.clone();
                Ok(peer)
            })
            .await
    }
}
