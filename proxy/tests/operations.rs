//! Operating sluice: the admin listener apart from the public one, a
//! graceful stop under load, and a zero-downtime upgrade, each against the
//! real binary over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use serde_json::{json, Value};
use sluice::app::routes::{Served, ROUTES};
use sluice_ledger::Store;
use sluice_load_tests::{MockOptions, MockUpstream};
use sqlx::Row;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ledger's node (its hash chain) and spool are named by `SLUICE_SLOT`
/// (default `blue`): during an upgrade the old and the new process both
/// write, and one chain or spool must have one writer at a time.
fn config(base_url: &str, grace_period_s: u64) -> String {
    format!(
        r#"
server:
  grace_period_s: {grace_period_s}
ledger:
  node_id: ${{SLUICE_SLOT:-blue}}
  spool_dir: sluice-data/spool-${{SLUICE_SLOT:-blue}}
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: fast, upstream: mock}}
auth:
  admin_key: sk-admin-test
tenants:
  acme:
    keys: [{{id: acme-app, key: sk-acme}}]
"#
    )
}

fn chat(stream: bool) -> Value {
    json!({"model": "fast", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// An answer, with what "exactly like an unknown path" compares: status,
/// header names (values such as the request id differ) and body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    header_names: Vec<String>,
    body: String,
}

/// Asks `method url`, as the admin when `admin`.
async fn ask(client: &reqwest::Client, method: &str, url: &str, admin: bool) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method.clone(), url);
    if admin {
        request = request.bearer_auth("sk-admin-test");
    }
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let mut header_names: Vec<String> = response
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .collect();
    header_names.sort();
    Answer {
        status: response.status().as_u16(),
        header_names,
        body: response.text().await.unwrap(),
    }
}

fn is_unknown_url(answer: &Answer) -> bool {
    answer.status == 404
        && serde_json::from_str::<Value>(&answer.body)
            .is_ok_and(|v| v["error"]["code"] == "unknown_url")
}

#[tokio::test]
async fn each_listener_serves_its_own_routes_and_hides_the_others() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = Sluice::start(&config(&mock.base_url(), 1)).await;
    let client = reqwest::Client::new();
    let mut checked = 0;
    for route in ROUTES {
        let (public, admin) = (
            sluice.public_url(route.example),
            sluice.admin_url(route.example),
        );
        let (serving, other): (Vec<String>, Option<(String, SocketAddr)>) =
            match route.kind.served() {
                Served::Public => (vec![public], Some((admin, sluice.admin_addr))),
                Served::Admin => (vec![admin], Some((public, sluice.addr))),
                Served::Both => (vec![public, admin], None),
            };
        // Present: asked without a key, an admin route refuses the caller
        // (so no lookup of the example's made-up id answers 404).
        for url in &serving {
            let answer = ask(&client, route.method, url, false).await;
            assert!(
                !is_unknown_url(&answer),
                "{} {url}: {answer:?}",
                route.method
            );
        }
        if let Some((url, addr)) = other {
            // Absent, even to the admin: exactly what a path that exists
            // nowhere gets, its path aside.
            let answer = ask(&client, route.method, &url, true).await;
            let nowhere = "/nothing-here";
            let nowhere_url = format!("http://{addr}{nowhere}");
            let mut unknown = ask(&client, route.method, &nowhere_url, true).await;
            unknown.body = unknown.body.replace(nowhere, route.example);
            assert!(
                is_unknown_url(&answer),
                "{} {url}: {answer:?}",
                route.method
            );
            assert_eq!(answer, unknown, "{} {url}", route.method);
        }
        checked += 1;
    }
    assert_eq!(checked, ROUTES.len());

    // What the admin listener serves, served in full.
    let docs = reqwest::get(sluice.admin_url("/docs/llms.txt"))
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let docs = docs.text().await.unwrap();
    assert!(
        docs.contains("## Admin listener (`server.admin_listen`)"),
        "{docs}"
    );
    let metrics = reqwest::get(sluice.admin_url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let usage = client
        .get(sluice.admin_url("/admin/usage"))
        .bearer_auth("sk-admin-test")
        .send()
        .await
        .unwrap();
    assert_eq!(usage.status(), 200);
    // And the public one answers chat as before.
    let answer = client
        .post(sluice.public_url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// One raw HTTP/1.1 exchange on an open connection: the status.
async fn probe(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Status line, headers, and a short JSON body: read until the body ends.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("probe answered")
            .unwrap();
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if n == 0 || text.ends_with('}') {
            return text.split(' ').nth(1).unwrap().parse().unwrap();
        }
    }
}

/// Whether a fresh connection to `addr` is refused within `within`.
async fn refused_within(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Err(e) = TcpStream::connect(addr).await {
            return e.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `request_id`s recorded in the ledger that start with `prefix`, and their end states.
async fn ledger_rows(sluice: &Sluice, prefix: &str) -> Vec<String> {
    let url = format!(
        "sqlite:{}",
        sluice.dir().join("sluice-data/ledger.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    sqlx::query("SELECT end_state FROM usage_records WHERE request_id LIKE ?")
        .bind(format!("{prefix}%"))
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect()
}

// Multi-threaded: the 50 clients keep reading while the test waits on sluice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_fifty_live_streams_refuses_new_connections_and_records_all() {
    const STREAMS: usize = 50;
    const GRACE: Duration = Duration::from_secs(5);
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut sluice = Sluice::start(&config(&mock.base_url(), GRACE.as_secs())).await;
    // A prober's keep-alive connection, open before the signal.
    let mut prober = TcpStream::connect(sluice.addr).await.unwrap();
    assert_eq!(probe(&mut prober, "/health/ready").await, 200);

    let started = Arc::new(AtomicUsize::new(0));
    let url = sluice.url("/v1/chat/completions");
    let client = reqwest::Client::new();
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (client, url, started) = (client.clone(), url.clone(), started.clone());
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth("sk-acme")
                    .header("x-request-id", format!("drain-{i}"))
                    .header("x-mock-chunks", "20")
                    .header("x-mock-chunk-delay-ms", "100")
                    .json(&chat(true))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                started.fetch_add(1, Ordering::SeqCst);
                let body = response.text().await;
                (body, Instant::now())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < STREAMS {
        assert!(Instant::now() < deadline, "streams did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let signalled = Instant::now();
    sluice.signal("TERM");
    // Readiness turns at once (the prober's open connection sees it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(probe(&mut prober, "/health/ready").await, 503);
    // New connections are refused on both listeners.
    assert!(refused_within(sluice.addr, Duration::from_secs(2)).await);
    assert!(refused_within(sluice.admin_addr, Duration::from_secs(2)).await);

    for stream in streams {
        let (body, ended) = stream.await.unwrap();
        let body = body.unwrap_or_else(|e| panic!("stream cut ({e}); log:\n{}", sluice.log()));
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        assert!(
            ended - signalled < GRACE,
            "a stream ended after the grace period"
        );
    }
    let status = sluice
        .exited(GRACE + Duration::from_secs(15))
        .await
        .expect("sluice exits after the grace period");
    assert!(status.success(), "{status:?}; log:\n{}", sluice.log());
    let rows = ledger_rows(&sluice, "drain-").await;
    assert_eq!(rows.len(), STREAMS);
    assert!(rows.iter().all(|state| state == "completed"), "{rows:?}");
}

/// Sends chat requests in a loop until `stop`: over one keep-alive
/// connection pool, or a fresh connection each time.
fn load(
    url: String,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    tokio::spawn(async move {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if !keep_alive {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        let mut served = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let outcome = client
                .post(&url)
                .bearer_auth("sk-acme")
                .json(&chat(false))
                .send()
                .await;
            match outcome {
                Ok(r) if r.status() == 200 => match r.text().await {
                    Ok(_) => served.push(Instant::now()),
                    Err(e) => failures.lock().unwrap().push(format!("body: {e:?}")),
                },
                Ok(r) => failures
                    .lock()
                    .unwrap()
                    .push(format!("status {}", r.status())),
                Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
            }
        }
        served
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_takes_the_sockets_over_without_failing_a_request() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut old = Sluice::start(&config(&mock.base_url(), 1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let url = old.url("/v1/chat/completions");
    let live = old.admin_url("/health/live");
    let loads = vec![
        load(url.clone(), true, stop.clone(), failures.clone()),
        load(url.clone(), true, stop.clone(), failures.clone()),
        load(url, false, stop.clone(), failures.clone()),
    ];
    // The admin listener is handed over too.
    let admin_load = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                match client.get(&live).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("admin status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("admin {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut new = old.spawn_upgrade(&[("SLUICE_SLOT", "green")]).await;
    old.signal("QUIT");
    new.wait_log("sluice is ready", Duration::from_secs(20))
        .await;
    let status = old
        .exited(Duration::from_secs(30))
        .await
        .expect("the old process exits after handing over");
    assert!(status.success(), "{status:?}; log:\n{}", old.log());
    let old_gone = Instant::now();
    // The new process alone serves from here on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut served = Vec::new();
    for task in loads {
        served.extend(task.await.unwrap());
    }
    admin_load.await.unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:#?}\nold log:\n{}\nnew log:\n{}",
        failures.len(),
        served.len() + failures.len(),
        old.log(),
        new.log()
    );
    let after = served.iter().filter(|t| **t > old_gone).count();
    assert!(after > 0, "nothing served after the old process left");
    // The new process counted what it served.
    let metrics = common::settled_metrics(&new).await;
    let chat_count: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sluice_requests_total{") && l.contains(r#"route="chat_completions""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        chat_count >= after as f64,
        "{chat_count} < {after}:\n{metrics}"
    );
    // Every served request is in the one ledger both processes wrote.
    assert!(new.terminate().success());
    let recorded = ledger_rows(&old, "").await.len();
    assert_eq!(
        recorded,
        served.len(),
        "old log:\n{}\nnew log:\n{}",
        old.log(),
        new.log()
    );
    eprintln!(
        "upgrade: {} requests served, {} after the old process exited",
        served.len(),
        after
    );
}
