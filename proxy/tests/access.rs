//! Virtual keys and quotas, end to end: every refusal read as the OpenAI SDK reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{OpenAiErrorBody, Sluice};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};

fn config(base_url: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: fast, upstream: mock, upstream_model: mock-model}}
  - {{name: big, upstream: mock}}
tenants:
  acme:
    limits: {{concurrent_requests: 1}}
    keys:
      - {{id: acme-app, key: sk-acme-app, models: [fast]}}
      - {{id: acme-off, key: sk-acme-off, enabled: false}}
      - {{id: acme-old, key: sk-acme-old, expires_at: "2020-01-01T00:00:00Z"}}
  globex:
    keys:
      - {{id: globex-rpm, key: sk-globex-rpm, limits: {{requests_per_minute: 2}}}}
      - {{id: globex-tpm, key: sk-globex-tpm, limits: {{tokens_per_minute: 1000}}}}
      - id: globex-hashed
        key_sha256: "{}"
"#,
        // printf %s sk-globex-hashed | sha256sum
        "6dc94341f91609d6a8aa8996ff0cebb5b60e8efb30ac050f6ba17ed6429a3731"
    )
}

async fn post(sluice: &Sluice, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn error_of(response: reqwest::Response) -> (u16, OpenAiErrorBody) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    for (key, message) in [
        (None, "You didn't provide an API key"),
        (Some("sk-wrong"), "Incorrect API key provided"),
        (Some("sk-acme-off"), "has been disabled"),
        (Some("sk-acme-old"), "has expired"),
    ] {
        let (status, body) = error_of(post(&sluice, key, chat("fast")).await).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(body.error.code.as_deref(), Some("invalid_api_key"));
        assert!(
            body.error.message.contains(message),
            "{}",
            body.error.message
        );
    }
    assert_eq!(mock.stats().requests(), 0);

    let ok = post(&sluice, Some("sk-acme-app"), chat("fast")).await;
    assert_eq!(ok.status(), 200);
    let upstream = mock.stats().last_request().unwrap();
    assert_eq!(
        upstream.header("authorization"),
        None,
        "the client's key never travels upstream"
    );

    // A key declared by its SHA-256 only.
    assert_eq!(
        post(&sluice, Some("sk-globex-hashed"), chat("fast"))
            .await
            .status(),
        200
    );

    // Azure-style `api-key` header.
    let azure = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("api-key", "sk-acme-app")
        .json(&chat("fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(azure.status(), 200);
}

#[tokio::test]
async fn model_allow_list_is_403_and_filters_the_model_list() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let (status, body) = error_of(post(&sluice, Some("sk-acme-app"), chat("big")).await).await;
    assert_eq!(status, 403);
    assert_eq!(body.error.code.as_deref(), Some("model_not_allowed"));

    let client = reqwest::Client::new();
    let listed = |key: &'static str| {
        let client = client.clone();
        let url = sluice.url("/v1/models");
        async move {
            let v: Value = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("sk-acme-app").await, ["fast"]);
    assert_eq!(listed("sk-globex-rpm").await, ["fast", "big"]);
    let anonymous = client.get(sluice.url("/v1/models")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn requests_per_minute_refuse_with_openai_headers() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let first = post(&sluice, Some("sk-globex-rpm"), chat("fast")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(
        post(&sluice, Some("sk-globex-rpm"), chat("fast"))
            .await
            .status(),
        200
    );
    let refused = post(&sluice, Some("sk-globex-rpm"), chat("fast")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    let (_, body) = error_of(refused).await;
    assert_eq!(body.error.code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(body.error.kind, "requests");
    assert_eq!(mock.stats().requests(), 2);
    // Another key is not affected.
    assert_eq!(
        post(&sluice, Some("sk-globex-tpm"), chat("fast"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn tokens_per_minute_reserve_up_front_and_settle_on_real_usage() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let mut body = chat("fast");
    body["max_tokens"] = json!(600);
    // In flight, the first request holds its worst case (prompt + 600)...
    let slow = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-globex-tpm")
        .header("x-mock-delay-ms", "800")
        .json(&body)
        .send();
    let slow = tokio::spawn(slow);
    while mock.stats().requests() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, err) = error_of(post(&sluice, Some("sk-globex-tpm"), body.clone()).await).await;
    assert_eq!((status, err.error.kind.as_str()), (429, "tokens"));
    let done = slow.await.unwrap().unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["x-ratelimit-limit-tokens"], "1000");
    // ...then settles to the ~25 tokens the mock reports, so 600 fit again.
    assert_eq!(
        post(&sluice, Some("sk-globex-tpm"), body.clone())
            .await
            .status(),
        200
    );

    // Larger than a whole minute's quota: no `retry-after` (waiting cannot
    // help) and `x-should-retry: false`, which OpenAI's SDKs obey.
    body["max_tokens"] = json!(5000);
    let response = post(&sluice, Some("sk-globex-tpm"), body).await;
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(response.headers()["x-should-retry"], "false");
    let (status, err) = error_of(response).await;
    assert_eq!(status, 429, "larger than a whole minute's quota");
    assert!(
        err.error.message.contains("Request too large") && err.error.message.contains("1000"),
        "{}",
        err.error.message
    );
}

#[tokio::test]
async fn tenant_concurrency_limit_holds_across_its_requests() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let slow = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-acme-app")
        .header("x-mock-delay-ms", "800")
        .json(&chat("fast"))
        .send();
    let slow = tokio::spawn(slow);
    // Wait until the slow request is inside sluice (the mock has it).
    for _ in 0..200 {
        if mock.stats().requests() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, body) = error_of(post(&sluice, Some("sk-acme-app"), chat("fast")).await).await;
    assert_eq!(status, 429);
    assert!(
        body.error.message.contains("tenant"),
        "{}",
        body.error.message
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // The slot is free again once the first request finished.
    assert_eq!(
        post(&sluice, Some("sk-acme-app"), chat("fast"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn jwts_from_an_identity_provider_are_a_way_in_with_tenant_limits() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let dir = common::TempDir::new();
    // An HMAC key as a JWKS entry ("k" is base64url of the secret).
    let jwks = dir.write(
        "jwks.json",
        r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2x1aWNlLXRlc3Qtc2VjcmV0LTMyLWJ5dGVzLWxvbmch"}]}"#,
    );
    let config = format!(
        r#"
upstreams:
  mock: {{base_url: "{}"}}
models:
  - {{name: fast, upstream: mock}}
auth:
  jwt: {{issuer: "https://idp.example", audience: sluice, jwks_file: "{}", tenant_claim: org}}
tenants:
  acme:
    limits: {{requests_per_minute: 1}}
"#,
        mock.base_url(),
        jwks.display()
    );
    let sluice = Sluice::start(&config).await;
    let now = jiff::Timestamp::now().as_second();
    let sign = |claims: serde_json::Value| {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(b"sluice-test-secret-32-bytes-long!"),
        )
        .unwrap()
    };
    let alice = sign(
        json!({"iss": "https://idp.example", "aud": "sluice", "sub": "alice", "org": "acme", "exp": now + 600}),
    );
    assert_eq!(
        post(&sluice, Some(&alice), chat("fast")).await.status(),
        200
    );
    let (status, body) = error_of(post(&sluice, Some(&alice), chat("fast")).await).await;
    assert_eq!(status, 429, "the tenant's limit applies to its JWT callers");
    assert_eq!(body.error.code.as_deref(), Some("rate_limit_exceeded"));
    let expired = sign(
        json!({"iss": "https://idp.example", "aud": "sluice", "org": "acme", "exp": now - 600}),
    );
    let (status, body) = error_of(post(&sluice, Some(&expired), chat("fast")).await).await;
    assert_eq!(
        (status, body.error.code.as_deref()),
        (401, Some("invalid_api_key"))
    );
    let foreign = sign(
        json!({"iss": "https://evil.example", "aud": "sluice", "org": "acme", "exp": now + 600}),
    );
    assert_eq!(
        post(&sluice, Some(&foreign), chat("fast")).await.status(),
        401
    );
}
