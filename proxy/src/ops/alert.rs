//! Soft-limit alerts: a log line, a metric, and an optional webhook POST
//! with a JSON body, sent once per scope and budget period.

use super::Metrics;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use sluice_config::UpstreamBaseUrl;
use sluice_filters::SoftLimitAlert;
use std::sync::Arc;
use std::time::Duration;

/// How long a webhook may take before it is given up (alerts never block requests).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where soft-limit alerts go: the log, a metric, and the webhook.
pub struct Alerts {
    /// `budgets.alert_webhook`, when set.
    webhook: Option<String>,
    /// Its own small connector: alerts never share the upstream pool.
    connector: Arc<Connector>,
    /// For `sluice_budget_events_total`.
    metrics: Arc<Metrics>,
}

impl Alerts {
    /// Alerts to `webhook` (when set) and the log.
    pub fn new(webhook: Option<String>, metrics: Arc<Metrics>) -> Self {
        Alerts {
            webhook,
            connector: Arc::new(Connector::new(Some(ConnectorOptions::new(8)))),
            metrics,
        }
    }

    /// Announces that `scope` crossed its soft budget limit (the caller
    /// makes sure it is once per scope and period). Never waits: the
    /// webhook is posted from a task of its own.
    pub fn soft_limit_crossed(&self, alert: &SoftLimitAlert) {
        tracing::warn!(
            scope = alert.scope.kind().as_str(),
            name = alert.scope.name(),
            spent_micros = alert.spent_and_reserved_micros,
            "soft budget limit crossed"
        );
        self.metrics.budget_event("soft_limit_crossed");
        let Some(url) = self.webhook.clone() else {
            return;
        };
        let body = alert.to_json().to_string();
        let connector = self.connector.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(
                WEBHOOK_TIMEOUT,
                post(connector.as_ref(), &url, Bytes::from(body)),
            )
            .await;
            match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => {}
                Ok(Ok(status)) => tracing::warn!(status, "budget alert webhook refused the alert"),
                Ok(Err(e)) => tracing::warn!(error = %e, "budget alert webhook failed"),
                Err(_) => tracing::warn!("budget alert webhook timed out"),
            }
        });
    }
}

/// POSTs `body` as JSON to `url` through pingora's connector; returns the status.
async fn post(
    connector: &pingora::connectors::http::Connector,
    url: &str,
    body: Bytes,
) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let base = UpstreamBaseUrl::parse(url)?;
    let addr = tokio::net::lookup_host(base.authority())
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("webhook host did not resolve")?;
    let peer = HttpPeer::new(addr, base.tls, base.host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request =
        RequestHeader::build("POST", path.as_bytes(), Some(3)).map_err(|e| e.to_string())?;
    let host = uri.authority().map_or(base.host.clone(), |a| a.to_string());
    let header = |r: &mut RequestHeader, k: &'static str, v: String| {
        r.insert_header(k, v).map_err(|e| e.to_string())
    };
    header(&mut request, "host", host)?;
    header(&mut request, "content-type", "application/json".to_string())?;
    header(&mut request, "content-length", body.len().to_string())?;
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(|e| e.to_string())?;
    session
        .write_request_body(body, true)
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let status = session.response_header().map_or(0, |h| h.status.as_u16());
    session.shutdown().await;
    Ok(status)
}
