//! The fault matrix: an upstream that misbehaves in each way a real one
//! does, over real sockets, against the real binary. For each fault: what
//! the client sees, that traffic to a healthy upstream keeps flowing, and
//! that the ledger holds exactly one record for the request, with the
//! status the client got and how it ended.
//!
//! The faulty upstream is a raw TCP server speaking OpenAI's HTTP/1.1 wire
//! format and breaking it on purpose; the healthy one is the mock.
//! (Redis down and back: `shared_quotas.rs`; PostgreSQL down and back:
//! `ledger.rs`; a crash: `durability.rs`; the engine at capacity: `local.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use serde_json::{json, Value};
use sluice_ledger::Store;
use sluice_load_tests::{MockOptions, MockUpstream};
use sqlx::Row;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the faulty upstream breaks its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// A JSON answer's headers, part of its body, then a TCP reset.
    ResetAfterHeaders,
    /// A stream's first two events, then a TCP reset.
    ResetMidStream,
    /// 500 on every request.
    ServerErrors,
    /// 429 with `retry-after: 7` on every request.
    RateLimited,
    /// A stream's headers, then silence.
    HeadersThenHang,
    /// A JSON answer, one byte a second.
    OneBytePerSecond,
    /// 200 with a JSON body cut short.
    MalformedJson,
    /// A stream whose events are not JSON.
    MalformedSse,
    /// 431 with an empty body, as a proxy in front of a provider answers.
    BareError,
    /// 400 in OpenAI's own error shape, `code` and `param` set.
    OpenAiError,
}

const STREAM_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

fn delta(text: &str) -> String {
    let event = json!({"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {event}\n\n")
}

fn status(code: u16, reason: &str, extra: &str) -> Vec<u8> {
    let body = json!({"error": {"message": "upstream says no", "type": "server_error", "param": null, "code": null}})
        .to_string();
    format!("HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}", body.len())
        .into_bytes()
}

/// Reads one request (header and `content-length` body).
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return true;
            }
        }
    }
}

async fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn misbehave(mut stream: TcpStream, fault: Fault) {
    if !read_request(&mut stream).await {
        return;
    }
    match fault {
        Fault::ResetAfterHeaders => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"id\":\"chatcmpl-f\",")
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream).await;
        }
        Fault::ResetMidStream => {
            let mut out = STREAM_HEAD.to_vec();
            out.extend(chunk(&delta("one ")));
            out.extend(chunk(&delta("two ")));
            let _ = stream.write_all(&out).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream).await;
        }
        Fault::ServerErrors => {
            let _ = stream
                .write_all(&status(500, "Internal Server Error", ""))
                .await;
        }
        Fault::RateLimited => {
            let _ = stream
                .write_all(&status(429, "Too Many Requests", "retry-after: 7\r\n"))
                .await;
        }
        Fault::HeadersThenHang => {
            let _ = stream.write_all(STREAM_HEAD).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Fault::OneBytePerSecond => {
            let body = json!({"id": "chatcmpl-f", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "slow"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            for byte in body.bytes() {
                if stream.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Fault::MalformedJson => {
            let body = "{\"id\": \"chatcmpl-f\", \"choices\": [{\"message\": ";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
        }
        Fault::BareError => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
        }
        Fault::OpenAiError => {
            let body = json!({"error": {"message": "This model's maximum context length is 8 tokens.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
            .to_string();
            let head = format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
        }
        Fault::MalformedSse => {
            let mut out = STREAM_HEAD.to_vec();
            out.extend(chunk(&delta("fine ")));
            out.extend(chunk("data: {this is not json\n\n"));
            out.extend(chunk("event: nonsense\nretry: x\n\n"));
            out.extend(chunk("data: [DONE]\n\n"));
            out.extend(b"0\r\n\r\n");
            let _ = stream.write_all(&out).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn faulty_upstream(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(misbehave(stream, fault));
        }
    });
    addr
}

fn config(faulty: &str, healthy: &str) -> String {
    format!(
        r#"
upstreams:
  faulty:
    base_url: "{faulty}"
    first_byte_timeout_ms: 1000
    idle_timeout_ms: 1500
    total_timeout_ms: 3000
  healthy: {{base_url: "{healthy}"}}
models:
  - {{name: flaky, upstream: faulty, upstream_model: gpt-4o-mini}}
  - {{name: fine, upstream: healthy, upstream_model: gpt-4o-mini}}
routing: {{max_attempts: 1}}
ledger:
  flush_interval_ms: 20
"#
    )
}

/// What the client saw.
#[derive(Debug)]
struct Seen {
    status: u16,
    retry_after: Option<String>,
    /// The body, or `None` when it broke off.
    body: Option<String>,
}

async fn ask(sluice: &Sluice, model: &str, stream: bool, id: &str) -> Seen {
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-request-id", id)
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    Seen {
        status,
        retry_after,
        body: response.text().await.ok(),
    }
}

/// The ledger's records for `id`: (http_status, end_state).
async fn records_for(sluice: &Sluice, id: &str) -> Vec<(i64, String)> {
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    let query = "SELECT http_status, end_state FROM usage_records WHERE request_id = ?";
    for _ in 0..100 {
        let rows = sqlx::query(query)
            .bind(id)
            .fetch_all(store.pool())
            .await
            .unwrap();
        if !rows.is_empty() {
            // Long enough for a duplicate to land too, were there one.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let rows = sqlx::query(query)
                .bind(id)
                .fetch_all(store.pool())
                .await
                .unwrap();
            return rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

fn openai_error(body: &str) -> Value {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(value["error"]["message"].is_string(), "{body}");
    value["error"].clone()
}

/// Runs `fault` once, checks what the client saw with `check`, that the
/// healthy upstream still serves meanwhile, and the ledger's one record.
async fn run(fault: Option<Fault>, stream: bool, end_state: &str, check: impl Fn(&Seen)) {
    let healthy = MockUpstream::start(MockOptions::default()).await.unwrap();
    let faulty = match fault {
        Some(fault) => format!("http://{}", faulty_upstream(fault).await),
        // Nothing listens: the connection is refused.
        None => format!("http://127.0.0.1:{}", common::free_port()),
    };
    let sluice = Sluice::start(&config(&faulty, &healthy.base_url())).await;
    let id = format!("fault-{fault:?}").to_lowercase();
    let (seen, ok) = tokio::join!(ask(&sluice, "flaky", stream, &id), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ask(&sluice, "fine", stream, "healthy-meanwhile").await
    });
    assert_eq!(
        ok.status, 200,
        "{fault:?}: the healthy upstream stopped serving"
    );
    check(&seen);
    let records = records_for(&sluice, &id).await;
    assert_eq!(records.len(), 1, "{fault:?}: records {records:?}");
    assert_eq!(
        records[0].0,
        i64::from(seen.status),
        "{fault:?}: recorded status"
    );
    assert_eq!(records[0].1, end_state, "{fault:?}: recorded end");
}

/// A body that broke off or does not parse: never a complete answer.
fn cut_short(seen: &Seen) -> bool {
    seen.body
        .as_deref()
        .is_none_or(|b| serde_json::from_str::<Value>(b).is_err())
}

#[tokio::test]
async fn refused_connection_is_502_recorded_once() {
    run(None, false, "broken", |seen| {
        assert_eq!(seen.status, 502);
        assert_eq!(
            openai_error(seen.body.as_deref().unwrap())["code"],
            "upstream_unavailable"
        );
    })
    .await;
}

#[tokio::test]
async fn reset_after_headers_cuts_the_body_short() {
    run(Some(Fault::ResetAfterHeaders), false, "broken", |seen| {
        assert_eq!(seen.status, 200);
        assert!(cut_short(seen), "{seen:?}");
    })
    .await;
}

#[tokio::test]
async fn reset_mid_stream_ends_with_an_sse_error_event() {
    run(Some(Fault::ResetMidStream), true, "broken", |seen| {
        let body = seen.body.as_deref().unwrap();
        assert!(body.contains("one ") && body.contains("two "), "{body}");
        let last = common::sse_data(body)
            .into_iter()
            .rfind(|d| d != "[DONE]")
            .unwrap();
        openai_error(&last);
    })
    .await;
}

#[tokio::test]
async fn a_storm_of_500s_is_an_openai_error_recorded_once() {
    run(Some(Fault::ServerErrors), false, "broken", |seen| {
        assert!(seen.status >= 500, "{seen:?}");
        openai_error(seen.body.as_deref().unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_storm_of_429s_keeps_its_retry_after() {
    run(Some(Fault::RateLimited), false, "broken", |seen| {
        assert_eq!(seen.status, 429, "{seen:?}");
        assert_eq!(seen.retry_after.as_deref(), Some("7"));
        assert_eq!(
            openai_error(seen.body.as_deref().unwrap())["code"],
            "rate_limit_exceeded"
        );
    })
    .await;
}

#[tokio::test]
async fn headers_then_silence_end_with_an_error_event_at_the_idle_timeout() {
    run(Some(Fault::HeadersThenHang), true, "broken", |seen| {
        let body = seen.body.as_deref().unwrap();
        let last = common::sse_data(body)
            .into_iter()
            .rfind(|d| d != "[DONE]")
            .unwrap();
        assert_eq!(openai_error(&last)["code"], "upstream_timeout", "{body}");
    })
    .await;
}

#[tokio::test]
async fn one_byte_a_second_is_cut_at_the_total_timeout() {
    run(Some(Fault::OneBytePerSecond), false, "broken", |seen| {
        assert_eq!(seen.status, 200);
        assert!(cut_short(seen), "{seen:?}");
    })
    .await;
}

#[tokio::test]
async fn malformed_json_is_relayed_as_sent_and_counted() {
    run(Some(Fault::MalformedJson), false, "completed", |seen| {
        assert_eq!(seen.status, 200);
        assert!(seen
            .body
            .as_deref()
            .unwrap()
            .starts_with("{\"id\": \"chatcmpl-f\""));
    })
    .await;
}

#[tokio::test]
async fn malformed_sse_is_relayed_and_the_stream_completes() {
    run(Some(Fault::MalformedSse), true, "completed", |seen| {
        assert_eq!(seen.status, 200);
        let body = seen.body.as_deref().unwrap();
        assert!(
            body.contains("fine ") && body.ends_with("data: [DONE]\n\n"),
            "{body}"
        );
    })
    .await;
}

// Multi-threaded: `terminate` blocks its thread while sluice drains, and the
// client must keep reading meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_lets_the_stream_finish_and_records_it() {
    let healthy = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut sluice = Sluice::start(&config("http://127.0.0.1:9", &healthy.base_url())).await;
    let url = sluice.url("/v1/chat/completions");
    let streaming = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .header("x-request-id", "draining-stream")
            .header("x-mock-chunks", "10")
            .header("x-mock-chunk-delay-ms", "150")
            .json(&json!({"model": "fine", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        response.text().await
    });
    while healthy.stats().requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sluice.terminate().success(), "exit 0 after draining");
    let body = streaming
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("stream cut ({e}); log:\n{}", sluice.log()));
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    let rows =
        sqlx::query("SELECT end_state FROM usage_records WHERE request_id = 'draining-stream'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String, _>(0), "completed");
}

#[tokio::test]
async fn an_upstream_error_without_a_body_reaches_the_client_in_openai_shape() {
    run(Some(Fault::BareError), false, "completed", |seen| {
        assert_eq!(seen.status, 431, "{seen:?}");
        openai_error(seen.body.as_deref().unwrap());
    })
    .await;
}

#[tokio::test]
async fn an_upstream_error_in_openai_shape_passes_with_its_code_and_param() {
    run(Some(Fault::OpenAiError), false, "completed", |seen| {
        assert_eq!(seen.status, 400, "{seen:?}");
        let error = openai_error(seen.body.as_deref().unwrap());
        assert_eq!(error["code"], "context_length_exceeded");
        assert_eq!(error["param"], "messages");
    })
    .await;
}
