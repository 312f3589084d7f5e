//! The built-in engine through the whole pipeline: a `kind: local` upstream
//! answers chat and completions in OpenAI's shape, is billed in the ledger,
//! sits in failover chains, refuses what it cannot take with a 400, and
//! obeys stream control — a budget cut, a cancel through `/v1/streams`, a
//! client that leaves — freeing the engine's sequence each time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::{sse_data, OpenAiErrorBody, Sluice};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_ledger::Store;
use sluice_load_tests::{MockOptions, MockUpstream};
use sqlx::Row;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The tiny generated model (random weights: fast, meaningless text).
fn tiny_model() -> PathBuf {
    let dir = sluice_batcher::model::tiny::scratch_dir("gateway-local");
    sluice_batcher::model::tiny::write_tiny_model(&dir, 7, true).unwrap()
}

/// SmolLM2 (real weights: slow enough on a CPU to stop mid-answer), or
/// `None` with a note when it is not fetched — a failure under `CI`.
fn smollm2() -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
    ));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} is missing: run batcher/scripts/fetch-smollm2.sh",
        path.display()
    );
    eprintln!(
        "skipping: {} missing (batcher/scripts/fetch-smollm2.sh)",
        path.display()
    );
    None
}

fn config(model: &std::path::Path, mock_url: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  engine: {{kind: local, model: "{}", max_sequences: 8, price: {{input: "1000", output: "1000"}}}}
  mock: {{base_url: "{mock_url}"}}
models:
  - {{name: tiny, upstream: engine}}
  - name: chained
    chain:
      - targets: [{{upstream: mock, model: mock-model}}]
      - targets: [{{upstream: engine, model: tiny}}]
ledger:
  flush_interval_ms: 20
{extra}"#,
        model.display()
    )
}

fn chat(model: &str, stream: bool, extra: Value) -> Value {
    let mut body = json!({
        "model": model, "stream": stream, "ignore_eos": true,
        "messages": [{"role": "user", "content": "w5 w6 w7"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn post(sluice: &Sluice, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(sluice.url(path)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

struct Record {
    provider: String,
    completion: i64,
    source: String,
    cost: i64,
    priced: bool,
    end_state: String,
}

async fn records(sluice: &Sluice, expected: usize) -> Vec<Record> {
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    for _ in 0..200 {
        if store.record_count(None).await.unwrap() as usize >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rows = sqlx::query(
        "SELECT provider, completion_tokens, usage_source, cost_micros, priced, end_state \
         FROM usage_records ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), expected, "records in the ledger");
    rows.iter()
        .map(|r| Record {
            provider: r.get(0),
            completion: r.get(1),
            source: r.get(2),
            cost: r.get(3),
            priced: r.get::<i64, _>(4) != 0,
            end_state: r.get(5),
        })
        .collect()
}

/// A metric's value, summed over the lines that contain every one of `parts`.
fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the engine behind `upstream` runs no sequence.
async fn engine_idle(sluice: &Sluice, upstream: &str) {
    let label = format!(r#"upstream="{upstream}""#);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = reqwest::get(sluice.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let busy = metric(
            &text,
            "sluice_engine_requests",
            &[&label, r#"state="running""#],
        ) + metric(
            &text,
            "sluice_engine_requests",
            &[&label, r#"state="waiting""#],
        );
        if busy == 0.0 && text.contains("sluice_engine_requests") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the engine still runs {busy} sequences"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_engine_answers_in_openai_shape_and_every_answer_is_billed() {
    let model = tiny_model();
    let sluice = Sluice::start(&config(&model, "http://127.0.0.1:9", "")).await;

    let response = post(
        &sluice,
        "/v1/chat/completions",
        &chat("tiny", false, json!({"max_tokens": 5})),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-target"], "engine");
    assert!(response.headers().contains_key("x-sluice-stream-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 3);

    let streamed = chat(
        "tiny",
        true,
        json!({"max_tokens": 6, "stream_options": {"include_usage": true}}),
    );
    let response = post(&sluice, "/v1/chat/completions", &streamed, None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );

    // Without include_usage the client sees no usage chunk, but the ledger
    // still gets the engine's own numbers.
    let response = post(
        &sluice,
        "/v1/chat/completions",
        &chat("tiny", true, json!({"max_tokens": 4})),
        None,
    )
    .await;
    let events = sse_data(&response.text().await.unwrap());
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );

    let completion =
        json!({"model": "tiny", "prompt": "w9 w10", "max_tokens": 3, "ignore_eos": true});
    let response = post(&sluice, "/v1/completions", &completion, None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    let records = records(&sluice, 4).await;
    let completions: Vec<i64> = records.iter().map(|r| r.completion).collect();
    assert_eq!(completions, [5, 6, 4, 3]);
    for r in &records {
        assert_eq!(r.provider, "engine");
        assert_eq!(r.source, "reported");
        assert_eq!(r.end_state, "completed");
        assert!(
            r.priced && r.cost > 0,
            "priced at the local upstream's price"
        );
    }
    engine_idle(&sluice, "engine").await;
}

#[tokio::test]
async fn a_failing_upstream_fails_over_to_the_engine() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let model = tiny_model();
    let sluice = Sluice::start(&config(&model, &mock.base_url(), "")).await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-status", "503")
        .json(&chat("chained", false, json!({"max_tokens": 3})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-target"], "engine");
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    assert_eq!(mock.stats().requests(), 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn what_the_model_cannot_take_is_a_400_in_openais_shape() {
    let model = tiny_model();
    let sluice = Sluice::start(&config(&model, "http://127.0.0.1:9", "")).await;
    let image = json!({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "w5"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]});
    let tools = json!({"model": "tiny", "messages": [{"role": "user", "content": "w5"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
    let embeddings = json!({"model": "tiny", "input": "w5"});
    let too_many =
        json!({"model": "tiny", "n": 9, "messages": [{"role": "user", "content": "w5"}]});
    for (path, body, param) in [
        ("/v1/chat/completions", image, "messages"),
        ("/v1/chat/completions", tools, "messages"),
        ("/v1/embeddings", embeddings, "model"),
        ("/v1/chat/completions", too_many, "n"),
    ] {
        let response = post(&sluice, path, &body, None).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: OpenAiErrorBody = response.json().await.unwrap();
        assert_eq!(error.error.kind, "invalid_request_error");
        assert_eq!(error.error.param.as_deref(), Some(param), "{body}");
    }
}

#[tokio::test]
async fn a_stream_that_crosses_the_hard_limit_is_cut_and_the_engine_let_go() {
    let model = tiny_model();
    // The reservation (prompt + 2 assumed tokens at $1000/M) passes; the
    // answer then runs to the model's context, far past $0.05.
    let extra = r#"budgets: {default_max_tokens: 2}
tenants:
  acme:
    keys:
      - {id: acme-app, key: sk-acme, budget: {limit_usd: 0.05, period: daily}}
"#;
    let sluice = Sluice::start(&config(&model, "http://127.0.0.1:9", extra)).await;
    let response = post(
        &sluice,
        "/v1/chat/completions",
        &chat("tiny", true, json!({})),
        Some("sk-acme"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .unwrap()
        .unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let error: OpenAiErrorBody = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error.error.code.as_deref(), Some("insufficient_quota"));
    let last: Value = serde_json::from_str(&events[events.len() - 3]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let delivered = events
        .iter()
        .filter(|e| e.contains("\"content\":\""))
        .count();
    assert!(
        delivered > 1 && delivered < 900,
        "cut part-way: {delivered} chunks"
    );

    let records = records(&sluice, 1).await;
    assert_eq!(records[0].end_state, "cancelled");
    assert!(records[0].cost > 0, "what was delivered is billed");
    engine_idle(&sluice, "engine").await;
}

/// Starts a long greedy SmolLM2 stream; returns it with its stream id once
/// its first content chunk arrived.
async fn long_stream(
    sluice: &Sluice,
) -> (
    String,
    futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
) {
    let body = json!({"model": "smol", "stream": true, "max_tokens": 400, "ignore_eos": true,
        "temperature": 0, "messages": [{"role": "user", "content": "Tell me a long story."}]});
    let response = post(sluice, "/v1/chat/completions", &body, None).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-sluice-stream-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = response.bytes_stream().boxed();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
        let piece = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&piece).unwrap());
    }
    (id, body)
}

fn smol_config(model: &std::path::Path) -> String {
    format!(
        r#"
upstreams:
  smol-engine: {{kind: local, model: "{}", max_sequences: 4}}
models:
  - {{name: smol, upstream: smol-engine}}
ledger:
  flush_interval_ms: 20
"#,
        model.display()
    )
}

#[tokio::test]
async fn a_cancel_through_the_stream_api_and_a_client_that_leaves_free_the_engine() {
    let Some(model) = smollm2() else { return };
    let sluice = Sluice::start(&smol_config(&model)).await;

    // Cancelled through the control API: a clean end for the SDK.
    let (id, mut body) = long_stream(&sluice).await;
    let cancel = reqwest::Client::new()
        .post(sluice.url(&format!("/v1/streams/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let mut rest = String::new();
    while let Some(piece) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
    {
        rest.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
    }
    let events = sse_data(&rest);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let notice: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(notice["sluice"]["event"], "stream.cancelled");
    assert_eq!(notice["sluice"]["cause"], "api");
    engine_idle(&sluice, "smol-engine").await;

    // A client that leaves mid-answer: the engine drops the sequence.
    let (_, body) = long_stream(&sluice).await;
    drop(body);
    engine_idle(&sluice, "smol-engine").await;

    let records = records(&sluice, 2).await;
    let states: Vec<&str> = records.iter().map(|r| r.end_state.as_str()).collect();
    assert_eq!(states, ["cancelled", "cancelled"]);
    assert!(records
        .iter()
        .all(|r| r.completion > 0 && r.completion < 400));
    let metrics = common::settled_metrics(&sluice).await;
    assert_eq!(
        metric(
            &metrics,
            "sluice_stream_cancellations_total",
            &[r#"cause="api""#]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "sluice_stream_cancellations_total",
            &[r#"cause="client""#]
        ),
        1.0
    );
    assert!(metric(&metrics, "vllm:num_requests_running", &[]) == 0.0);
}

#[tokio::test]
async fn an_engine_at_capacity_answers_overloaded_and_the_chain_moves_on() {
    let Some(model) = smollm2() else { return };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = format!(
        r#"
upstreams:
  smol-engine: {{kind: local, model: "{}", max_sequences: 1, max_waiting: 0}}
  mock: {{base_url: "{}"}}
models:
  - {{name: smol, upstream: smol-engine}}
  - name: smol-or-mock
    chain:
      - targets: [{{upstream: smol-engine, model: smol}}]
      - targets: [{{upstream: mock, model: mock-model}}]
"#,
        model.display(),
        mock.base_url()
    );
    let sluice = Sluice::start(&config).await;
    let (id, _held) = long_stream(&sluice).await;
    let body = json!({"model": "smol-or-mock", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&sluice, "/v1/chat/completions", &body, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-target"], "mock");
    assert_eq!(mock.stats().requests(), 1);
    let metrics = reqwest::get(sluice.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "sluice_upstream_errors_total",
            &[r#"upstream="smol-engine""#, r#"kind="overloaded""#]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "vllm:num_requests_running",
            &[r#"model_name="smol-engine""#]
        ),
        1.0
    );
    assert!(
        metrics.contains(r#"vllm:cache_config_info{block_size="16",model_name="smol-engine""#),
        "{metrics}"
    );
    let cancel = reqwest::Client::new()
        .post(sluice.url(&format!("/v1/streams/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    engine_idle(&sluice, "smol-engine").await;
}

#[tokio::test]
async fn sampling_follows_openai_stop_seed_and_logprobs() {
    let model = tiny_model();
    let sluice = Sluice::start(&config(&model, "http://127.0.0.1:9", "")).await;
    let answer = |extra: Value| {
        let body = chat("tiny", false, extra);
        let sluice = &sluice;
        async move {
            let response = post(sluice, "/v1/chat/completions", &body, None).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };

    // Every tiny-model word starts with "w": the stop string ends the answer
    // at its first token, and is not part of it.
    let stopped = answer(json!({"max_tokens": 20, "stop": ["w"]})).await;
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    assert!(!stopped["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains('w'));
    assert!(stopped["usage"]["completion_tokens"].as_u64().unwrap() <= 1);

    let seeded = json!({"max_tokens": 12, "temperature": 5.0, "seed": 42});
    let first = answer(seeded.clone()).await;
    let again = answer(seeded).await;
    let text = |v: &Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(text(&first), text(&again), "the same seed answers alike");
    let mut unseeded = std::collections::HashSet::new();
    for _ in 0..4 {
        unseeded.insert(text(
            &answer(json!({"max_tokens": 12, "temperature": 5.0})).await,
        ));
    }
    assert!(
        unseeded.len() > 1,
        "unseeded requests all answered {unseeded:?}"
    );

    let with_logprobs = answer(json!({"max_tokens": 4, "logprobs": true, "top_logprobs": 2})).await;
    let content = with_logprobs["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 4);
    for entry in content {
        assert!(entry["token"].as_str().unwrap().starts_with('w'), "{entry}");
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(
            entry["bytes"].as_array().unwrap().len(),
            entry["token"].as_str().unwrap().len()
        );
    }
    assert!(answer(json!({"max_tokens": 2})).await["choices"][0]["logprobs"].is_null());

    let streamed = chat("tiny", true, json!({"max_tokens": 3, "logprobs": true}));
    let response = post(&sluice, "/v1/chat/completions", &streamed, None).await;
    let events = sse_data(&response.text().await.unwrap());
    let entries: Vec<Value> = events
        .iter()
        .filter(|e| e.contains("\"logprobs\":{"))
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["logprobs"]["content"][0]
                .clone()
        })
        .collect();
    assert_eq!(entries.len(), 3, "{events:?}");

    let legacy = json!({"model": "tiny", "prompt": "w1 w2", "max_tokens": 3, "logprobs": 1, "ignore_eos": true});
    let body: Value = post(&sluice, "/v1/completions", &legacy, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        body["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let refused = post(
        &sluice,
        "/v1/chat/completions",
        &chat("tiny", false, json!({"top_logprobs": 2})),
        None,
    )
    .await;
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn n_choices_are_parallel_sequences_with_their_own_indexes() {
    let model = tiny_model();
    let sluice = Sluice::start(&config(&model, "http://127.0.0.1:9", "")).await;
    let body = chat(
        "tiny",
        false,
        json!({"n": 2, "max_tokens": 6, "temperature": 5.0, "seed": 9}),
    );
    let reply: Value = post(&sluice, "/v1/chat/completions", &body, None)
        .await
        .json()
        .await
        .unwrap();
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(
        (choices[0]["index"].clone(), choices[1]["index"].clone()),
        (json!(0), json!(1))
    );
    assert_ne!(
        choices[0]["message"]["content"], choices[1]["message"]["content"],
        "each choice samples on its own"
    );
    assert_eq!(
        reply["usage"]["completion_tokens"], 12,
        "both choices are counted"
    );
    let prompt = reply["usage"]["prompt_tokens"].as_u64().unwrap();

    let streamed = chat(
        "tiny",
        true,
        json!({"n": 3, "max_tokens": 4, "stream_options": {"include_usage": true}}),
    );
    let text = post(&sluice, "/v1/chat/completions", &streamed, None)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_data(&text);
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for index in 0..3 {
        let of_choice = |c: &&Value| c["choices"][0]["index"] == index;
        let finishes = chunks
            .iter()
            .filter(of_choice)
            .filter(|c| c["choices"][0]["finish_reason"] == "length")
            .count();
        assert_eq!(finishes, 1, "choice {index} ends once");
    }
    let usage = chunks.last().unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    assert_eq!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap(),
        prompt,
        "the prompt counts once"
    );

    let records = records(&sluice, 2).await;
    let completions: Vec<i64> = records.iter().map(|r| r.completion).collect();
    assert_eq!(completions, [12, 12]);
    engine_idle(&sluice, "engine").await;
}

#[tokio::test]
async fn a_repeated_prompt_is_computed_once_and_the_prefix_cache_is_measured() {
    let model = tiny_model();
    let sluice = Sluice::start(&config(&model, "http://127.0.0.1:9", "")).await;
    let long = "w5 w6 w7 ".repeat(30);
    let body = json!({
        "model": "tiny", "ignore_eos": true, "max_tokens": 3,
        "messages": [{"role": "user", "content": long}],
    });
    let scrape = || async {
        reqwest::get(sluice.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut answers = Vec::new();
    let mut prefill = Vec::new();
    for _ in 0..2 {
        let reply: Value = post(&sluice, "/v1/chat/completions", &body, None)
            .await
            .json()
            .await
            .unwrap();
        answers.push(reply["choices"][0]["message"]["content"].clone());
        let prompt = reply["usage"]["prompt_tokens"].as_f64().unwrap();
        let text = scrape().await;
        let computed = metric(&text, "sluice_engine_prefill_tokens_total", &[]);
        prefill.push((prompt, computed));
    }
    assert_eq!(answers[0], answers[1], "a cached prefix answers the same");
    let (prompt, first) = prefill[0];
    assert!(prompt > 64.0, "the prompt spans several blocks: {prompt}");
    assert_eq!(first, prompt, "the first request computes its whole prompt");
    let second = prefill[1].1 - first;
    assert!(
        second <= 16.0,
        "the second computes only the block holding its last token: {second} of {prompt}"
    );
    let text = scrape().await;
    let hits = metric(
        &text,
        "sluice_engine_prefix_cache_total",
        &[r#"event="hits""#],
    );
    assert_eq!(hits, prompt - second, "{text}");
    assert_eq!(metric(&text, "vllm:prefix_cache_hits_total", &[]), hits);
    assert_eq!(
        metric(&text, "vllm:prefix_cache_queries_total", &[]),
        2.0 * prompt,
        "both prompts were looked up"
    );
}
