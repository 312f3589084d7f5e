//! Hostile clients at the edge, over real sockets against the real binary:
//! silent and slow connections, oversized and ambiguous headers, connection
//! floods, HTTP/1.0. Every refusal is an answer in OpenAI's error shape,
//! never a silent close, and normal clients keep being served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, settled_metrics, Sluice};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `config_for` with extra `server:` keys.
fn config_with(base_url: &str, server: &str) -> String {
    config_for(base_url, "").replace(
        "server:\n  max_body_bytes: 1048576",
        &format!("server:\n  max_body_bytes: 1048576\n{server}"),
    )
}

/// Connects from `source` (any 127.x address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Everything the server sends until it closes, or until `within` passes
/// (then the test fails: a refusal must end the connection).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "connection still open after {within:?}; got so far: {}",
                String::from_utf8_lossy(&out)
            )
        })
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` raw and returns the whole answer (the server closes).
async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream, within).await
}

/// The status line's code and the OpenAI error object of a raw answer.
fn openai_error(answer: &str) -> (u16, Value) {
    let status: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not an OpenAI error body ({e}): {answer:?}"));
    let error = value["error"].clone();
    assert!(
        error["message"].is_string() && error["type"].is_string(),
        "{answer}"
    );
    (status, error)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn silent_and_slow_clients_get_408_then_the_connection_closes() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_with(
        &mock.base_url(),
        "  header_timeout_ms: 400\n  body_timeout_ms: 400",
    ))
    .await;
    let within = Duration::from_secs(3);
    // Nothing at all; a partial h2 preface; a partial header.
    for sent in [
        &b""[..],
        b"PR",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
    ] {
        let started = Instant::now();
        let answer = exchange(sluice.addr, sent, within).await;
        let (status, error) = openai_error(&answer);
        assert_eq!(status, 408, "{sent:?}: {answer}");
        assert_eq!(error["code"], "request_timeout");
        assert!(started.elapsed() < Duration::from_millis(2_500));
    }
    // Slow-loris: a header byte every 100 ms never completes in time.
    let mut stream = TcpStream::connect(sluice.addr).await.unwrap();
    let header =
        b"GET /health/live HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    for byte in header {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = read_to_close(&mut stream, within).await;
    assert_eq!(openai_error(&answer).0, 408, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(6));
    // A body that stops arriving.
    let mut stream = TcpStream::connect(sluice.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, within).await;
    let (status, error) = openai_error(&answer);
    assert_eq!(
        (status, error["code"].as_str()),
        (408, Some("request_timeout"))
    );
    assert!(error["message"].as_str().unwrap().contains("body"));
    assert_eq!(mock.stats().requests(), 0);

    let metrics = settled_metrics(&sluice).await;
    assert!(metric(&metrics, r#"sluice_client_timeouts_total{phase="preface"}"#) >= 1.0);
    assert!(metric(&metrics, r#"sluice_client_timeouts_total{phase="header"}"#) >= 2.0);
}

#[tokio::test]
async fn a_request_shorter_than_the_h2_preface_is_served_at_once() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    // 18 bytes: pingora alone waited for 24 (a possible h2c preface) forever.
    for request in [&b"GET / HTTP/1.0\r\n\r\n"[..], b"PUT / HTTP/1.0\r\n\r\n"] {
        let answer = exchange(sluice.addr, request, Duration::from_secs(2)).await;
        assert_eq!(openai_error(&answer).0, 404, "{answer}");
    }
    // And prior-knowledge HTTP/2 still works beside it.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let live = client.get(sluice.url("/health/live")).send().await.unwrap();
    assert_eq!(live.version(), reqwest::Version::HTTP_2);
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn oversized_and_ambiguous_headers_are_answered_431_and_400() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let within = Duration::from_secs(3);
    let with_headers = |count: usize, value_len: usize| {
        let mut request = b"GET /health/live HTTP/1.1\r\nhost: x\r\n".to_vec();
        for i in 0..count {
            request.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(value_len)).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request
    };
    // Over sluice's caps (100 fields, 64 KiB), and over pingora's own
    // (256 fields, 1 MiB), which used to close the connection unanswered.
    for (count, value_len) in [(150, 4), (300, 4), (20, 8 * 1024), (2, 2 << 20)] {
        let answer = exchange(sluice.addr, &with_headers(count, value_len), within).await;
        let (status, error) = openai_error(&answer);
        assert_eq!(status, 431, "{count} x {value_len}: {answer:.300}");
        assert_eq!(error["code"], "header_too_large");
    }
    let chat =
        json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let framed = |extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}\r\n{chat}",
        )
    };
    let cases = [
        format!("content-length: {}\r\ncontent-length: 5\r\n", chat.len()),
        "transfer-encoding: chunked, identity\r\n".to_string(),
        "transfer-encoding: xchunked\r\n".to_string(),
        "transfer-encoding : chunked\r\n".to_string(),
    ];
    for extra in &cases {
        let answer = exchange(sluice.addr, framed(extra).as_bytes(), within).await;
        let (status, error) = openai_error(&answer);
        assert_eq!(status, 400, "{extra:?}: {answer}");
        assert_eq!(error["code"], "bad_framing", "{extra:?}");
    }
    assert_eq!(
        mock.stats().requests(),
        0,
        "nothing ambiguous reaches the upstream"
    );
    let metrics = settled_metrics(&sluice).await;
    assert!(
        metric(
            &metrics,
            r#"sluice_unreadable_requests_total{reason="header_too_large"}"#
        ) >= 4.0
    );
    assert!(
        metric(
            &metrics,
            r#"sluice_unreadable_requests_total{reason="bad_framing"}"#
        ) >= 4.0
    );
}

#[tokio::test]
async fn an_http10_stream_is_close_delimited_not_chunked() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_for(&mock.base_url(), "")).await;
    let body =
        json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(sluice.addr, request.as_bytes(), Duration::from_secs(5)).await;
    let (head, payload) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // The body is the SSE stream itself, no chunk sizes in it.
    assert!(payload.starts_with("data: {"), "{payload:.200}");
    assert!(payload.ends_with("data: [DONE]\n\n"), "{payload}");
}

#[tokio::test]
async fn thousands_of_silent_connections_do_not_starve_normal_clients() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config_with(
        &mock.base_url(),
        "  header_timeout_ms: 8000\n  max_connections: 6000\n  max_connections_per_client: 3000",
    ))
    .await;
    // 3,000 connections from 127.0.0.2 that never send a byte.
    let mut silent = Vec::with_capacity(3_000);
    for _ in 0..3_000 {
        silent.push(connect_from("127.0.0.2", sluice.addr).await);
    }
    // Once sluice has accepted them all, one more from that address is over
    // its cap: answered 503 at once.
    for _ in 0..200 {
        if metric(&settled_metrics(&sluice).await, "sluice_connections_open") >= 3_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut over = connect_from("127.0.0.2", sluice.addr).await;
    let answer = read_to_close(&mut over, Duration::from_secs(5)).await;
    let (status, error) = openai_error(&answer);
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("too_many_connections"))
    );
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // Normal clients from another address are served meanwhile, promptly.
    let client = reqwest::Client::new();
    let chat = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .post(sluice.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let metrics = settled_metrics(&sluice).await;
    assert!(metric(&metrics, "sluice_connections_open") >= 3_000.0);
    assert_eq!(
        metric(
            &metrics,
            r#"sluice_connections_refused_total{reason="max_connections_per_client"}"#
        ),
        1.0
    );
    // Past the deadline every silent connection has been answered and closed.
    let mut answered = 0;
    for stream in &mut silent {
        let answer = read_to_close(stream, Duration::from_secs(20)).await;
        answered += usize::from(answer.starts_with("HTTP/1.1 408"));
    }
    assert_eq!(answered, 3_000);
    let metrics = settled_metrics(&sluice).await;
    assert!(metric(&metrics, "sluice_connections_open") < 10.0);
}
