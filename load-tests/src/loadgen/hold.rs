//! Many streams held open at once, for memory per stream.

use super::{connect, has_content, LoadSpec, Protocol, Requests, Sender};
use http_body_util::BodyExt;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What [`hold_streams`] saw.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    /// Streams asked for.
    pub requested: usize,
    /// Streams that delivered their first content event and were still open
    /// when the hold ended.
    pub open: usize,
    /// Streams that failed to open or broke during the hold.
    pub failed: usize,
    /// Seconds from the first request until the last stream's first token.
    pub open_all_s: f64,
}

/// Opens `streams` streaming requests (each as `spec` describes, over h2c
/// with at most `per_connection` streams per connection, or one HTTP/1.1
/// connection each) at `open_rate_per_s`, waits until each has delivered its first content
/// event, calls `during` once all are open (or after `open_timeout`), keeps
/// them open and reading until `during` returns, then drops them all.
pub async fn hold_streams<F, Fut>(
    spec: &LoadSpec,
    streams: usize,
    per_connection: usize,
    open_rate_per_s: f64,
    open_timeout: Duration,
    during: F,
) -> std::io::Result<HoldReport>
where
    F: FnOnce(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let requests = Arc::new(Requests::new(spec)?);
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let mut senders = Vec::new();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        // Paced, so a burst of thousands of connects does not overflow the
        // listen backlogs of the target and of the upstream behind it.
        let due = start + Duration::from_secs_f64(i as f64 / open_rate_per_s.max(1.0));
        tokio::time::sleep_until(due.into()).await;
        let sender = match spec.protocol {
            Protocol::H2c => {
                if i % per_connection.max(1) == 0 {
                    senders.push(connect(&spec.url, Protocol::H2c).await?);
                }
                senders.last().cloned()
            }
            Protocol::Http1 => connect(&spec.url, Protocol::Http1).await.ok(),
        };
        let request = requests.build(i as u64, spec.protocol)?;
        let (opened, failed, mut stop) = (opened.clone(), failed.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let Some(sender) = sender else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let held = async {
                let response = match &sender {
                    Sender::Http1(s) => {
                        let mut s = s.lock().await;
                        s.send_request(request).await
                    }
                    Sender::H2(s) => s.clone().send_request(request).await,
                };
                let Ok(response) = response else { return false };
                if !response.status().is_success() {
                    return false;
                }
                let mut body = response.into_body();
                let mut counted = false;
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    if !counted && frame.data_ref().is_some_and(|d| has_content(d)) {
                        counted = true;
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // The stream ended before the hold did.
                if counted {
                    opened.fetch_sub(1, Ordering::Relaxed);
                }
                false
            };
            tokio::select! {
                ok = held => if !ok { failed.fetch_add(1, Ordering::Relaxed); },
                _ = stop.wait_for(|s| *s) => {}
            }
        }));
    }
    let deadline = start + open_timeout;
    while (opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)) < streams as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_all_s = start.elapsed().as_secs_f64();
    during(opened.load(Ordering::Relaxed) as usize).await;
    let report = HoldReport {
        requested: streams,
        open: opened.load(Ordering::Relaxed) as usize,
        failed: failed.load(Ordering::Relaxed) as usize,
        open_all_s,
    };
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(report)
}
