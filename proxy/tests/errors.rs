//! Every failure a client can meet, read back as the OpenAI SDK reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, expect_error, free_port, sse_data, Sluice};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test]
async fn malformed_json_is_400_and_never_forwarded() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let url = sluice.url("/v1/chat/completions");
    for body in ["{\"model\": \"fast\",", "not json", "[1,2]", ""] {
        let (status, error) = expect_error(&url, body).await;
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(error.kind, "invalid_request_error");
        assert!(
            error.message.contains("could not parse the JSON body"),
            "{}",
            error.message
        );
    }
    let (status, error) = expect_error(&url, r#"{"model":"fast","stream":"yes"}"#).await;
    assert_eq!((status, error.param.as_deref()), (400, Some("stream")));
    assert_eq!(mock.stats().requests(), 0);
}

#[tokio::test]
async fn missing_and_unknown_models_are_404_model_not_found() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let url = sluice.url("/v1/chat/completions");
    let (status, error) = expect_error(&url, chat("no-such-model")).await;
    assert_eq!(status, 404);
    assert_eq!(error.code.as_deref(), Some("model_not_found"));
    assert_eq!(error.param.as_deref(), Some("model"));
    assert_eq!(
        error.message,
        "The model `no-such-model` does not exist or you do not have access to it."
    );
    let (status, error) = expect_error(&url, r#"{"messages":[]}"#).await;
    assert_eq!(
        (status, error.code.as_deref()),
        (404, Some("model_not_found"))
    );
    assert_eq!(error.message, "you must provide a model parameter");
    assert_eq!(mock.stats().requests(), 0);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let url = sluice.url("/v1/chat/completions");
    let big =
        json!({"model": "fast", "messages": [{"role": "user", "content": "x".repeat(2 << 20)}]});
    let (status, error) = expect_error(&url, big.to_string()).await;
    assert_eq!(status, 413);
    assert_eq!(error.code.as_deref(), Some("request_too_large"));
    assert!(error.message.contains("1048576"));

    // Chunked upload without Content-Length is counted as it arrives.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..40).map(|_| Ok("y".repeat(64 * 1024))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = reqwest::Client::new()
        .post(&url)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(mock.stats().requests(), 0);
}

#[tokio::test]
async fn refused_upstream_is_502_without_leaking_addresses() {
    let dead = format!("http://127.0.0.1:{}/v1", free_port());
    let sluice = Sluice::start(&config_for(&dead, "")).await;
    let (status, error) = expect_error(&sluice.url("/v1/chat/completions"), chat("fast")).await;
    assert_eq!(status, 502);
    assert_eq!(error.kind, "server_error");
    assert_eq!(error.code.as_deref(), Some("upstream_unavailable"));
    assert!(!error.message.contains("127.0.0.1"), "{}", error.message);
    assert!(!error.message.contains("sk-upstream-secret"));
    let metrics = common::settled_metrics(&sluice).await;
    // Three attempts (the default `routing.max_attempts`), each refused.
    assert!(
        error
            .message
            .starts_with("All 3 upstream attempts failed: mock (connection refused)"),
        "{}",
        error.message
    );
    assert!(
        metrics.contains(
            r#"sluice_upstream_errors_total{kind="upstream_unavailable",upstream="mock"} 3"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sluice_upstream_attempts_total{upstream="mock"} 3"#));
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-delay-ms", "5000")
        .body(chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: common::OpenAiErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code.as_deref(), Some("upstream_timeout"));
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_unchanged() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-status", "429")
        .body(chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: common::OpenAiErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code.as_deref(), Some("rate_limit_exceeded"));
}

#[tokio::test]
async fn stream_reset_mid_way_ends_with_an_sse_error_event() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let body = json!({"model": "fast", "stream": true, "messages": []});
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-abort-after", "2")
        // Spaced out so the headers and first chunks leave the mock before the abort.
        .header("x-mock-chunk-delay-ms", "50")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(std::time::Duration::from_secs(10), response.text())
        .await
        .expect("a broken stream must not hang the client")
        .unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let error: common::OpenAiErrorBody = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error.error.code.as_deref(), Some("upstream_unavailable"));
    let content: String = events[..events.len() - 2]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        content, "tok0 tok1 ",
        "what arrived before the break is delivered"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_in_openai_shape() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let (status, error) = expect_error(&sluice.url("/v1/assistants"), "{}").await;
    assert_eq!(status, 404);
    assert_eq!(error.message, "Invalid URL (POST /v1/assistants)");
    let response = reqwest::get(sluice.url("/v1/chat/completions"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn keep_alive_survives_refused_requests() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    let url = sluice.url("/v1/chat/completions");
    for _ in 0..3 {
        let r = client.post(&url).body("{bad").send().await.unwrap();
        assert_eq!(r.status(), 400);
        r.bytes().await.unwrap();
        let r = client.post(&url).body(chat("fast")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
}

#[tokio::test]
async fn a_stream_past_its_total_timeout_ends_with_an_error_event() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let yaml = format!(
        "upstreams:\n  slow: {{base_url: \"{}\", total_timeout_ms: 600}}\nmodels:\n  - {{name: fast, upstream: slow}}\n",
        mock.base_url()
    );
    let sluice = Sluice::start(&yaml).await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-chunk-delay-ms", "250")
        .json(&json!({"model": "fast", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let error: common::OpenAiErrorBody = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error.error.code.as_deref(), Some("upstream_timeout"));
    assert!(text.contains("tok0"), "what arrived in time was delivered");
}
