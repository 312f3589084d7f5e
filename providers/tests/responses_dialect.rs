//! The Responses API client dialect against hand-written golden files
//! (`fixtures/responses/`), and the replies the SDK check serves.
//!
//! `dumps_replies_for_the_sdk_check` writes writer output to
//! `$TMPDIR/sluice-responses-sdk/`; `python3 providers/tests/sdk_check_responses.py`
//! serves it to the real OpenAI SDK.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use sluice_providers::dialects::responses::{to_chat, ResponsesRequest, ResponsesWriter};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/responses")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Sets every `created_at` to 0, the fixtures' stand-in for "now".
fn zero_created_at(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(created) = map.get_mut("created_at") {
                *created = Value::from(0);
            }
            map.values_mut().for_each(zero_created_at);
        }
        Value::Array(items) => items.iter_mut().for_each(zero_created_at),
        _ => {}
    }
}

/// The `data:` payloads of an SSE stream, each checked against its `event:` name.
fn events(sse: &[u8]) -> Vec<Value> {
    std::str::from_utf8(sse)
        .unwrap()
        .split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            let mut data = json(data.strip_prefix("data: ").unwrap().as_bytes());
            assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
            zero_created_at(&mut data);
            data
        })
        .collect()
}

/// Runs `chat` through a writer in `piece`-byte pieces.
fn write(request: &[u8], chat: &[u8], piece: usize) -> (Vec<u8>, ResponsesWriter) {
    let request = ResponsesRequest::parse(request).unwrap();
    let mut writer = ResponsesWriter::new(request.stream, "resp_golden", &request.model, &request);
    let mut out = Vec::new();
    for p in chat.chunks(piece) {
        out.extend_from_slice(&writer.feed(p));
    }
    out.extend_from_slice(&writer.finish());
    (out, writer)
}

#[test]
fn to_chat_matches_the_golden_request() {
    let chat = to_chat(&fixture("request_tools.json"), &[]).unwrap();
    assert_eq!(json(&chat), json(&fixture("request_tools.chat.json")));
}

#[test]
fn a_whole_reply_matches_the_golden_response() {
    let (out, writer) = write(
        &fixture("reply_tool_call.request.json"),
        &fixture("reply_tool_call.chat.json"),
        7,
    );
    let mut response = json(&out);
    zero_created_at(&mut response);
    let expected = json(&fixture("reply_tool_call.response.json"));
    assert_eq!(response, expected);
    assert_eq!(
        writer.output_items(),
        expected["output"].as_array().unwrap().as_slice()
    );
}

#[test]
fn a_stream_matches_the_golden_events_in_any_pieces() {
    let expected = events(&fixture("stream_text.responses.sse"));
    for piece in [1, 7, 100, usize::MAX] {
        let (out, writer) = write(
            &fixture("stream_text.request.json"),
            &fixture("stream_text.chat.sse"),
            piece.min(10_000),
        );
        assert_eq!(events(&out), expected, "pieces of {piece} bytes");
        assert!(writer.done());
    }
}

/// Where the SDK check reads the writer's output.
fn dump_dir() -> PathBuf {
    std::env::temp_dir().join("sluice-responses-sdk")
}

fn chunk(delta: &str, finish: &str) -> String {
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    )
}

#[test]
fn dumps_replies_for_the_sdk_check() {
    let dir = dump_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":4,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n";
    let text_stream = format!(
        "{}{}{}{usage}data: [DONE]\n\n",
        chunk(r#"{"content":"Hello"}"#, "null"),
        chunk(r#"{"content":" world"}"#, "null"),
        chunk("{}", r#""stop""#)
    );
    let tool_stream = format!(
        "{}{}{}{}{usage}data: [DONE]\n\n",
        chunk(r#"{"content":"Checking."}"#, "null"),
        chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
            "null"
        ),
        chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]}"#,
            "null"
        ),
        chunk("{}", r#""tool_calls""#)
    );
    let whole_text = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello world"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":3}}}"#;
    let whole_tool = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}"#;
    let tools = r#","tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]"#;
    let cases: [(&str, String, &str); 4] = [
        (
            "text.json",
            r#"{"model":"m","input":"hi"}"#.to_string(),
            whole_text,
        ),
        (
            "tool.json",
            format!(r#"{{"model":"m","input":"hi"{tools}}}"#),
            whole_tool,
        ),
        (
            "text.sse",
            r#"{"model":"m","input":"hi","stream":true}"#.to_string(),
            &text_stream,
        ),
        (
            "tool.sse",
            format!(r#"{{"model":"m","input":"hi","stream":true{tools}}}"#),
            &tool_stream,
        ),
    ];
    for (name, request, chat) in cases {
        let (out, writer) = write(request.as_bytes(), chat.as_bytes(), 7);
        assert!(writer.done(), "{name}");
        std::fs::write(dir.join(name), out).unwrap();
    }
}
