//! Every forwarded request lands in the ledger, priced or flagged, counted
//! when the provider gives no usage; SQLite by default, PostgreSQL with an
//! outage in the middle of a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use serde_json::json;
use sluice_ledger::testing::PostgresServer;
use sluice_ledger::{count_tokens, Store};
use sluice_load_tests::{MockOptions, MockUpstream};
use sqlx::Row;
use std::time::Duration;

fn config(base_url: &str, ledger: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
  - {{name: house, upstream: mock, upstream_model: house-model}}
ledger:
  flush_interval_ms: 20
{ledger}
"#
    )
}

async fn chat(sluice: &Sluice, model: &str, stream: bool, headers: &[(&str, &str)]) -> String {
    let mut request = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": "Say hello to the ledger"}]}));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

struct Row_ {
    request_id: String,
    model: String,
    upstream_model: String,
    prompt: i64,
    completion: i64,
    source: String,
    cost: i64,
    cost_picos: i64,
    priced: bool,
    stream: bool,
    end_state: String,
}

async fn rows(url: &str, expected: usize) -> Vec<Row_> {
    let store = Store::open(url).await.unwrap();
    let mut last = 0;
    for _ in 0..200 {
        last = store.record_count(None).await.unwrap() as usize;
        if last >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(last, expected, "records in the ledger");
    let rows = sqlx::query(
        "SELECT request_id, model, upstream_model, prompt_tokens, completion_tokens, usage_source, \
         cost_micros, priced, stream, end_state, cost_picos FROM usage_records ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| Row_ {
            request_id: r.get(0),
            model: r.get(1),
            upstream_model: r.get(2),
            prompt: r.get(3),
            completion: r.get(4),
            source: r.get(5),
            cost: r.get(6),
            priced: r.get::<i64, _>(7) != 0,
            stream: r.get::<i64, _>(8) != 0,
            end_state: r.get(9),
            cost_picos: r.get(10),
        })
        .collect()
}

#[tokio::test]
async fn requests_are_recorded_priced_and_counted_in_sqlite() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "")).await;
    chat(&sluice, "mini", false, &[("x-request-id", "plain-1")]).await;
    chat(&sluice, "mini", true, &[("x-request-id", "stream-1")]).await;
    // A provider that reports no usage: sluice counts with the tokenizer.
    let text = chat(
        &sluice,
        "mini",
        true,
        &[("x-request-id", "counted-1"), ("x-mock-no-usage", "1")],
    )
    .await;
    assert!(text.contains("tok4"));
    // No price for this model: recorded as unpriced, never a silent $0.
    chat(&sluice, "house", false, &[("x-request-id", "unpriced-1")]).await;

    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let rows = rows(&url, 4).await;
    let by_id = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap();

    let plain = by_id("plain-1");
    assert_eq!(
        (plain.model.as_str(), plain.upstream_model.as_str()),
        ("mini", "gpt-4o-mini")
    );
    assert_eq!((plain.source.as_str(), plain.completion), ("reported", 5));
    assert!(plain.priced && plain.cost > 0, "gpt-4o-mini is priced");
    assert_eq!(
        i128::from(plain.cost),
        i128::from(sluice_ledger::round_picos_to_micros(
            plain.cost_picos.into()
        )),
        "cost_micros is the exact cost rounded once"
    );
    assert!(!plain.stream);
    assert_eq!(plain.end_state, "completed");

    let stream = by_id("stream-1");
    assert!(stream.stream);
    assert_eq!(
        (stream.source.as_str(), stream.completion),
        ("reported", 5),
        "usage asked for on the client's behalf"
    );

    let counted = by_id("counted-1");
    assert_eq!(counted.source, "counted");
    assert_eq!(
        counted.completion as u64,
        count_tokens("gpt-4o-mini", "tok0 tok1 tok2 tok3 tok4 ")
    );
    assert_eq!(
        counted.prompt as u64,
        count_tokens("gpt-4o-mini", "Say hello to the ledger\n")
    );
    assert!(
        counted.priced && counted.cost > 0,
        "counted streams are billed, not $0"
    );

    let unpriced = by_id("unpriced-1");
    assert!(!unpriced.priced);
    assert_eq!((unpriced.cost, unpriced.cost_picos), (0, 0));
    let metrics = common::settled_metrics(&sluice).await;
    // The exact counter is the sum of the records' exact costs.
    let picos: i64 = rows.iter().map(|r| r.cost_picos).sum();
    assert!(
        metrics.contains(&format!(
            r#"sluice_cost_usd_picos_total{{model="mini",provider="mock"}} {picos}"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_unpriced_requests_total{model="house",provider="mock"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_tokens_total{kind="completion",model="mini",provider="mock"}"#)
    );
    assert!(
        metrics.contains(r#"sluice_ledger_records_total{event="written"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn unpriced_models_can_be_refused_by_policy() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), "  allow_unpriced: false")).await;
    chat(&sluice, "mini", false, &[]).await;
    let refused = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&json!({"model": "house", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: common::OpenAiErrorBody = refused.json().await.unwrap();
    assert!(
        body.error.message.contains("has no price"),
        "{}",
        body.error.message
    );
    assert_eq!(mock.stats().requests(), 1);
}

#[tokio::test]
async fn sigterm_flushes_records_still_in_memory() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    // A long flush interval keeps records queued until shutdown.
    let yaml =
        config(&mock.base_url(), "").replace("flush_interval_ms: 20", "flush_interval_ms: 60000");
    let mut sluice = Sluice::start(&yaml).await;
    for _ in 0..5 {
        chat(&sluice, "mini", false, &[]).await;
    }
    assert!(sluice.terminate().success());
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    assert_eq!(rows(&url, 5).await.len(), 5);
}

#[tokio::test]
async fn postgres_outage_mid_run_loses_and_duplicates_nothing() {
    let Some(postgres) = PostgresServer::start_or_skip("gateway_ledger") else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let ledger = format!("  database_url: {}\n  node_id: gw-1", postgres.url());
    let sluice = Sluice::start(&config(&mock.base_url(), &ledger)).await;
    const N: usize = 120;
    let client = reqwest::Client::new();
    let send = |i: usize| {
        let client = client.clone();
        let url = sluice.url("/v1/chat/completions");
        async move {
            let r = client
                .post(url)
                .header("x-request-id", format!("pg-{i}"))
                .json(&json!({"model": "mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let first: Vec<_> = (0..N / 2).map(send).collect();
    futures_util::future::join_all(first).await;
    postgres.stop().unwrap();
    let second: Vec<_> = (N / 2..N).map(send).collect();
    futures_util::future::join_all(second).await;
    // The writer notices the outage on its next write (records then spool).
    let mut down_seen = false;
    for _ in 0..100 {
        let metrics = common::settled_metrics(&sluice).await;
        if metrics.contains(r#"sluice_ledger{gauge="database_up"} 0"#) {
            down_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down_seen, "the ledger reports the database as down");
    postgres.start_again().unwrap();

    let rows = rows(&postgres.url(), N).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N, "no record lost or duplicated");
    let store = Store::open(&postgres.url()).await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.first_break());
}

fn tenant_config(base_url: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
ledger:
  flush_interval_ms: 20
auth:
  admin_key: sk-admin-test
tenants:
  acme:
    keys: [{{id: acme-app, key: sk-acme}}]
  globex:
    keys: [{{id: globex-app, key: sk-globex}}]
"#
    )
}

async fn get(sluice: &Sluice, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(sluice.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn usage_reports_group_and_scope_by_tenant() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&tenant_config(&mock.base_url())).await;
    for (key, n) in [("sk-acme", 2), ("sk-globex", 3)] {
        for _ in 0..n {
            let r = reqwest::Client::new()
                .post(sluice.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    rows(&url, 5).await;

    let csv = get(
        &sluice,
        "/admin/usage?group_by=tenant,model&format=csv",
        Some("sk-admin-test"),
    )
    .await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "tenant,model,requests,prompt_tokens,completion_tokens,cached_prompt_tokens,cost_micros,cost_usd,unpriced_requests,cost_picos,cache_write_tokens");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].starts_with("acme,mini,2,") && lines[2].starts_with("globex,mini,3,"),
        "{text}"
    );

    let json: serde_json::Value = get(
        &sluice,
        "/admin/usage?group_by=tenant",
        Some("sk-admin-test"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(json["data"].as_array().unwrap().len(), 2);

    // A tenant's own key sees only its tenant, and another tenant does not exist for it.
    let own: serde_json::Value = get(&sluice, "/admin/usage?group_by=tenant", Some("sk-acme"))
        .await
        .json()
        .await
        .unwrap();
    let data = own["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["tenant"], "acme");
    assert_eq!(data[0]["requests"], 2);
    // Exact: the sum of the tenant's records in pico-dollars, as a string,
    // and micro-dollars that sum rounded once.
    let picos: i128 = data[0]["cost_picos"].as_str().unwrap().parse().unwrap();
    assert!(picos > 0);
    assert_eq!(
        data[0]["cost_micros"],
        sluice_ledger::round_picos_to_micros(picos)
    );
    assert_eq!(
        data[0]["cost_usd"],
        sluice_ledger::export::format_usd_picos(picos)
    );
    assert_eq!(
        get(&sluice, "/admin/usage?tenant=globex", Some("sk-acme"))
            .await
            .status(),
        404
    );
    assert_eq!(get(&sluice, "/admin/usage", None).await.status(), 401);
    assert_eq!(
        get(
            &sluice,
            "/admin/usage?group_by=color",
            Some("sk-admin-test")
        )
        .await
        .status(),
        400
    );
}

#[tokio::test]
async fn cli_exports_usage_and_verifies_the_chain() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut sluice = Sluice::start(&config(&mock.base_url(), "")).await;
    for _ in 0..3 {
        chat(&sluice, "mini", false, &[]).await;
    }
    assert!(sluice.terminate().success());
    let config_path = sluice.dir().join("sluice.yaml");
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(sluice.dir())
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "usage",
        "export",
        "--from",
        "2020-01-01",
        "--to",
        "2100-01-01",
        "--group-by",
        "model,provider",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("model,provider,requests,"), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("mini,mock,3,"),
        "{text}"
    );

    let out = cli(&["ledger", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ledger intact"));

    // Tamper with a stored record's exact cost: verify finds it and fails.
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    sqlx::query("UPDATE usage_records SET cost_picos = cost_picos + 1 WHERE seq = 2")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let out = cli(&["ledger", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chain broken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
