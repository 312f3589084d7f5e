//! Client dialects beside OpenAI chat: Anthropic's Messages API and OpenAI's
//! Responses API, through the real binary against the mock upstream. The
//! official SDKs unchanged against every provider kind and the built-in
//! engine; a body in the client's dialect reaching an upstream that speaks
//! it untouched; errors in the caller's dialect for every row of the
//! README's error table that a routed request can meet; stored
//! conversations scoped to their tenant; a budget cut ending in the
//! dialect's own terminal events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::{every_provider, python_with, Sluice, EVERY_MODEL};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};
use std::time::Duration;

#[tokio::test]
async fn the_anthropic_python_sdk_works_unchanged_against_every_provider() {
    if !python_with("anthropic") {
        return;
    }
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&every_provider(&format!("http://{}", mock.addr()))).await;
    let stdout = common::run_sdk_script(&sluice, "anthropic_sdk_e2e.py", &[EVERY_MODEL]).await;
    assert!(stdout.contains("ok: 5 providers"), "{stdout}");
}

#[tokio::test]
async fn the_openai_sdk_responses_api_works_unchanged_against_every_provider() {
    if !python_with("openai") {
        return;
    }
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&every_provider(&format!("http://{}", mock.addr()))).await;
    let stdout = common::run_sdk_script(&sluice, "openai_responses_e2e.py", &[EVERY_MODEL]).await;
    assert!(stdout.contains("ok: 5 providers"), "{stdout}");
}

#[tokio::test]
async fn both_sdks_work_unchanged_against_the_built_in_engine() {
    if !python_with("anthropic") || !python_with("openai") {
        return;
    }
    let dir = sluice_batcher::model::tiny::scratch_dir("dialects-local");
    let model = sluice_batcher::model::tiny::write_tiny_model(&dir, 7, true).unwrap();
    let config = format!(
        "upstreams:\n  engine: {{kind: local, model: \"{}\"}}\nmodels:\n  - {{name: tiny, upstream: engine}}\n",
        model.display()
    );
    let sluice = Sluice::start(&config).await;
    let stdout = common::run_sdk_script(&sluice, "anthropic_sdk_e2e.py", &["tiny", "engine"]).await;
    assert!(stdout.contains("ok: 1 providers"), "{stdout}");
    let stdout =
        common::run_sdk_script(&sluice, "openai_responses_e2e.py", &["tiny", "engine"]).await;
    assert!(stdout.contains("ok: 1 providers"), "{stdout}");
}

async fn post(
    sluice: &Sluice,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(sluice.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    (status, text)
}

#[tokio::test]
async fn a_body_in_the_upstreams_own_dialect_reaches_it_untouched() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&every_provider(&format!("http://{}", mock.addr()))).await;
    // Thinking blocks, cache markers and a tool: nothing for a translation
    // to keep, everything for Anthropic to see.
    let messages = json!({
        "model": "via-anthropic",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig=="}, {"type": "text", "text": "Hello"}]},
            {"role": "user", "content": "Again"}
        ]
    });
    let (status, text) = post(
        &sluice,
        "/v1/messages",
        &messages,
        &[
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let sent = mock.stats().last_request().unwrap();
    let mut expected = messages.clone();
    expected["model"] = json!("claude-3-5-haiku-latest");
    assert_eq!(sent.json(), expected, "only the model is renamed");
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(
        sent.header("x-api-key"),
        Some("k"),
        "the upstream's key, not the client's"
    );
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["type"], "message");

    let responses = json!({
        "model": "via-openai",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"],
        "store": false
    });
    let (status, text) = post(&sluice, "/v1/responses", &responses, &[]).await;
    assert_eq!(status, 200, "{text}");
    let sent = mock.stats().last_request().unwrap();
    let mut expected = responses.clone();
    expected["model"] = json!("gpt-4o-mini");
    assert_eq!(sent.json(), expected, "only the model is renamed");
    assert!(sent.path.ends_with("/v1/responses"), "{}", sent.path);
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[tokio::test]
async fn errors_come_back_in_the_callers_dialect() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = format!(
        r#"
server: {{max_body_bytes: 4096}}
routing: {{max_attempts: 1}}
upstreams:
  oai: {{base_url: "{base}"}}
  claude: {{kind: anthropic, base_url: "{base}", api_key: k}}
models:
  - {{name: mini, upstream: oai, upstream_model: gpt-4o-mini}}
  - {{name: other, upstream: oai, upstream_model: gpt-4o-mini}}
  - {{name: claude, upstream: claude, upstream_model: claude-3-5-haiku-latest}}
tenants:
  acme:
    keys:
      - {{id: app, key: sk-app, models: [mini, claude], limits: {{requests_per_minute: 1000}}}}
      - {{id: slow, key: sk-slow, limits: {{requests_per_minute: 1}}}}
      - {{id: broke, key: sk-broke, budget: {{limit_usd: 0, period: daily}}}}
"#,
        base = mock.base_url()
    );
    let sluice = Sluice::start(&config).await;
    let messages = |model: &str, text: &str| json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}]});
    let responses = |model: &str, text: &str| json!({"model": model, "input": text});
    // (what, key, model, text, status)
    let cases: Vec<(&str, Option<&str>, &str, String, u16)> = vec![
        ("no key", None, "mini", "hi".into(), 401),
        ("wrong key", Some("sk-nope"), "mini", "hi".into(), 401),
        (
            "model outside the allow-list",
            Some("sk-app"),
            "other",
            "hi".into(),
            403,
        ),
        ("unknown model", Some("sk-app"), "nope", "hi".into(), 404),
        (
            "body too large",
            Some("sk-app"),
            "mini",
            "x".repeat(8192),
            413,
        ),
        ("hard budget", Some("sk-broke"), "mini", "hi".into(), 429),
        (
            "upstream 500",
            Some("sk-app"),
            "mini",
            "mock-status:500".into(),
            502,
        ),
        (
            "upstream 429",
            Some("sk-app"),
            "mini",
            "mock-status:429".into(),
            429,
        ),
        (
            "translated upstream 503",
            Some("sk-app"),
            "claude",
            "mock-status:503".into(),
            503,
        ),
    ];
    for (what, key, model, text, status) in &cases {
        let headers: Vec<(&str, &str)> = key.iter().map(|k| ("x-api-key", *k)).collect();
        let (got, body) = post(&sluice, "/v1/messages", &messages(model, text), &headers).await;
        assert_eq!(got, *status, "messages, {what}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["type"], "error", "messages, {what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
        assert_eq!(
            body["error"]["type"],
            anthropic_type(*status),
            "messages, {what}: {body}"
        );

        let headers: Vec<(&str, String)> = key
            .iter()
            .map(|k| ("authorization", format!("Bearer {k}")))
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, body) = post(&sluice, "/v1/responses", &responses(model, text), &headers).await;
        assert_eq!(got, *status, "responses, {what}: {body}");
        let body: common::OpenAiErrorBody = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("responses, {what}: not OpenAI's error shape ({e}): {body}")
        });
        assert!(!body.error.message.is_empty());
    }
    // Malformed JSON: the route is known, so the answer is in its dialect.
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/messages"))
        .header("x-api-key", "sk-app")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // A rate limit: the second request of a one-a-minute key.
    for expected in [200, 429] {
        let (got, body) = post(
            &sluice,
            "/v1/messages",
            &messages("mini", "hi"),
            &[("x-api-key", "sk-slow")],
        )
        .await;
        assert_eq!(got, expected, "{body}");
        if expected == 429 {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        }
    }
}

#[tokio::test]
async fn a_budget_cut_ends_a_messages_stream_with_anthropics_own_events() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = format!(
        r#"
upstreams:
  mock: {{base_url: "{}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
budgets: {{default_max_tokens: 2}}
tenants:
  acme:
    keys:
      - {{id: acme-app, key: sk-acme, budget: {{limit_usd: 0.00003, period: daily}}}}
"#,
        mock.base_url()
    );
    let sluice = Sluice::start(&config).await;
    let body = json!({"model": "mini", "max_tokens": 2, "stream": true,
                      "messages": [{"role": "user", "content": "go on"}]});
    let (status, text) = post(
        &sluice,
        "/v1/messages",
        &body,
        &[("x-api-key", "sk-acme"), ("x-mock-chunks", "400")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let kind = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (kind, serde_json::from_str(data).unwrap())
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds[0], "message_start", "{kinds:?}");
    let stop = kinds
        .iter()
        .position(|k| *k == "message_stop")
        .expect("message_stop");
    let (delta_kind, delta) = &events[stop - 1];
    assert_eq!(*delta_kind, "message_delta", "{kinds:?}");
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    let (last_kind, last) = events.last().unwrap();
    assert_eq!(*last_kind, "error", "{kinds:?}");
    assert_eq!(last["error"]["type"], "rate_limit_error", "{last}");
    let deltas = kinds
        .iter()
        .filter(|k| **k == "content_block_delta")
        .count();
    assert!(deltas > 0 && deltas < 400, "cut part-way: {deltas} deltas");
}

#[tokio::test]
async fn a_stored_response_continues_only_for_its_own_tenant() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = format!(
        r#"
upstreams:
  claude: {{kind: anthropic, base_url: "{}", api_key: k}}
models:
  - {{name: claude, upstream: claude, upstream_model: claude-3-5-haiku-latest}}
tenants:
  acme:
    keys: [{{id: acme-app, key: sk-acme}}]
  globex:
    keys: [{{id: globex-app, key: sk-globex}}]
"#,
        mock.base_url()
    );
    let sluice = Sluice::start(&config).await;
    let acme = [("authorization", "Bearer sk-acme")];
    let globex = [("authorization", "Bearer sk-globex")];
    let first =
        json!({"model": "claude", "input": "Remember the word heron", "instructions": "Be brief."});
    let (status, text) = post(&sluice, "/v1/responses", &first, &acme).await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{first}");

    let next =
        json!({"model": "claude", "input": "What was the word?", "previous_response_id": id});
    let (status, text) = post(&sluice, "/v1/responses", &next, &globex).await;
    assert_eq!(status, 400, "another tenant's response: {text}");
    let error: common::OpenAiErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(
        error.error.code.as_deref(),
        Some("previous_response_not_found")
    );
    assert_eq!(error.error.param.as_deref(), Some("previous_response_id"));

    let (status, text) = post(&sluice, "/v1/responses", &next, &acme).await;
    assert_eq!(status, 200, "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["previous_response_id"], id);
    // The upstream keeps no state: it got the whole conversation, in order.
    let sent = mock.stats().last_request().unwrap().json();
    let turns = sent["messages"].as_array().unwrap();
    let said: Vec<String> = turns.iter().map(|t| t.to_string()).collect();
    let at = |needle: &str| {
        said.iter()
            .position(|t| t.contains(needle))
            .unwrap_or_else(|| panic!("{needle} missing: {sent}"))
    };
    assert!(
        at("heron") < at("tok0") && at("tok0") < at("What was the word"),
        "{sent}"
    );
    assert!(
        !sent["system"].to_string().contains("Be brief"),
        "the old turn's instructions do not carry over: {sent}"
    );
}

#[tokio::test]
async fn cache_reads_and_writes_reach_the_ledger_priced_at_their_own_rates() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let root = format!("http://{}", mock.addr());
    let config = format!(
        r#"
routing: {{max_attempts: 1}}
upstreams:
  oai: {{base_url: "{root}/v1"}}
  claude: {{kind: anthropic, base_url: "{root}/v1", api_key: k}}
  bed: {{kind: bedrock, base_url: "{root}", region: us-east-1, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}
models:
  - {{name: claude, upstream: claude, upstream_model: cachey}}
  - {{name: bedrock, upstream: bed, upstream_model: cachey}}
  - {{name: plain, upstream: oai, upstream_model: cachey}}
pricing:
  - {{model: cachey, input: "1.00", cached_input: "0.10", cache_write: "1.25", output: "5.00"}}
ledger: {{flush_interval_ms: 20}}
"#
    );
    let sluice = Sluice::start(&config).await;
    let asks = "mock-cache-read:40 mock-cache-write:20 please";
    let marked = json!([{"type": "text", "text": asks, "cache_control": {"type": "ephemeral"}}]);
    let cases = [
        (
            "messages-native",
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": marked}]}),
        ),
        (
            "messages-stream",
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": marked}]}),
        ),
        (
            "chat-to-anthropic",
            "/v1/chat/completions",
            json!({"model": "claude", "messages": [{"role": "user", "content": marked}]}),
        ),
        (
            "messages-to-bedrock",
            "/v1/messages",
            json!({"model": "bedrock", "max_tokens": 16, "messages": [{"role": "user", "content": marked}]}),
        ),
        (
            "responses-to-anthropic",
            "/v1/responses",
            json!({"model": "claude", "input": asks}),
        ),
        (
            "messages-to-openai",
            "/v1/messages",
            json!({"model": "plain", "max_tokens": 16, "messages": [{"role": "user", "content": marked}]}),
        ),
    ];
    for (id, path, body) in &cases {
        let (status, text) = post(&sluice, path, body, &[("x-request-id", id)]).await;
        assert_eq!(status, 200, "{id}: {text}");
    }
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = sluice_ledger::Store::open(&url).await.unwrap();
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = sqlx::query_as::<_, (String, i64, i64, i64, i64, i64)>(
            "SELECT request_id, prompt_tokens, completion_tokens, cached_prompt_tokens, \
             cache_write_tokens, cost_picos FROM usage_records",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        if rows.len() == cases.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rows.len(), cases.len(), "{rows:?}");
    let row = |id: &str| {
        rows.iter()
            .find(|r| r.0 == id)
            .unwrap_or_else(|| panic!("{id}: {rows:?}"))
    };
    for id in [
        "messages-native",
        "messages-stream",
        "chat-to-anthropic",
        "messages-to-bedrock",
    ] {
        let (_, prompt, completion, read, write, picos) = *row(id);
        assert_eq!(
            (read, write),
            (40, 20),
            "{id}: markers kept, counts recorded"
        );
        // Prices are micro-dollars per million tokens, i.e. pico-dollars a token.
        let expected =
            (prompt - 60) * 1_000_000 + 40 * 100_000 + 20 * 1_250_000 + completion * 5_000_000;
        assert_eq!(picos, expected, "{id}: each count at its own rate");
    }
    // The Responses API has no cache markers, and an OpenAI upstream
    // caches (and bills) on its own: both plainly billed here.
    for id in ["responses-to-anthropic", "messages-to-openai"] {
        let (_, prompt, completion, read, write, picos) = *row(id);
        assert_eq!((read, write), (0, 0), "{id}");
        assert_eq!(picos, prompt * 1_000_000 + completion * 5_000_000, "{id}");
    }
}
