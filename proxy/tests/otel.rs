//! OpenTelemetry export (cargo feature `otel`; run with `cargo test -p
//! sluice --features otel --test otel`): an in-process OTLP/HTTP collector
//! receives the request span with its GenAI attributes, and the mock
//! upstream receives sluice's `traceparent`, in the client's trace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, Sluice};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use sluice_load_tests::{MockOptions, MockUpstream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// What the collector was sent: each span with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// A minimal OTLP/HTTP collector on a free port: decodes each
/// `POST /v1/traces` protobuf body and keeps its spans.
async fn collector() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            assert_eq!(request.uri().path(), "/v1/traces");
                            assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            let mut spans = store.lock().unwrap();
                            for resource_spans in export.resource_spans {
                                let service = resource_spans
                                    .resource
                                    .iter()
                                    .flat_map(|r| &r.attributes)
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                                    .unwrap_or_default();
                                for scope in resource_spans.scope_spans {
                                    spans.extend(
                                        scope.spans.into_iter().map(|s| (service.clone(), s)),
                                    );
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (url, received)
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string_attribute(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

fn int_attribute(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(AnyValue::IntValue(i)) => *i,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

/// The exported `request` span of the request `request_id`, once received.
async fn request_span(received: &Received, request_id: &str) -> (String, Span) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = received.lock().unwrap().iter().find(|(_, s)| {
            s.name == "request"
                && matches!(attribute(s, "request_id"), Some(AnyValue::StringValue(id)) if id == request_id)
        }).cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no span for {request_id}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn chat(sluice: &Sluice, request_id: &str, traceparent: Option<&str>) -> u64 {
    let mut request = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-request-id", request_id)
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["usage"]["prompt_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn request_span_is_exported_with_genai_attributes_and_continues_the_clients_trace() {
    let (endpoint, received) = collector().await;
    let mock = MockUpstream::start(MockOptions {
        record_requests: true,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let config = format!(
        "{}\ntracing: {{otlp_endpoint: '{endpoint}', service_name: sluice-test}}\n",
        config_for(&mock.base_url(), "")
    );
    let sluice = Sluice::start_with_env(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]).await;

    // A client in a trace: sluice's span continues it.
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let prompt_tokens = chat(&sluice, "req-otel-1", Some(&client)).await;
    let upstream = mock.stats().last_request().unwrap();
    let sent = upstream.header("traceparent").unwrap().to_string();

    let (service, span) = request_span(&received, "req-otel-1").await;
    assert_eq!(service, "sluice-test");
    assert_eq!(hex(&span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        sent,
        format!("00-{CLIENT_TRACE}-{}-01", hex(&span.span_id)),
        "the upstream gets sluice's span in the client's trace"
    );
    assert_eq!(string_attribute(&span, "gen_ai.system"), "openai");
    assert_eq!(string_attribute(&span, "gen_ai.operation.name"), "chat");
    assert_eq!(string_attribute(&span, "gen_ai.request.model"), "fast");
    assert_eq!(
        string_attribute(&span, "gen_ai.response.model"),
        "mock-model"
    );
    assert_eq!(
        int_attribute(&span, "gen_ai.usage.input_tokens"),
        prompt_tokens as i64
    );
    assert_eq!(int_attribute(&span, "gen_ai.usage.output_tokens"), 5);
    assert_eq!(int_attribute(&span, "http.response.status_code"), 200);
    assert_eq!(string_attribute(&span, "server.address"), "mock");

    // A client outside any trace: sluice starts one and passes it on.
    chat(&sluice, "req-otel-2", None).await;
    let sent = mock
        .stats()
        .last_request()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    let (_, span) = request_span(&received, "req-otel-2").await;
    assert!(span.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        sent,
        format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id))
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
