//! The same cases against every provider, from golden files.
//!
//! `fixtures/cases/<case>.json` is what an OpenAI client sends and
//! `<case>.expected.json` what it must get back, reduced to what matters
//! (status, content, tool calls, finish reason, usage; or error type and
//! code). `fixtures/<provider>/<case>.request.json` is the body the provider
//! must be sent, and `<case>.reply.*` its reply in its own wire format
//! (`.json`, `.sse`, or `.events.json`: Bedrock event-stream messages,
//! framed here). Streams are fed to the translator 7 bytes at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use sluice_config::load_str;
use sluice_providers::eventstream::encode_message;
use sluice_providers::{Endpoint, Provider, RoutingFields};
use std::path::PathBuf;

const UPSTREAM_MODEL: &str = "upstream-model";

fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_fixture(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

/// A provider set up the way an operator does it: `kind:` in the config.
fn provider(name: &str) -> Provider {
    let base = match name {
        "openai" => "https://api.openai.com/v1",
        "azure" => "https://res.openai.azure.com",
        "anthropic" => "https://api.anthropic.com/v1",
        "gemini" => "https://generativelanguage.googleapis.com/v1beta",
        "bedrock" => "https://bedrock-runtime.us-east-1.amazonaws.com",
        other => panic!("no provider {other}"),
    };
    let yaml = format!(
        "upstreams:\n  u: {{kind: {name}, base_url: '{base}', api_key: sk-secret-key, region: us-east-1, \
         aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}}\n"
    );
    Provider::from_settings(&load_str(&yaml, &|_| None).unwrap().upstreams[0])
}

/// The provider's reply bytes for a case.
fn reply(provider: &str, case: &str) -> Bytes {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let base = format!("{provider}/{case}.reply");
    if dir.join(format!("{base}.json")).exists() {
        return Bytes::from(fixture(&format!("{base}.json")));
    }
    if dir.join(format!("{base}.sse")).exists() {
        return Bytes::from(fixture(&format!("{base}.sse")));
    }
    let events = json_fixture(&format!("{base}.events.json"));
    let mut out = Vec::new();
    for e in events.as_array().unwrap() {
        out.extend(encode_message(
            &[
                (":event-type", e["event"].as_str().unwrap()),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            e["payload"].to_string().as_bytes(),
        ));
    }
    Bytes::from(out)
}

/// Reduces an OpenAI reply (whole or SSE) to the fields the cases pin.
fn reduce(status: u16, body: &[u8], stream: bool) -> Value {
    if status >= 400 {
        let v: Value = serde_json::from_slice(body).unwrap();
        return json!({"status": status, "error_type": v["error"]["type"], "error_code": v["error"]["code"]});
    }
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    let absorb_calls = |list: &Value, calls: &mut Vec<(String, String)>| {
        for c in list.as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
            if calls.len() <= i {
                calls.resize(i + 1, (String::new(), String::new()));
            }
            if let Some(n) = c["function"]["name"].as_str() {
                calls[i].0.push_str(n);
            }
            if let Some(a) = c["function"]["arguments"].as_str() {
                calls[i].1.push_str(a);
            }
        }
    };
    if stream {
        let text = std::str::from_utf8(body).unwrap();
        assert!(
            text.ends_with("data: [DONE]\n\n"),
            "stream not closed: {text}"
        );
        for event in text.split("\n\n").filter(|e| !e.is_empty()) {
            let data = event
                .strip_prefix("data: ")
                .expect("one data line per event");
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
            assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
            if !v["usage"].is_null() {
                usage = v["usage"].clone();
            }
            for choice in v["choices"].as_array().unwrap() {
                if let Some(t) = choice["delta"]["content"].as_str() {
                    content.push_str(t);
                }
                absorb_calls(&choice["delta"]["tool_calls"], &mut calls);
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
            }
        }
    } else {
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        let choice = &v["choices"][0];
        content = choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        absorb_calls(&choice["message"]["tool_calls"], &mut calls);
        finish = choice["finish_reason"].clone();
        usage = v["usage"].clone();
    }
    let tool_calls: Vec<Value> = calls
        .into_iter()
        .map(|(name, args)| json!({"name": name, "arguments": serde_json::from_str::<Value>(&args).unwrap()}))
        .collect();
    json!({
        "status": status,
        "content": content,
        "tool_calls": tool_calls,
        "finish_reason": finish,
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
        },
    })
}

fn run_case(provider_name: &str, case: &str) {
    let p = provider(provider_name);
    let body = Bytes::from(fixture(&format!("cases/{case}.json")));
    let fields = RoutingFields::parse(&body).unwrap();
    let req = p
        .build_request(Endpoint::ChatCompletions, &body, &fields, UPSTREAM_MODEL)
        .unwrap();
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    let want = json_fixture(&format!("{provider_name}/{case}.request.json"));
    assert_eq!(sent, want, "{provider_name}/{case}: upstream body");
    for (_, value) in &req.headers {
        assert!(
            !value.to_str().unwrap_or_default().contains("wJalr"),
            "the AWS secret never goes on the wire"
        );
    }
    let status = if case == "error" { 429 } else { 200 };
    let reply_bytes = reply(provider_name, case);
    let mut t = p.response_translator(&req.reply, status);
    let mut out = BytesMut::new();
    for piece in reply_bytes.chunks(7) {
        out.extend_from_slice(&t.relay(Bytes::copy_from_slice(piece)));
    }
    out.extend_from_slice(&t.finish());
    let got = reduce(t.status(), &out, fields.stream && status == 200);
    let expected = json_fixture(&format!("cases/{case}.expected.json"));
    assert_eq!(got, expected, "{provider_name}/{case}: OpenAI reply");
    if status == 200 {
        let usage = t.usage().expect("usage read");
        assert_eq!(usage.prompt_tokens, expected["usage"]["prompt_tokens"]);
        assert_eq!(
            usage.cached_prompt_tokens,
            expected["usage"]["cached_tokens"]
        );
    } else {
        assert!(!String::from_utf8_lossy(&out).contains("sk-secret-key"));
    }
}

macro_rules! conformance {
    ($($provider:ident),* $(,)?) => {$(
        mod $provider {
            #[test]
            fn plain_chat() {
                super::run_case(stringify!($provider), "plain_chat");
            }
            #[test]
            fn system_prompt() {
                super::run_case(stringify!($provider), "system_prompt");
            }
            #[test]
            fn tool_call() {
                super::run_case(stringify!($provider), "tool_call");
            }
            #[test]
            fn streamed_tool_call() {
                super::run_case(stringify!($provider), "streamed_tool_call");
            }
            #[test]
            fn stop_sequence() {
                super::run_case(stringify!($provider), "stop_sequence");
            }
            #[test]
            fn error() {
                super::run_case(stringify!($provider), "error");
            }
        }
    )*};
}

conformance!(openai, azure, anthropic, gemini, bedrock);
