//! Keys and tenants managed through the admin API and the CLI, persisted in
//! the ledger database: created, used, listed without secrets, rotated,
//! disabled, deleted; tenants limited at run time; other tenants untouchable.

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
  - {{name: fast, upstream: mock}}
  - {{name: big, upstream: mock}}
auth:
  admin_key: sk-admin-test
"#
    )
}

struct Admin<'a>(&'a Sluice);

impl Admin<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let url = self.0.url(path);
        let mut request = match method {
            "POST" => client.post(url),
            "PUT" => client.put(url),
            "DELETE" => client.delete(url),
            _ => client.get(url),
        }
        .bearer_auth("sk-admin-test");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn chat(sluice: &Sluice, key: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_key_lives_through_create_use_rotate_disable_and_delete() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let admin = Admin(&sluice);

    let (status, created) = admin
        .call(
            "POST",
            "/admin/keys",
            Some(json!({"tenant": "acme", "id": "acme-ci", "models": ["fast"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-sluice-"));
    assert_eq!(chat(&sluice, &key, "fast").await, 200);
    assert_eq!(
        chat(&sluice, &key, "big").await,
        403,
        "its model allow-list holds"
    );

    let (status, dup) = admin
        .call(
            "POST",
            "/admin/keys",
            Some(json!({"tenant": "acme", "id": "acme-ci"})),
        )
        .await;
    assert_eq!(status, 400, "{dup}");

    let (_, listed) = admin.call("GET", "/admin/keys?tenant=acme", None).await;
    let text = listed.to_string();
    assert_eq!(listed["data"][0]["id"], "acme-ci");
    assert!(
        !text.contains(&key) && !text.contains("sha256"),
        "no secret in listings: {text}"
    );

    let (status, rotated) = admin.call("POST", "/admin/keys/acme-ci/rotate", None).await;
    assert_eq!(status, 200);
    let new_key = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(
        chat(&sluice, &key, "fast").await,
        401,
        "the old key stops at once"
    );
    assert_eq!(chat(&sluice, &new_key, "fast").await, 200);

    admin
        .call("POST", "/admin/keys/acme-ci/disable", None)
        .await;
    let response = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(&new_key)
        .json(&json!({"model": "fast", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: OpenAiErrorBody = response.json().await.unwrap();
    assert!(body.error.message.contains("disabled"));
    admin.call("POST", "/admin/keys/acme-ci/enable", None).await;
    assert_eq!(chat(&sluice, &new_key, "fast").await, 200);

    let (status, _) = admin.call("DELETE", "/admin/keys/acme-ci", None).await;
    assert_eq!(status, 200);
    assert_eq!(chat(&sluice, &new_key, "fast").await, 401);
    assert_eq!(
        admin.call("DELETE", "/admin/keys/acme-ci", None).await.0,
        404
    );
}

#[tokio::test]
async fn tenant_limits_set_at_run_time_apply_to_its_keys_and_persist() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut sluice = Sluice::start(&config(&mock.base_url())).await;
    let admin = Admin(&sluice);
    let (_, created) = admin
        .call(
            "POST",
            "/admin/keys",
            Some(json!({"tenant": "globex", "id": "g1"})),
        )
        .await;
    let key = created["key"].as_str().unwrap().to_string();
    let (status, _) = admin
        .call(
            "PUT",
            "/admin/tenants/globex",
            Some(json!({"limits": {"requests_per_minute": 1}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(chat(&sluice, &key, "fast").await, 200);
    assert_eq!(chat(&sluice, &key, "fast").await, 429);
    let (status, bad) = admin
        .call(
            "PUT",
            "/admin/tenants/globex",
            Some(json!({"limits": {"requests_per_minute": 0}})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tenants.globex.limits.requests_per_minute"));

    // A restart keeps the key and the tenant's limit (a fresh window).
    assert!(sluice.terminate().success());
    let config_path = sluice.dir().join("sluice.yaml");
    let restarted = Sluice::start_in(sluice.dir(), &config_path).await;
    assert_eq!(chat(&restarted, &key, "fast").await, 200);
    assert_eq!(chat(&restarted, &key, "fast").await, 429);
    let (_, tenants) = Admin(&restarted).call("GET", "/admin/tenants", None).await;
    assert_eq!(tenants["data"][0]["name"], "globex");
}

#[tokio::test]
async fn only_the_admin_key_reaches_the_admin_api_and_tenants_stay_apart() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let admin = Admin(&sluice);
    let (_, a) = admin
        .call(
            "POST",
            "/admin/keys",
            Some(json!({"tenant": "acme", "id": "a1"})),
        )
        .await;
    let acme_key = a["key"].as_str().unwrap().to_string();
    let no_admin = reqwest::Client::new()
        .get(sluice.url("/admin/keys"))
        .bearer_auth(&acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(no_admin.status(), 401, "a tenant key is not an admin key");
    assert_eq!(
        reqwest::get(sluice.url("/admin/tenants"))
            .await
            .unwrap()
            .status(),
        401
    );
    // A tenant key reads its own usage only; another tenant does not exist for it.
    let other = reqwest::Client::new()
        .get(sluice.url("/admin/usage?tenant=globex"))
        .bearer_auth(&acme_key)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn the_cli_creates_keys_a_running_gateway_accepts() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url())).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(sluice.dir())
        .args([
            "keys", "create", "--tenant", "acme", "--models", "fast", "--config",
        ])
        .arg(sluice.dir().join("sluice.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["tenant"], "acme");
    let key = printed["key"].as_str().unwrap();
    assert_eq!(chat(&sluice, key, "fast").await, 200);
    assert_eq!(chat(&sluice, key, "big").await, 403);
}
