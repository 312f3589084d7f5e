//! The mock's provider routes, read back through sluice's own adapters: what
//! the adapter sends, the mock accepts; what the mock answers, the adapter
//! turns into the OpenAI reply the OpenAI mock would have given.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sluice_config::load_str;
use sluice_load_tests::{MockOptions, MockUpstream};
use sluice_providers::{Endpoint, Provider, RoutingFields};

/// A provider of kind `name` at `base`, set up through the config as an operator does.
fn provider(name: &str, base: &str) -> Provider {
    let yaml = format!(
        "upstreams:\n  u: {{kind: {name}, base_url: '{base}', api_key: k, default_max_tokens: 256, \
         region: us-east-1, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}\n"
    );
    Provider::from_settings(&load_str(&yaml, &|_| None).unwrap().upstreams[0])
}

fn base_url(name: &str, mock: &MockUpstream) -> String {
    let root = format!("http://{}", mock.addr());
    match name {
        "openai" | "anthropic" => format!("{root}/v1"),
        "gemini" => format!("{root}/v1beta"),
        _ => root,
    }
}

struct Outcome {
    status: u16,
    body: String,
    saw_done: bool,
    prompt_tokens: Option<u64>,
}

async fn call(
    name: &str,
    mock: &MockUpstream,
    request: Value,
    mock_headers: &[(&str, &str)],
) -> Outcome {
    let p = provider(name, &base_url(name, mock));
    let body = Bytes::from(request.to_string());
    let fields = RoutingFields::parse(&body).unwrap();
    let req = p
        .build_request(Endpoint::ChatCompletions, &body, &fields, "mock-model")
        .unwrap();
    let mut builder = http::Request::post(format!("http://{}{}", mock.addr(), req.path_and_query));
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    for (k, v) in mock_headers {
        builder = builder.header(*k, *v);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(builder.body(Full::new(req.body.clone())).unwrap())
        .await
        .unwrap();
    let mut t = p.response_translator(&req.reply, response.status().as_u16());
    let mut out = Vec::new();
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&t.relay(data));
        }
    }
    out.extend_from_slice(&t.finish());
    Outcome {
        status: t.status(),
        body: String::from_utf8(out).unwrap(),
        saw_done: t.saw_done(),
        prompt_tokens: t.usage().map(|u| u.prompt_tokens),
    }
}

fn chat(stream: bool) -> Value {
    serde_json::json!({
        "model": "m", "stream": stream,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    })
}

/// Content and joined tool-call arguments of an OpenAI reply, whole or SSE.
fn read(body: &str, stream: bool) -> (String, String, String) {
    let mut content = String::new();
    let mut args = String::new();
    let mut finish = String::new();
    let objects: Vec<Value> = if stream {
        body.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(body).unwrap()]
    };
    for o in objects {
        for c in o["choices"].as_array().unwrap() {
            let m = if stream { &c["delta"] } else { &c["message"] };
            content.push_str(m["content"].as_str().unwrap_or_default());
            for call in m["tool_calls"].as_array().into_iter().flatten() {
                args.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    (content, args, finish)
}

const PROVIDERS: [&str; 5] = ["openai", "azure", "anthropic", "gemini", "bedrock"];

#[tokio::test]
async fn every_provider_round_trips_text_and_tool_calls() {
    let mock = MockUpstream::start(MockOptions {
        chunks: 3,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    for name in PROVIDERS {
        for stream in [false, true] {
            let o = call(name, &mock, chat(stream), &[]).await;
            assert_eq!(o.status, 200, "{name} stream={stream}: {}", o.body);
            let (content, _, finish) = read(&o.body, stream);
            assert_eq!(content, "tok0 tok1 tok2 ", "{name} stream={stream}");
            assert_eq!(finish, "stop", "{name} stream={stream}");
            assert!(
                o.prompt_tokens.unwrap() > 0,
                "{name} stream={stream}: usage"
            );
            assert_eq!(o.saw_done, stream, "{name}");

            let o = call(name, &mock, chat(stream), &[("x-mock-tool-call", "lookup")]).await;
            let (_, args, finish) = read(&o.body, stream);
            assert_eq!(
                args, r#"{"input":"tok0 tok1 tok2 "}"#,
                "{name} stream={stream}"
            );
            assert_eq!(finish, "tool_calls", "{name} stream={stream}");
        }
    }
}

#[tokio::test]
async fn faults_come_back_openai_shaped() {
    // A delay per chunk, so what precedes the cut is flushed before it.
    let mock = MockUpstream::start(MockOptions {
        chunk_delay: std::time::Duration::from_millis(5),
        ..MockOptions::default()
    })
    .await
    .unwrap();
    for name in PROVIDERS {
        let o = call(name, &mock, chat(true), &[("x-mock-status", "429")]).await;
        assert_eq!(o.status, 429, "{name}");
        let v: Value = serde_json::from_str(&o.body).unwrap();
        assert!(v["error"]["message"].is_string(), "{name}: {}", o.body);

        let o = call(name, &mock, chat(true), &[("x-mock-abort-after", "1")]).await;
        assert!(!o.saw_done, "{name}: a cut stream never looks complete");
        assert!(
            o.body.contains("tok0"),
            "{name}: what came before the cut is relayed"
        );
    }
}
