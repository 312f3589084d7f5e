//! Hot config reload through the real binary: the file rewritten twice
//! under load (no failed request, the new routes in effect), a bad file
//! and a restart-only change refused while the running config keeps
//! serving, SIGHUP, and quota state kept across a reload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, Sluice};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// Waits until `/metrics` counts `n` reloads with `outcome`.
async fn reloads(sluice: &Sluice, outcome: &str, n: u64) {
    let line = format!(r#"sluice_config_reloads_total{{outcome="{outcome}"}} {n}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(sluice.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(&line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{line}`:\n{metrics}\nlog:\n{}",
            sluice.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(client: &reqwest::Client, sluice: &Sluice, model: &str) -> u16 {
    let response = client
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_rewritten_twice_under_load_drops_nothing_and_takes_effect() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let base = mock.base_url();
    let sluice = Arc::new(Sluice::start(&config_for(&base, "")).await);
    let (stop, sent, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut load = Vec::new();
    for worker in 0..4 {
        let (sluice, stop, sent, failed) =
            (sluice.clone(), stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            // Keep-alive connections, streamed and not: each request must
            // finish whole on the config it started with.
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let stream = worker % 2 == 0;
                let ok = match client
                    .post(sluice.url("/v1/chat/completions"))
                    .header("x-mock-chunk-delay-ms", "5")
                    .json(&chat("fast", stream))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(text) => !stream || text.ends_with("data: [DONE]\n\n"),
                        Err(_) => false,
                    },
                    _ => false,
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    assert_eq!(status_of(&client, &sluice, "second").await, 404);
    // First rewrite: a new model.
    let second = "  - {name: second, upstream: mock, upstream_model: mock-model}\n";
    std::fs::write(sluice.config_path(), config_for(&base, second)).unwrap();
    reloads(&sluice, "ok", 1).await;
    assert_eq!(status_of(&client, &sluice, "second").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Second rewrite: that model gone again, another in.
    let third = "  - {name: third, upstream: mock, upstream_model: mock-model}\n";
    std::fs::write(sluice.config_path(), config_for(&base, third)).unwrap();
    reloads(&sluice, "ok", 2).await;
    assert_eq!(status_of(&client, &sluice, "third").await, 200);
    assert_eq!(status_of(&client, &sluice, "second").await, 404);
    let models: Value = reqwest::get(sluice.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast", "third"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 50, "the load ran: {sent} requests");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across two reloads"
    );
}

#[tokio::test]
async fn a_bad_file_or_a_restart_only_change_is_refused_and_the_old_config_serves() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let base = mock.base_url();
    let sluice = Sluice::start(&config_for(&base, "")).await;
    let client = reqwest::Client::new();
    std::fs::write(
        sluice.config_path(),
        "upstreams: {mock: {base_url: 12}}\nmodels: [oops\n",
    )
    .unwrap();
    reloads(&sluice, "invalid", 1).await;
    assert_eq!(
        status_of(&client, &sluice, "fast").await,
        200,
        "the old config still serves"
    );
    // A valid file that moves the ledger: only a restart can.
    let moved = config_for(&base, "") + "ledger: {batch_size: 7}\n";
    std::fs::write(sluice.config_path(), moved).unwrap();
    reloads(&sluice, "needs_restart", 1).await;
    assert_eq!(status_of(&client, &sluice, "fast").await, 200);
    let log = sluice.log();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(
        log.contains("these settings need a restart to change: ledger"),
        "{log}"
    );
    // SIGHUP reloads the (now good again) file.
    std::fs::write(sluice.config_path(), config_for(&base, "")).unwrap();
    reloads(&sluice, "ok", 1).await;
    sluice.signal("HUP");
    reloads(&sluice, "ok", 2).await;
    sluice.wait_log("sighup", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn quota_state_survives_a_reload() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = |extra: &str| {
        format!(
            r#"
upstreams:
  mock: {{base_url: "{}"}}
models:
  - {{name: fast, upstream: mock, upstream_model: mock-model}}
{extra}
tenants:
  acme:
    keys:
      - {{id: app, key: sk-app, limits: {{requests_per_minute: 2}}}}
"#,
            mock.base_url()
        )
    };
    let sluice = Sluice::start(&config("")).await;
    let client = reqwest::Client::new();
    let call = || async {
        client
            .post(sluice.url("/v1/chat/completions"))
            .bearer_auth("sk-app")
            .json(&chat("fast", false))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call().await, 200);
    assert_eq!(call().await, 200);
    assert_eq!(call().await, 429);
    // A reload that adds a model: the requests used still count. (A
    // changed limit starts a fresh window: `LocalQuotas::state`.)
    let more = "  - {name: more, upstream: mock, upstream_model: mock-model}";
    std::fs::write(sluice.config_path(), config(more)).unwrap();
    reloads(&sluice, "ok", 1).await;
    assert_eq!(
        call().await,
        429,
        "the requests before the reload still count"
    );
}
