//! Anthropic's Messages API as a client dialect, against hand-written golden
//! files in `fixtures/messages/`: a Messages request through `to_chat` and
//! on through the Anthropic and Bedrock adapters (prompt-cache markers kept
//! in place), and OpenAI replies, whole and streamed, rewritten by
//! `MessagesWriter`.
//!
//! With `SLUICE_MESSAGES_DUMP=<dir>` set, the rewritten stream and Message
//! are also written to `<dir>/stream.sse` and `<dir>/message.json`, for
//! `sdk_check_messages.py` to feed through the real Anthropic SDK.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use serde_json::Value;
use sluice_config::load_str;
use sluice_providers::dialects::messages::{to_chat, MessagesWriter};
use sluice_providers::{Endpoint, Provider, RoutingFields};
use std::path::PathBuf;

const UPSTREAM_MODEL: &str = "upstream-model";
const CLIENT_MODEL: &str = "claude-sonnet-4-5";

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/messages")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn provider(kind: &str, base: &str) -> Provider {
    let yaml = format!(
        "upstreams:\n  u: {{kind: {kind}, base_url: '{base}', api_key: sk-key, region: us-east-1, \
         aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}}\n"
    );
    Provider::from_settings(&load_str(&yaml, &|_| None).unwrap().upstreams[0])
}

/// The body `provider` sends upstream for a chat body.
fn upstream_body(provider: &Provider, chat: &[u8]) -> Value {
    let body = Bytes::copy_from_slice(chat);
    let fields = RoutingFields::parse(&body).unwrap();
    let req = provider
        .build_request(Endpoint::ChatCompletions, &body, &fields, UPSTREAM_MODEL)
        .unwrap();
    serde_json::from_slice(&req.body).unwrap()
}

/// Writes a rewritten reply for the SDK check, when asked to.
fn dump(name: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("SLUICE_MESSAGES_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn a_messages_request_becomes_the_expected_chat_body() {
    let chat = to_chat(&fixture("cached_tools.request.json")).unwrap();
    let got: Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(got, json_fixture("cached_tools.chat.json"));
}

#[test]
fn cache_markers_survive_the_anthropic_adapter() {
    let chat = to_chat(&fixture("cached_tools.request.json")).unwrap();
    let anthropic = provider("anthropic", "https://api.anthropic.com/v1");
    let sent = upstream_body(&anthropic, &chat);
    assert_eq!(sent, json_fixture("cached_tools.anthropic.json"));
    let request = json_fixture("cached_tools.request.json");
    assert_eq!(
        sent["system"][0]["cache_control"],
        request["system"][0]["cache_control"]
    );
    assert_eq!(
        sent["messages"][0]["content"][0]["cache_control"],
        request["messages"][0]["content"][0]["cache_control"]
    );
    assert_eq!(
        sent["tools"][0]["cache_control"],
        request["tools"][0]["cache_control"]
    );
}

#[test]
fn cache_markers_become_bedrock_cache_points() {
    let chat = to_chat(&fixture("cached_tools.request.json")).unwrap();
    let bedrock = provider("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com");
    let sent = upstream_body(&bedrock, &chat);
    assert_eq!(sent, json_fixture("cached_tools.bedrock.json"));
    let cache_points = sent.to_string().matches("cachePoint").count();
    assert_eq!(cache_points, 3);
}

#[test]
fn a_whole_reply_becomes_the_expected_message() {
    let reply = fixture("tool_use.reply.json");
    let mut w = MessagesWriter::new(false, CLIENT_MODEL);
    for piece in reply.chunks(11) {
        assert!(w.feed(piece).is_empty());
    }
    let out = w.finish();
    assert!(w.done());
    dump("message.json", &out);
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got, json_fixture("tool_use.message.json"));
}

#[test]
fn a_streamed_reply_becomes_the_expected_events() {
    let reply = fixture("tool_use.reply.sse");
    let mut w = MessagesWriter::new(true, CLIENT_MODEL);
    let mut out = Vec::new();
    for piece in reply.chunks(7) {
        out.extend_from_slice(&w.feed(piece));
    }
    out.extend_from_slice(&w.finish());
    assert!(w.done());
    dump("stream.sse", &out);
    let text = String::from_utf8(out).unwrap();
    let got: Vec<Value> = text
        .split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            serde_json::json!({
                "event": name.strip_prefix("event: ").unwrap(),
                "data": serde_json::from_str::<Value>(data.strip_prefix("data: ").unwrap()).unwrap(),
            })
        })
        .collect();
    assert_eq!(Value::Array(got), json_fixture("tool_use.events.json"));
}
