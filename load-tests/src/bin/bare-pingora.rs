//! `bare-pingora`: the framework's limit, for load-test baselines. A pingora
//! `ProxyHttp` whose only hook is `upstream_peer` (one fixed plain-HTTP
//! upstream); no filters, no body handling, no metrics. HTTP/1.1 and h2c
//! downstream, like sluice.

use async_trait::async_trait;
use clap::Parser;
use pingora::apps::HttpServerOptions;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

/// A pass-through HTTP proxy with nothing in it.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// `host:port` of the upstream (plain HTTP/1.1).
    #[arg(long)]
    upstream: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Forwards every request to `upstream`.
struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        // A benchmark fixture: stop at once on SIGTERM too.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    let mut service = Service::new("bare-pingora".to_string(), proxy);
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.run(RunArgs::default());
}
