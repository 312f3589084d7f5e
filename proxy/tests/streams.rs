//! Stream control end to end: ids, disconnects, the control API, pauses,
//! preemption, fair queuing, and control across two nodes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{sse_data, Sluice};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_load_tests::servers::RedisServer;
use sluice_load_tests::{MockOptions, MockUpstream};
use std::time::{Duration, Instant};

const ADMIN: &str = "sk-admin";

fn config(base_url: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}", idle_timeout_ms: 5000, first_byte_timeout_ms: 5000}}
models:
  - {{name: fast, upstream: mock, upstream_model: mock-model}}
auth:
  admin_key: {ADMIN}
tenants:
  acme:
    keys:
      - {{id: acme-app, key: sk-acme, priority: interactive}}
  beta:
    keys:
      - {{id: beta-app, key: sk-beta}}
{extra}"#
    )
}

fn chat(stream: bool) -> Value {
    json!({"model": "fast", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// Starts a streamed chat of `chunks` chunks, `delay_ms` apart.
async fn start_stream(
    sluice: &Sluice,
    key: &str,
    chunks: u32,
    delay_ms: u32,
    priority: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-mock-chunks", chunks.to_string())
        .header("x-mock-chunk-delay-ms", delay_ms.to_string())
        .json(&chat(true));
    if let Some(p) = priority {
        request = request.header("x-sluice-priority", p);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

fn stream_id(response: &reqwest::Response) -> String {
    response.headers()["x-sluice-stream-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Reads a streamed body until `needle` appears (or it ends); returns the text so far.
async fn read_until(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    text: &mut String,
    needle: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(chunk)) => text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
            Ok(None) => return,
            Err(_) => panic!("no {needle:?} within 10 s; got {text}"),
        }
    }
}

/// The concatenated `delta.content` of an SSE chat stream.
fn content_of(text: &str) -> String {
    sse_data(text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

async fn control(sluice: &Sluice, key: &str, id: &str, verb: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sluice.url(&format!("/v1/streams/{id}/{verb}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn list(sluice: &Sluice, key: &str) -> Vec<Value> {
    let v: Value = reqwest::Client::new()
        .get(sluice.url("/v1/streams"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_array().unwrap().clone()
}

async fn wait_for_closed_upstream(mock: &MockUpstream, within: Duration) -> Duration {
    let since = Instant::now();
    while mock.stats().connections_closed() == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "upstream never closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = since.elapsed();
    assert!(took < within, "upstream closed {took:?} after the trigger");
    took
}

#[tokio::test]
async fn every_answer_and_refusal_of_a_forwarded_request_carries_a_stream_id() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    let ok = client
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let first = stream_id(&ok);
    assert!(first.starts_with("st_") && first.len() == 19, "{first}");
    let refused = client
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert_ne!(stream_id(&refused), first);
}

#[tokio::test]
async fn a_client_leaving_before_the_answer_closes_the_upstream_at_once() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;
    let url = sluice.url("/v1/chat/completions");
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth("sk-acme")
            .header("x-mock-delay-ms", "3000")
            .json(&chat(false))
            .send()
            .await
    });
    let since = Instant::now();
    while mock.stats().requests() == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "never reached the mock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The non-streamed answer is seconds away; the client gives up now.
    request.abort();
    let _ = request.await;
    wait_for_closed_upstream(&mock, Duration::from_millis(100)).await;
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_stream_cancellations_total{cause="client"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn pause_and_resume_lose_and_repeat_nothing() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;

    let mut whole = String::new();
    let mut body = start_stream(&sluice, "sk-acme", 30, 15, None)
        .await
        .bytes_stream();
    read_until(&mut body, &mut whole, "[DONE]").await;
    let expected = content_of(&whole);
    assert_eq!(expected.matches("tok").count(), 30);

    let response = start_stream(&sluice, "sk-acme", 30, 15, None).await;
    let id = stream_id(&response);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    read_until(&mut body, &mut text, "tok2 ").await;
    let (status, view) = control(&sluice, "sk-acme", &id, "pause").await;
    assert_eq!((status, view["state"].as_str()), (200, Some("paused")));
    assert_eq!(view["id"], id);
    // What was already on its way may still land; then nothing moves.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(10), body.next()).await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let at_pause = text.len();
    assert!(
        tokio::time::timeout(Duration::from_millis(400), body.next())
            .await
            .is_err(),
        "bytes arrived while paused"
    );
    let listed = list(&sluice, "sk-acme").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "paused");
    assert_eq!(listed[0]["target"], "mock");
    assert!(text.len() == at_pause && !text.contains("[DONE]"));

    let (status, view) = control(&sluice, "sk-acme", &id, "resume").await;
    assert_eq!((status, view["state"].as_str()), (200, Some("running")));
    read_until(&mut body, &mut text, "[DONE]").await;
    assert_eq!(content_of(&text), expected, "pausing changed the content");

    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains("sluice_stream_pause_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_streams_live{state="running"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn cancel_ends_a_stream_cleanly_and_drops_the_upstream() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;
    let response = start_stream(&sluice, "sk-acme", 100, 50, None).await;
    let id = stream_id(&response);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    read_until(&mut body, &mut text, "tok0").await;

    let (status, view) = control(&sluice, "sk-acme", &id, "cancel").await;
    assert_eq!((status, view["state"].as_str()), (200, Some("ending")));
    read_until(&mut body, &mut text, "[DONE]").await;
    assert!(
        body.next().await.is_none(),
        "the stream goes on after [DONE]"
    );
    wait_for_closed_upstream(&mock, Duration::from_millis(500)).await;

    let events = sse_data(&text);
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    let last: Value = serde_json::from_str(&events[n - 3]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    let notice: Value = serde_json::from_str(&events[n - 2]).unwrap();
    assert_eq!(notice["object"], "chat.completion.chunk");
    assert_eq!(notice["choices"], json!([]));
    assert_eq!(notice["sluice"]["event"], "stream.cancelled");
    assert_eq!(notice["sluice"]["cause"], "api");
    assert_eq!(notice["sluice"]["stream_id"], id);
    assert_eq!(mock.stats().streams_finished(), 0);

    // Gone from the list (asked on the admin listener, whose own runtime
    // may get there before the stream's last step has run), and a second
    // cancel finds nothing.
    let mut listed = list(&sluice, ADMIN).await;
    for _ in 0..100 {
        if listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        listed = list(&sluice, ADMIN).await;
    }
    assert_eq!(listed, Vec::<Value>::new());
    assert_eq!(control(&sluice, "sk-acme", &id, "cancel").await.0, 404);
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_stream_cancellations_total{cause="api"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_tenants_stream_reads_exactly_like_an_unknown_one() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;
    let response = start_stream(&sluice, "sk-acme", 100, 50, None).await;
    let id = stream_id(&response);

    let (status, theirs) = control(&sluice, "sk-beta", &id, "cancel").await;
    let (unknown_status, unknown) =
        control(&sluice, "sk-beta", "st_0000000000000000", "cancel").await;
    assert_eq!((status, unknown_status), (404, 404));
    assert_eq!(theirs["error"]["code"], "stream_not_found");
    assert_eq!(
        theirs["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&id, "ID"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("st_0000000000000000", "ID")
    );
    let peek = reqwest::Client::new()
        .get(sluice.url(&format!("/v1/streams/{id}")))
        .bearer_auth("sk-beta")
        .send()
        .await
        .unwrap();
    assert_eq!(peek.status(), 404);
    assert_eq!(list(&sluice, "sk-beta").await, Vec::<Value>::new());
    let mine = list(&sluice, "sk-acme").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["tenant"], "acme");
    assert_eq!(mine[0]["key_id"], "acme-app");
    assert_eq!(mine[0]["priority"], "standard");
    assert_eq!(list(&sluice, ADMIN).await.len(), 1);
    // No key at all: refused, not listed.
    let anonymous = reqwest::get(sluice.url("/v1/streams")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // The stream never noticed.
    assert_eq!(mock.stats().connections_closed(), 0);
}

#[tokio::test]
async fn a_stream_paused_too_long_is_cancelled() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "streams: {max_pause_ms: 300}")).await;
    let response = start_stream(&sluice, "sk-acme", 100, 20, None).await;
    let id = stream_id(&response);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    read_until(&mut body, &mut text, "tok0").await;
    let paused = Instant::now();
    assert_eq!(control(&sluice, ADMIN, &id, "pause").await.0, 200);
    read_until(&mut body, &mut text, "[DONE]").await;
    assert!(paused.elapsed() >= Duration::from_millis(300));
    assert!(text.contains(r#""cause":"pause_timeout""#), "{text}");
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_stream_cancellations_total{cause="pause_timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_higher_priority_request_preempts_the_lowest_running_stream() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let yaml = config(&mock.base_url(), "").replace(
        "  acme:\n",
        "  acme:\n    limits: {concurrent_requests: 1}\n",
    );
    let sluice = Sluice::start(&yaml).await;
    let batch = start_stream(&sluice, "sk-acme", 100, 50, Some("batch")).await;
    let mut body = batch.bytes_stream();
    let mut text = String::new();
    read_until(&mut body, &mut text, "tok0").await;

    // Same priority: the limit refuses as before.
    let refused = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("x-sluice-priority", "batch")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);

    let urgent = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("x-sluice-priority", "interactive")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(urgent.status(), 200);
    read_until(&mut body, &mut text, "[DONE]").await;
    assert!(text.contains(r#""event":"stream.preempted""#), "{text}");
    assert!(text.contains(r#""cause":"preempt""#), "{text}");
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_stream_cancellations_total{cause="preempt"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn node_slots_go_to_tenants_in_their_weights_under_overload() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let extra = "streams: {max_concurrent: 1, queue_timeout_ms: 20000, tenant_weights: {acme: 3}}";
    let sluice = std::sync::Arc::new(Sluice::start(&config(&mock.base_url(), extra)).await);
    let holder = start_stream(&sluice, "sk-beta", 1000, 50, None).await;
    let holder_id = stream_id(&holder);

    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiting = Vec::new();
    for key in ["sk-beta"; 8].into_iter().chain(["sk-acme"; 8]) {
        let (sluice, order) = (sluice.clone(), order.clone());
        waiting.push(tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(sluice.url("/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-mock-delay-ms", "10")
                .json(&chat(false))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            order.lock().unwrap().push(key);
        }));
    }
    let since = Instant::now();
    loop {
        let metrics = reqwest::get(sluice.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("sluice_queue_waiting 16") {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(control(&sluice, ADMIN, &holder_id, "cancel").await.0, 200);
    for task in waiting {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let acme_first = order[..8].iter().filter(|k| **k == "sk-acme").count();
    assert_eq!(acme_first, 6, "weights 3:1, admitted {order:?}");
}

#[tokio::test]
async fn a_full_queue_answers_429_at_once() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let extra = "streams: {max_concurrent: 1, queue_size: 0}";
    let sluice = Sluice::start(&config(&mock.base_url(), extra)).await;
    let _holder = start_stream(&sluice, "sk-beta", 1000, 50, None).await;
    let refused = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-beta")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
}

#[tokio::test]
async fn a_cancel_sent_to_one_node_stops_a_stream_on_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let extra = format!("quotas: {{redis_url: {}}}", redis.url());
    let a = Sluice::start(&config(&mock.base_url(), &extra)).await;
    let b = Sluice::start(&config(&mock.base_url(), &extra)).await;
    // Give both nodes' buses a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let response = start_stream(&b, "sk-acme", 100, 50, None).await;
    let id = stream_id(&response);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    read_until(&mut body, &mut text, "tok0").await;

    let seen_from_a = list(&a, "sk-acme").await;
    assert_eq!(seen_from_a.len(), 1, "{seen_from_a:?}");
    assert_eq!(seen_from_a[0]["id"], id);
    assert_eq!(list(&a, "sk-beta").await, Vec::<Value>::new());
    assert_eq!(control(&a, "sk-beta", &id, "cancel").await.0, 404);

    let (status, view) = control(&a, "sk-acme", &id, "cancel").await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("ending")),
        "{view}"
    );
    read_until(&mut body, &mut text, "[DONE]").await;
    assert!(text.contains(r#""cause":"api""#), "{text}");
    wait_for_closed_upstream(&mock, Duration::from_millis(1000)).await;
}
