//! Failover chains through real sockets: the client sees only the answer
//! that worked, breakers open and close, and total failure is one clean error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{free_port, OpenAiErrorBody, Sluice};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};
use std::time::Duration;

fn chain_config(first: &str, second: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  first: {{base_url: "{first}", first_byte_timeout_ms: 400}}
  second: {{base_url: "{second}"}}
routing:
  max_attempts: 2
{extra}
models:
  - name: smart
    chain:
      - targets: [{{upstream: first, model: first-model}}]
      - targets: [{{upstream: second, model: second-model}}]
"#
    )
}

async fn ask(sluice: &Sluice, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&json!({"model": "smart", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn served_by_second(sluice: &Sluice, second: &MockUpstream) {
    let response = ask(sluice, false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-target"], "second");
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "second-model");
    assert_eq!(
        second.stats().last_request().unwrap().json()["model"],
        "second-model"
    );
}

#[tokio::test]
async fn refused_first_target_fails_over_to_the_second() {
    let second = MockUpstream::start(MockOptions::default()).await.unwrap();
    let dead = format!("http://127.0.0.1:{}/v1", free_port());
    let sluice = Sluice::start(&chain_config(&dead, &second.base_url(), "")).await;
    served_by_second(&sluice, &second).await;
}

#[tokio::test]
async fn http_500_and_429_fail_over_but_400_does_not() {
    let first = MockUpstream::start(MockOptions::default()).await.unwrap();
    let second = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&chain_config(&first.base_url(), &second.base_url(), "")).await;
    for status in [500, 503, 429] {
        first.stats().set_fail_status(Some(status));
        served_by_second(&sluice, &second).await;
    }
    // A client error is the answer: retrying elsewhere would fail the same way.
    first.stats().set_fail_status(Some(400));
    let response = ask(&sluice, false).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-sluice-target"], "first");
    assert_eq!(second.stats().requests(), 3);
}

#[tokio::test]
async fn a_hanging_first_target_times_out_and_the_second_serves_a_stream() {
    let first = MockUpstream::start(MockOptions {
        latency: Duration::from_secs(10),
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let second = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&chain_config(&first.base_url(), &second.base_url(), "")).await;
    let response = ask(&sluice, true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-target"], "second");
    let text = response.text().await.unwrap();
    assert!(
        text.contains("tok4") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(first.stats().requests(), 1);
}

#[tokio::test]
async fn all_targets_down_is_one_error_naming_every_attempt() {
    let first = MockUpstream::start(MockOptions::default()).await.unwrap();
    let dead = format!("http://127.0.0.1:{}/v1", free_port());
    first.stats().set_fail_status(Some(500));
    let sluice = Sluice::start(&chain_config(&first.base_url(), &dead, "")).await;
    let response = ask(&sluice, false).await;
    assert_eq!(response.status(), 502);
    let body: OpenAiErrorBody = response.json().await.unwrap();
    assert_eq!(
        body.error.message,
        "All 2 upstream attempts failed: first (HTTP 500), second (connection refused)."
    );
    assert_eq!(body.error.kind, "server_error");

    // Everyone rate-limited: 429, so the SDK backs off and retries.
    first.stats().set_fail_status(Some(429));
    let second = MockUpstream::start(MockOptions::default()).await.unwrap();
    second.stats().set_fail_status(Some(429));
    let sluice = Sluice::start(&chain_config(&first.base_url(), &second.base_url(), "")).await;
    let response = ask(&sluice, false).await;
    assert_eq!(response.status(), 429);
    let body: OpenAiErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code.as_deref(), Some("rate_limit_exceeded"));
}

#[tokio::test]
async fn the_breaker_opens_after_failures_and_closes_after_a_good_probe() {
    let first = MockUpstream::start(MockOptions::default()).await.unwrap();
    let second = MockUpstream::start(MockOptions::default()).await.unwrap();
    let breaker = "  breaker: {failure_ratio: 0.5, min_requests: 3, open_s: 1}";
    let sluice = Sluice::start(&chain_config(
        &first.base_url(),
        &second.base_url(),
        breaker,
    ))
    .await;
    first.stats().set_fail_status(Some(500));
    for _ in 0..3 {
        assert_eq!(ask(&sluice, false).await.status(), 200);
    }
    assert_eq!(first.stats().requests(), 3);
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_upstream_breaker_state{upstream="first"} 2"#),
        "{metrics}"
    );
    // Open: the first target is skipped without being called.
    let response = ask(&sluice, false).await;
    assert_eq!(response.headers()["x-sluice-attempts"], "1");
    assert_eq!(first.stats().requests(), 3);

    // It recovers; after open_s one probe goes through and closes the breaker.
    first.stats().set_fail_status(None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = ask(&sluice, false).await;
    assert_eq!(response.headers()["x-sluice-target"], "first");
    assert_eq!(first.stats().requests(), 4);
    let metrics = common::settled_metrics(&sluice).await;
    assert!(metrics.contains(r#"sluice_upstream_breaker_state{upstream="first"} 0"#));
    assert_eq!(
        ask(&sluice, false).await.headers()["x-sluice-target"],
        "first"
    );
}

/// An upstream that answers each connection's first request, keeps the
/// connection looking alive (no `connection: close`), and drops it the
/// moment a second request arrives: a keep-alive timeout firing just as a
/// pooled connection is reused.
async fn one_answer_per_connection() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body by its content-length.
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = json!({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                .to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
                // The next request is met by a closed connection.
                let _ = socket.read(&mut buf).await;
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_dropped_is_retried_on_a_fresh_one() {
    let (url, accepted) = one_answer_per_connection().await;
    let config = format!(
        "upstreams:\n  up: {{base_url: \"{url}\"}}\nmodels:\n  - {{name: m, upstream: up}}\n"
    );
    let sluice = Sluice::start(&config).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client
            .post(sluice.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-attempts"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}
