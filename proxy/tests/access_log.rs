//! The access log: one `sluice::access` line per finished request with the
//! configured fields, and nothing sensitive anywhere in the log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};
use std::time::{Duration, Instant};

const CLIENT_KEY: &str = "sk-acme-app-5b1d0c";
const PROMPT_MARKER: &str = "MARKER-prompt-9f27e4";
const QUERY_SECRET: &str = "QUERY-secret-41aa";

fn config(base_url: &str, logging: &str) -> String {
    format!(
        r#"
server: {{log_format: json}}
upstreams:
  mock: {{base_url: "{base_url}", api_key: sk-upstream-secret}}
models:
  - {{name: fast, upstream: mock, upstream_model: mock-model}}
tenants:
  acme:
    keys:
      - {{id: acme-app, key: {CLIENT_KEY}}}
pricing:
  - {{model: mock-model, input: "1.00", output: "2.00"}}
{logging}
"#
    )
}

/// The access lines (parsed) of the request `request_id`, once at least one
/// is in the log: the line is written just after the answer.
async fn access_lines(sluice: &Sluice, request_id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = sluice
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "sluice::access")
            .filter(|v| v["fields"]["request_id"] == request_id)
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn chat(sluice: &Sluice, request_id: &str, path: &str, content: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(sluice.url(path))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", request_id)
        .header("user-agent", "access-log-test/1.0")
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_line_per_request_with_the_default_fields() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;

    let response = chat(&sluice, "req-access-1", "/v1/chat/completions", "hello").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let lines = access_lines(&sluice, "req-access-1").await;
    assert_eq!(lines.len(), 1, "{lines:#?}\n{}", sluice.log());
    let fields = lines[0]["fields"].as_object().unwrap();
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "completion_tokens",
            "cost_usd",
            "duration_ms",
            "key_id",
            "method",
            "model",
            "path",
            "prompt_tokens",
            "request_id",
            "route",
            "status",
            "tenant",
            "time",
            "upstream"
        ]
    );
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["path"], "/v1/chat/completions");
    assert_eq!(fields["route"], "chat_completions");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["model"], "fast");
    assert_eq!(fields["upstream"], "mock");
    assert_eq!(fields["tenant"], "acme");
    assert_eq!(fields["key_id"], "acme-app");
    assert_eq!(fields["prompt_tokens"], prompt_tokens);
    assert_eq!(fields["completion_tokens"], 5);
    // USD 1 per million prompt tokens, 2 per million completion tokens.
    let cost = fields["cost_usd"].as_f64().unwrap();
    let expected = (prompt_tokens + 2 * 5) as f64 / 1e6;
    assert!((cost - expected).abs() < 1e-9, "{cost} != {expected}");
    assert!(fields["duration_ms"].is_u64());
    let time = fields["time"].as_str().unwrap();
    assert!(time.starts_with("20") && time.ends_with('Z'), "{time}");

    // A request that is not forwarded gets its line too.
    let models = reqwest::Client::new()
        .get(sluice.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "req-access-2")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let lines = access_lines(&sluice, "req-access-2").await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["fields"]["route"], "models");
    assert_eq!(lines[0]["fields"]["method"], "GET");
    assert_eq!(lines[0]["fields"].get("upstream"), None);
}

#[tokio::test]
async fn only_the_configured_fields_are_written() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let logging = "logging: {access: {fields: [request_id, status, key_id, user_agent]}}";
    let sluice = Sluice::start(&config(&mock.base_url(), logging)).await;

    let response = chat(&sluice, "req-fields", "/v1/chat/completions", "hi").await;
    assert_eq!(response.status(), 200);
    let lines = access_lines(&sluice, "req-fields").await;
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["fields"],
        json!({
            "request_id": "req-fields",
            "status": 200,
            "key_id": "acme-app",
            "user_agent": "access-log-test/1.0"
        })
    );
}

#[tokio::test]
async fn a_disabled_access_log_writes_no_line() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let logging = "logging: {access: {enabled: false}}";
    let sluice = Sluice::start(&config(&mock.base_url(), logging)).await;
    let response = chat(&sluice, "req-off", "/v1/chat/completions", "hi").await;
    assert_eq!(response.status(), 200);
    // The request span's own lines would show within this wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sluice.log().contains("sluice::access"), "{}", sluice.log());
}

#[tokio::test]
async fn keys_prompts_and_query_strings_never_reach_the_log() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;

    let path = format!("/v1/chat/completions?token={QUERY_SECRET}");
    let content = format!("please repeat {PROMPT_MARKER}");
    let response = chat(&sluice, "req-secret", &path, &content).await;
    assert_eq!(response.status(), 200);
    let _ = response.text().await.unwrap();
    // And a refused one: a wrong key, same marker.
    let refused = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(format!("{CLIENT_KEY}-wrong"))
        .header("x-request-id", "req-refused")
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let lines = access_lines(&sluice, "req-secret").await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["fields"]["path"], "/v1/chat/completions");
    let refused = access_lines(&sluice, "req-refused").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["fields"]["status"], 401);

    let log = sluice.log();
    for secret in [
        CLIENT_KEY,
        PROMPT_MARKER,
        QUERY_SECRET,
        "sk-upstream-secret",
    ] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}
