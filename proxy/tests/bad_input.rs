//! The bad-input matrix: hostile and broken requests, each answered with a
//! clean 4xx in OpenAI's error shape, none forwarded upstream, and no
//! secret (the client's key, the upstream's key) in the log. Raw sockets,
//! so framing the HTTP client would refuse to send is tested too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, Sluice};
use serde_json::Value;
use sluice_load_tests::{MockOptions, MockUpstream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENT_SECRET: &str = "sk-client-secret-0123456789";

/// A POST to the chat endpoint with `body` and the client's key.
fn post(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_SECRET}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A request with the client's key and `head` as its first line and headers.
fn raw(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\nhost: x\r\nauthorization: Bearer {CLIENT_SECRET}\r\nconnection: close\r\n\r\n{body}")
        .into_bytes()
}

fn chat_with(field: &str) -> Vec<u8> {
    post(
        format!(r#"{{"model":"fast","messages":[{{"role":"user","content":"hi"}}],{field}}}"#)
            .as_bytes(),
    )
}

async fn answer(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A refused upload may be cut short; what matters is the answer.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("answered and closed in time")
        .ok();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let value = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test]
async fn every_bad_input_gets_a_clean_4xx_in_openai_shape() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let config = config_for(&mock.base_url(), "").replace(
        "server:\n  max_body_bytes: 1048576",
        "server:\n  max_body_bytes: 1048576\n  header_timeout_ms: 500\n  body_timeout_ms: 500",
    );
    let sluice = Sluice::start(&config).await;
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let big = vec![b'a'; 100 * 1024 * 1024];
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated JSON", post(br#"{"model": "fast","#), 400),
        ("not JSON", post(b"hello"), 400),
        ("a JSON array", post(b"[1,2,3]"), 400),
        ("empty body", post(b""), 400),
        (
            "deeply nested JSON",
            post(format!(r#"{{"model":"fast","x":{nested}}}"#).as_bytes()),
            400,
        ),
        ("invalid UTF-8", post(b"{\"model\":\"fa\xff\xfest\"}"), 400),
        ("model missing", post(br#"{"messages":[]}"#), 404),
        ("model null", post(br#"{"model":null}"#), 404),
        ("model a number", post(br#"{"model":42}"#), 400),
        ("model an object", post(br#"{"model":{"a":1}}"#), 400),
        ("model empty", post(br#"{"model":""}"#), 404),
        ("model unknown", post(br#"{"model":"no-such-model"}"#), 404),
        (
            "header injection in the model",
            post(b"{\"model\":\"fast\\r\\nx-evil: 1\"}"),
            404,
        ),
        ("stream a string", chat_with(r#""stream":"yes""#), 400),
        ("stream a number", chat_with(r#""stream":1"#), 400),
        (
            "stream_options a string",
            chat_with(r#""stream":true,"stream_options":"x""#),
            400,
        ),
        ("max_tokens negative", chat_with(r#""max_tokens":-1"#), 400),
        (
            "max_tokens a string",
            chat_with(r#""max_tokens":"many""#),
            400,
        ),
        (
            "max_tokens past u64",
            chat_with(r#""max_tokens":1e40"#),
            400,
        ),
        (
            "max_completion_tokens negative",
            chat_with(r#""max_completion_tokens":-5"#),
            400,
        ),
        ("100 MB body with a length", post(&big), 413),
        (
            "100 MB body chunked",
            {
                let mut r = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
                for _ in 0..100 {
                    r.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
                    r.extend_from_slice(&big[..1 << 20]);
                    r.extend_from_slice(b"\r\n");
                }
                r
            },
            413,
        ),
        (
            "too many headers",
            raw(
                &format!("GET /v1/models HTTP/1.1\r\n{}", many_headers.trim_end()),
                "",
            ),
            431,
        ),
        (
            "oversized header",
            raw(
                &format!("GET /v1/models HTTP/1.1\r\nx-big: {}", "v".repeat(100_000)),
                "",
            ),
            431,
        ),
        (
            "two Content-Lengths",
            raw(
                "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3",
                "{}",
            ),
            400,
        ),
        (
            "obfuscated Transfer-Encoding",
            raw(
                "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: xchunked",
                "",
            ),
            400,
        ),
        (
            "space before the colon",
            raw(
                "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding : chunked",
                "",
            ),
            400,
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            raw(
                "POST /v1/chat/completions HTTP/1.0\r\ntransfer-encoding: chunked",
                "",
            ),
            400,
        ),
        (
            "slow-loris body",
            raw(
                "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 50",
                "{\"mo",
            ),
            408,
        ),
        (
            "unknown route",
            raw("GET /v1/nothing-here HTTP/1.1", ""),
            404,
        ),
        (
            "path traversal to admin",
            raw("GET /admin/../admin/keys HTTP/1.1", ""),
            404,
        ),
        (
            "encoded traversal",
            raw("GET /admin/keys/..%2f..%2fetc%2fpasswd HTTP/1.1", ""),
            401,
        ),
        (
            "admin route with a client key",
            raw("GET /admin/usage HTTP/1.1", ""),
            401,
        ),
        (
            "another stream id",
            raw(
                "POST /v1/streams/not-mine/cancel HTTP/1.1\r\ncontent-length: 0",
                "",
            ),
            404,
        ),
    ];
    assert!(cases.len() >= 30);
    let mut wrong = Vec::new();
    for (name, request, expected) in &cases {
        // Each request goes to the listener that serves its path.
        let path = String::from_utf8_lossy(request);
        let path = path.split(' ').nth(1).unwrap_or("/");
        let (status, body) = answer(sluice.addr_for(path), request).await;
        let error = &body["error"];
        if status != *expected || !(error["message"].is_string() && error["type"].is_string()) {
            wrong.push(format!("{name}: expected {expected}, got {status} {body}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        mock.stats().requests(),
        0,
        "a bad request reached the upstream: {:?}",
        mock.stats().last_request().map(|r| r
            .json()
            .to_string()
            .chars()
            .take(300)
            .collect::<String>())
    );
    let log = sluice.log();
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client's key is in the log"
    );
    assert!(
        !log.contains("sk-upstream-secret"),
        "the upstream key is in the log"
    );
}
