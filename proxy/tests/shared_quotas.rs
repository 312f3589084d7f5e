//! Two sluice nodes sharing limits through a real redis-server, and what
//! each outage policy does when Redis dies mid-run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use serde_json::json;
use sluice_load_tests::servers::RedisServer;
use sluice_load_tests::{MockOptions, MockUpstream};

fn config(base_url: &str, redis_url: &str, policy: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: fast, upstream: mock}}
quotas:
  redis_url: {redis_url}
  on_redis_error: {policy}
tenants:
  acme:
    keys:
      - {{id: acme-app, key: sk-acme, limits: {{requests_per_minute: 3}}}}
"#
    )
}

async fn status_of(sluice: &Sluice) -> u16 {
    reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&json!({"model": "fast", "messages": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn two_nodes_enforce_one_limit_and_fail_open_to_local_limits() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let yaml = config(&mock.base_url(), &redis.url(), "fail_open");
    let a = Sluice::start(&yaml).await;
    let b = Sluice::start(&yaml).await;
    let statuses = [
        status_of(&a).await,
        status_of(&b).await,
        status_of(&a).await,
        status_of(&b).await,
        status_of(&a).await,
    ];
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "3 per minute across both nodes"
    );

    redis.stop();
    // Fail open: each node falls back to its own local limit of 3.
    let during: Vec<u16> = futures_util::future::join_all((0..4).map(|_| status_of(&a))).await;
    assert_eq!(
        during.iter().filter(|s| **s == 200).count(),
        3,
        "{during:?}"
    );
    let metrics = common::settled_metrics(&a).await;
    assert!(metrics.contains("sluice_quota_store_up 0"), "{metrics}");

    redis.restart().unwrap();
    // A fresh Redis has an empty window: the shared limit is back in force.
    let mut back = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let metrics = common::settled_metrics(&b).await;
        back.push(status_of(&b).await);
        if metrics.contains("sluice_quota_store_up 1") && back.ends_with(&[429]) {
            break;
        }
    }
    assert_eq!(
        back.last(),
        Some(&429),
        "shared limit enforced again: {back:?}"
    );
}

#[tokio::test]
async fn fail_closed_refuses_with_503_while_redis_is_down() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), &redis.url(), "fail_closed")).await;
    assert_eq!(status_of(&sluice).await, 200);
    redis.stop();
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&json!({"model": "fast", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: common::OpenAiErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code.as_deref(), Some("service_unavailable"));
    redis.restart().unwrap();
    let mut recovered = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if status_of(&sluice).await == 200 {
            recovered = true;
            break;
        }
    }
    assert!(recovered);
    assert_eq!(mock.stats().requests() as usize, 2);
}

#[tokio::test]
async fn two_nodes_share_one_budget_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let yaml = format!(
        r#"
upstreams:
  mock: {{base_url: "{}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
quotas:
  redis_url: {}
tenants:
  acme:
    budget: {{limit_usd: 0.00005, period: total}}
    keys: [{{id: acme-app, key: sk-acme}}]
"#,
        mock.base_url(),
        redis.url()
    );
    let a = Sluice::start(&yaml).await;
    let b = Sluice::start(&yaml).await;
    let ask = |node: &Sluice| {
        reqwest::Client::new()
            .post(node.url("/v1/chat/completions"))
            .bearer_auth("sk-acme")
            .json(&json!({"model": "mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let mut admitted = 0;
    let mut refused_on = Vec::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        match ask(node).await.unwrap().status().as_u16() {
            200 => admitted += 1,
            429 => refused_on.push(i % 2),
            other => panic!("unexpected status {other}"),
        }
        // Settlement happens in the background just after each answer.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    // One budget of 50 micro-dollars at ~6 each: about eight requests in all,
    // where two separate node budgets would have let through twice as many.
    assert!((5..=9).contains(&admitted), "admitted {admitted}");
    assert!(
        refused_on.contains(&0) && refused_on.contains(&1),
        "both nodes refuse once it is spent"
    );
}
