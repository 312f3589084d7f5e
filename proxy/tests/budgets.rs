//! Budgets that hold: reservations under 200 concurrent requests, a stream
//! cut when it crosses the hard limit, and a soft limit that alerts and
//! downgrades.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{sse_data, OpenAiErrorBody, Sluice};
use serde_json::{json, Value};
use sluice_ledger::Store;
use sluice_load_tests::{MockOptions, MockUpstream};
use sqlx::Row;
use std::time::Duration;

fn config(base_url: &str, key_budget: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
  - {{name: cheap, upstream: mock, upstream_model: gpt-4.1-nano}}
ledger:
  flush_interval_ms: 20
tenants:
  acme:
    keys:
      - {{id: acme-app, key: sk-acme, budget: {key_budget}}}
{extra}
"#
    )
}

async fn spent(sluice: &Sluice, expected_rows: i64) -> (i64, Vec<String>) {
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    for _ in 0..200 {
        if store.record_count(None).await.unwrap() >= expected_rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rows = sqlx::query("SELECT cost_micros, end_state FROM usage_records")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let total = rows.iter().map(|r| r.get::<i64, _>(0)).sum();
    (total, rows.iter().map(|r| r.get::<String, _>(1)).collect())
}

#[tokio::test]
async fn two_hundred_concurrent_requests_never_overshoot_a_small_budget() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    // 500 micro-dollars: a few dozen requests' worth at gpt-4o-mini prices.
    let sluice = Sluice::start(&config(
        &mock.base_url(),
        "{limit_usd: 0.0005, period: total}",
        "",
    ))
    .await;
    let client = reqwest::Client::new();
    let requests = (0..200).map(|_| {
        let client = client.clone();
        let url = sluice.url("/v1/chat/completions");
        async move {
            let r = client
                .post(url)
                .bearer_auth("sk-acme")
                .json(&json!({"model": "mini", "max_tokens": 100,
                              "messages": [{"role": "user", "content": "Count the budget, please."}]}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if status == 429 {
                let body: OpenAiErrorBody = r.json().await.unwrap();
                assert_eq!(body.error.code.as_deref(), Some("insufficient_quota"));
                assert_eq!(body.error.kind, "insufficient_quota");
            }
            status
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, 200, "{statuses:?}");
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    let (total, _) = spent(&sluice, ok as i64).await;
    // Every admitted request reserved its worst case, and none cost more than
    // that: the spend stays within the limit (1 micro-dollar of rounding each).
    assert!(
        total <= 500 + ok as i64,
        "spent {total} of 500 with {ok} requests"
    );
    assert_eq!(mock.stats().requests() as usize, ok);
}

#[tokio::test]
async fn a_stream_that_crosses_the_hard_limit_is_cut_cleanly_and_billed() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    // The reservation (prompt + 2 assumed tokens) passes; the stream then runs long.
    let extra = "budgets: {default_max_tokens: 2}";
    let sluice = Sluice::start(&config(
        &mock.base_url(),
        "{limit_usd: 0.00003, period: daily}",
        extra,
    ))
    .await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("x-mock-chunks", "400")
        .json(&json!({"model": "mini", "stream": true, "messages": [{"role": "user", "content": "go on"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let error: OpenAiErrorBody = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error.error.code.as_deref(), Some("insufficient_quota"));
    let last_chunk: Value = serde_json::from_str(&events[events.len() - 3]).unwrap();
    assert_eq!(last_chunk["choices"][0]["finish_reason"], "length");
    let delivered = events
        .iter()
        .filter(|e| e.contains("\"content\":\"tok"))
        .count();
    assert!(
        delivered > 0 && delivered < 400,
        "cut part-way: {delivered} chunks"
    );

    let (total, states) = spent(&sluice, 1).await;
    assert_eq!(states, ["cancelled"]);
    assert!(total > 0, "what was delivered is billed");
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_budget_events_total{event="stream_cut"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn crossing_the_soft_limit_alerts_once_and_downgrades() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let hook = MockUpstream::start(MockOptions::default()).await.unwrap();
    let extra = format!(
        "budgets: {{alert_webhook: \"http://{}/hook\"}}",
        hook.addr()
    );
    let budget = "{limit_usd: 10, soft_limit_usd: 0, period: monthly, downgrade_to: cheap}";
    let sluice = Sluice::start(&config(&mock.base_url(), budget, &extra)).await;
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .post(sluice.url("/v1/chat/completions"))
            .bearer_auth("sk-acme")
            .json(&json!({"model": "mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-downgraded-to"], "cheap");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "gpt-4.1-nano", "served by the cheaper model");
    }
    for _ in 0..100 {
        if hook.stats().requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hook.stats().requests(), 1, "one alert per scope and period");
    let alert = hook.stats().last_request().unwrap();
    assert_eq!(alert.path, "/hook");
    let event = alert.json();
    assert_eq!(event["event"], "budget.soft_limit_crossed");
    assert_eq!(
        (event["scope"].as_str(), event["name"].as_str()),
        (Some("key"), Some("acme-app"))
    );
}

#[tokio::test]
async fn a_spent_budget_refuses_and_survives_a_restart() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let yaml = config(
        &mock.base_url(),
        "{limit_usd: 0.00002, period: monthly}",
        "",
    );
    let mut sluice = Sluice::start(&yaml).await;
    let ask = |sluice: &Sluice| {
        reqwest::Client::new()
            .post(sluice.url("/v1/chat/completions"))
            .bearer_auth("sk-acme")
            .json(&json!({"model": "mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(ask(&sluice).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses[0], 200);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    assert!(sluice.terminate().success());
    // Same scratch dir, same ledger: the spend is rebuilt from it on start.
    let config_path = sluice.dir().join("sluice.yaml");
    let restarted = Sluice::start_in(sluice.dir(), &config_path).await;
    assert_eq!(ask(&restarted).await.unwrap().status(), 429);
}

#[tokio::test]
async fn a_reservation_covers_every_choice_and_the_dearest_failover_target() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = format!(
        r#"
upstreams:
  mock: {{base_url: "{}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
  - name: nano-then-4o
    chain:
      - targets: [{{upstream: mock, model: gpt-4.1-nano}}]
      - targets: [{{upstream: mock, model: gpt-4o}}]
tenants:
  acme:
    keys:
      - {{id: acme-app, key: sk-acme, budget: {{limit_usd: 0.01, period: daily}}}}
"#,
        mock.base_url()
    );
    let sluice = Sluice::start(&config).await;
    let ask = |body: Value| {
        let url = sluice.url("/v1/chat/completions");
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth("sk-acme")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let messages = json!([{"role": "user", "content": "hi"}]);
    // 1,000 tokens of gpt-4o-mini ($0.60/M): $0.0006 of a $0.01 budget.
    assert_eq!(
        ask(json!({"model": "mini", "max_tokens": 1000, "messages": messages})).await,
        200
    );
    // The same for 100 answers is $0.06: more than the budget holds.
    assert_eq!(
        ask(json!({"model": "mini", "max_tokens": 1000, "n": 100, "messages": messages})).await,
        429
    );
    // 2,000 tokens at gpt-4.1-nano ($0.40/M) would fit, but the chain may
    // fail over to gpt-4o ($10/M: $0.02), so the hold is priced at that.
    assert_eq!(
        ask(json!({"model": "nano-then-4o", "max_tokens": 2000, "messages": messages})).await,
        429
    );
    assert_eq!(
        ask(json!({"model": "nano-then-4o", "max_tokens": 200, "messages": messages})).await,
        200
    );
    assert_eq!(mock.stats().requests(), 2);
}
