//! Requests that succeed: bodies, streams, headers, pooling, h2c.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, sse_data, Sluice};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "stream": stream,
        "user": "u-1"
    })
}

#[tokio::test]
async fn non_stream_chat_round_trip_rewrites_only_the_model() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;

    let sent = chat_body("fast", false);
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-client-key")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-model");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(body["usage"]["completion_tokens"], 5);

    assert_eq!(mock.stats().requests(), 1);
    let upstream = mock.stats().last_request().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    let mut expected = sent.clone();
    expected["model"] = json!("mock-model");
    assert_eq!(
        upstream.json(),
        expected,
        "everything but the model travels untouched"
    );
    assert_eq!(
        upstream.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(upstream.header("x-team"), Some("research"));
    assert_eq!(upstream.header("x-request-id"), Some(request_id.as_str()));
    assert_eq!(
        upstream.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
}

#[tokio::test]
async fn body_is_forwarded_byte_for_byte_when_the_name_is_unchanged() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(
        &mock.base_url(),
        "  - {name: '*', upstream: mock}",
    ))
    .await;
    // Odd spacing and key order that a re-serialiser would change.
    let raw = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"h\\u00e9\"} ],\n \"model\":\"gpt-4o\" }";
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        &mock.stats().last_request().unwrap().body[..],
        raw.as_bytes()
    );
}

#[tokio::test]
async fn large_bodies_beyond_pingoras_retry_buffer_are_forwarded() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let long = "word ".repeat(60_000); // ~300 KB
    let mut body = chat_body("fast", false);
    body["messages"][1]["content"] = json!(long);
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let upstream = mock.stats().last_request().unwrap().json();
    assert_eq!(
        upstream["messages"][1]["content"].as_str().unwrap().len(),
        long.len()
    );
    assert_eq!(upstream["model"], "mock-model");
}

#[tokio::test]
async fn stream_round_trip_relays_every_event_in_order() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let mut body = chat_body("fast", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4 ");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    // Observed once the relay ends, which may be just after the client has [DONE].
    let mut seen = false;
    for _ in 0..50 {
        let metrics = common::settled_metrics(&sluice).await;
        if metrics.contains(r#"sluice_upstream_first_token_seconds_count{upstream="mock"} 1"#) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "time to first token observed");
}

#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_upstream_finishes() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-chunks", "3")
        .header("x-mock-chunk-delay-ms", "400")
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut received = String::new();
    while !received.contains("tok0") {
        let chunk = stream.next().await.expect("stream ended early").unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // The client holds the first content chunk while the upstream still has
    // three more events to produce, 400 ms apart: nothing buffered the stream.
    assert_eq!(mock.stats().streams_finished(), 0);
    while let Some(chunk) = stream.next().await {
        received.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(mock.stats().streams_finished(), 1);
    assert!(received.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn completions_and_embeddings_are_forwarded() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    let completion: Value = client
        .post(sluice.url("/v1/completions"))
        .json(&json!({"model": "fast", "prompt": "once upon"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(mock.stats().last_request().unwrap().path, "/v1/completions");

    let embeddings: Value = client
        .post(sluice.url("/v1/embeddings"))
        .json(&json!({"model": "fast", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(embeddings["object"], "list");
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
    assert_eq!(mock.stats().last_request().unwrap().path, "/v1/embeddings");
}

#[tokio::test]
async fn models_lists_configured_names_in_openai_shape() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let extra = "  - {name: gpt-4o, upstream: mock}\n  - {name: '*', upstream: mock}";
    let sluice = Sluice::start(&config_for(&mock.base_url(), extra)).await;
    let models: Value = reqwest::get(sluice.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast", "gpt-4o"]);
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));
    assert_eq!(mock.stats().requests(), 0, "served locally");
}

#[tokio::test]
async fn request_id_is_echoed_or_minted() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    let given = client
        .post(sluice.url("/v1/chat/completions"))
        .header("x-request-id", "client-chosen-42")
        .json(&chat_body("fast", false))
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "client-chosen-42");
    assert_eq!(
        mock.stats().last_request().unwrap().header("x-request-id"),
        Some("client-chosen-42")
    );
    let minted_a = client.get(sluice.url("/health")).send().await.unwrap();
    let minted_b = client.get(sluice.url("/health")).send().await.unwrap();
    let a = minted_a.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let b = minted_b.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let r = client
            .post(sluice.url("/v1/chat/completions"))
            .json(&chat_body("fast", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(mock.stats().requests(), 10);
    assert_eq!(
        mock.stats().connections_opened(),
        1,
        "one upstream connection for sequential requests"
    );
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn health_probes_and_metrics() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(
            reqwest::get(sluice.url(path)).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let client = reqwest::Client::new();
    client
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat_body("fast", false))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    client
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-status", "500")
        .json(&chat_body("fast", false))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(
            r#"sluice_requests_total{model="fast",route="chat_completions",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"sluice_requests_total{model="fast",route="chat_completions",status="502"} 1"#
    ));
    assert!(metrics.contains("sluice_request_duration_seconds_bucket"));
    assert!(metrics.contains(r#"sluice_upstream_first_byte_seconds_count{upstream="mock"} 4"#));
    assert!(metrics.contains(r#"sluice_requests_in_flight{route="chat_completions"} 0"#));
    assert!(metrics.contains(r#"sluice_requests_in_flight{route="metrics"} 1"#));
}

#[tokio::test]
async fn streams_are_asked_for_usage_without_changing_what_the_client_sees() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let text = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let upstream = mock.stats().last_request().unwrap().json();
    assert_eq!(upstream["stream_options"]["include_usage"], true);
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(
            !chunk["choices"].as_array().unwrap().is_empty(),
            "the usage-only chunk the client did not ask for is dropped: {event}"
        );
        assert!(chunk["usage"].is_null());
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_closes_the_upstream_at_once() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    let response = client
        .post(sluice.url("/v1/chat/completions"))
        .header("x-mock-chunks", "50")
        .header("x-mock-chunk-delay-ms", "300")
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut received = String::new();
    while !received.contains("tok0") {
        let chunk = stream.next().await.expect("stream ended early").unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(mock.stats().connections_closed(), 0);
    // The client goes away mid-stream.
    drop(stream);
    drop(client);
    let left = std::time::Instant::now();
    while mock.stats().connections_closed() == 0 {
        assert!(
            left.elapsed() < std::time::Duration::from_secs(5),
            "upstream never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Well before the next chunk (300 ms away) would have revealed the broken pipe.
    assert!(
        left.elapsed() < std::time::Duration::from_millis(100),
        "upstream closed {:?} after the client left",
        left.elapsed()
    );
    assert_eq!(
        mock.stats().streams_finished(),
        0,
        "generation stopped part-way"
    );
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains("sluice_client_disconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pipelining_client_gets_both_answers_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let addr = sluice.url("").trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = chat_body("fast", false).to_string();
    let request = |id: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-request-id: {id}\r\nx-mock-delay-ms: 50\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Both requests at once: the second arrives while sluice watches the
    // client during the first one's upstream wait.
    let both = format!("{}{}", request("first-one"), request("second-one"));
    socket.write_all(both.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while String::from_utf8_lossy(&received).matches("tok4").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&received)
        );
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    let first = text.find("x-request-id: first-one").unwrap();
    let second = text.find("x-request-id: second-one").unwrap();
    assert!(first < second, "{text}");
}

#[tokio::test]
async fn docs_llms_txt_lists_every_route_for_agents() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let response = reqwest::get(sluice.url("/docs/llms.txt")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.starts_with("# sluice\n"), "{text}");
    for line in [
        "- `POST /v1/chat/completions`",
        "- `GET /v1/models`",
        "- `GET /admin/usage`",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

/// The value of the first `/metrics` line starting with `prefix`.
fn metric_value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"))
}

#[tokio::test]
async fn the_gateway_overhead_leaves_out_the_upstreams_time() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let client = reqwest::Client::new();
    // A slow first byte, then a slow stream: 300 ms and 10 x 30 ms upstream.
    for (stream, headers) in [
        (false, [("x-mock-delay-ms", "300"), ("x-mock-chunks", "1")]),
        (
            true,
            [("x-mock-chunk-delay-ms", "30"), ("x-mock-chunks", "10")],
        ),
    ] {
        let mut request = client
            .post(sluice.url("/v1/chat/completions"))
            .json(&chat_body("fast", stream));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let metrics = common::settled_metrics(&sluice).await;
    let count = metric_value(
        &metrics,
        r#"sluice_gateway_overhead_seconds_count{route="chat_completions"}"#,
    );
    assert_eq!(count, 2.0);
    let overhead = metric_value(
        &metrics,
        r#"sluice_gateway_overhead_seconds_sum{route="chat_completions"}"#,
    );
    let total = metric_value(
        &metrics,
        r#"sluice_request_duration_seconds_sum{model="fast",route="chat_completions",status="200"}"#,
    );
    assert!(
        total > 0.55,
        "the upstream's time is in the request's: {total}"
    );
    assert!(
        overhead < 0.1 && overhead > 0.0,
        "sluice's own time, the upstream's left out: {overhead} of {total}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "process metrics"
    );
}
