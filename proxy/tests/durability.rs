//! `ledger.durability` against a crash: sluice is SIGKILLed under load and
//! the ledger (after a restart replays any spool) is compared with what
//! clients received in full. Strict: every answer a client holds has its
//! record. Queued (the default): the records still in memory are lost, up
//! to `flush_interval_ms` of them — the loss window the README states.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use serde_json::json;
use sluice_ledger::Store;
use sluice_load_tests::{MockOptions, MockUpstream};
use sqlx::Row;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(base_url: &str, durability: &str) -> String {
    format!(
        r#"
upstreams:
  mock: {{base_url: "{base_url}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
ledger:
  # Long enough that nothing queued is written before the crash.
  flush_interval_ms: 60000
  durability: {durability}
"#
    )
}

/// One request; its id when the client received the whole answer.
async fn one(
    client: &reqwest::Client,
    sluice_url: &str,
    id: String,
    stream: bool,
) -> Option<String> {
    let response = client
        .post(sluice_url)
        .header("x-request-id", &id)
        .json(&json!({"model": "mini", "stream": stream,
                      "messages": [{"role": "user", "content": "count me"}]}))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let text = response.text().await.ok()?;
    let whole = if stream {
        text.ends_with("data: [DONE]\n\n")
    } else {
        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["usage"].is_object())
    };
    whole.then_some(id)
}

struct Crash {
    /// Answers clients received whole.
    received: HashSet<String>,
    /// Ledger rows by request id (after the restart).
    recorded: Vec<String>,
}

/// Runs 8 clients for a while, SIGKILLs sluice mid-load, restarts it on
/// the same ledger (replaying any spool) and reads the ledger back.
async fn crash_under_load(durability: &str) -> Crash {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut sluice = Sluice::start(&config(&mock.base_url(), durability)).await;
    let url = sluice.url("/v1/chat/completions");
    let received = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, received, next) = (url.clone(), received.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let id = format!("req-{n:06}");
                match one(&client, &url, id, n % 2 == 0).await {
                    Some(id) => {
                        received.lock().unwrap().insert(id);
                    }
                    None => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sluice.kill();
    for client in clients {
        client.await.unwrap();
    }
    let dir = sluice.dir().to_path_buf();
    let restarted = Sluice::start_in(&dir, &dir.join("sluice.yaml")).await;
    let url = format!("sqlite:{}", dir.join("sluice-data/ledger.db").display());
    let store = Store::open(&url).await.unwrap();
    let recorded = sqlx::query("SELECT request_id FROM usage_records")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    drop(restarted);
    let received = received.lock().unwrap().clone();
    Crash { received, recorded }
}

#[tokio::test]
async fn strict_durability_loses_no_record_of_an_answer_a_client_received() {
    let crash = crash_under_load("strict").await;
    let recorded: HashSet<&String> = crash.recorded.iter().collect();
    assert_eq!(
        recorded.len(),
        crash.recorded.len(),
        "a record written twice"
    );
    let missing: Vec<&String> = crash
        .received
        .iter()
        .filter(|id| !recorded.contains(id))
        .collect();
    println!(
        "strict: {} answers received whole, {} records, {} missing",
        crash.received.len(),
        crash.recorded.len(),
        missing.len()
    );
    assert!(
        crash.received.len() > 50,
        "too little load to mean anything"
    );
    assert!(missing.is_empty(), "answers without a record: {missing:?}");
}

#[tokio::test]
async fn queued_durability_loses_what_was_still_in_memory() {
    let crash = crash_under_load("queued").await;
    let recorded: HashSet<&String> = crash.recorded.iter().collect();
    let missing = crash
        .received
        .iter()
        .filter(|id| !recorded.contains(id))
        .count();
    println!(
        "queued: {} answers received whole, {} records, {} lost with the process",
        crash.received.len(),
        crash.recorded.len(),
        missing
    );
    // The window is real: with a 60 s flush interval nearly all of them.
    assert!(missing > 0);
}

/// A tmpfs of `size` at a fresh directory, unmounted on drop; `None` where
/// this machine does not let the test mount one (it needs root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("sluice-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk(dir))
    }

    /// Writes zeros until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = [0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn strict_refuses_cleanly_while_neither_database_nor_spool_takes_records() {
    let Some(disk) = SmallDisk::mount("256k") else {
        eprintln!("SKIPPED: mounting a small tmpfs for the spool needs root");
        return;
    };
    let Some(postgres) = sluice_ledger::testing::PostgresServer::start_or_skip("spool_disk_full")
    else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let yaml = format!(
        r#"
upstreams:
  mock: {{base_url: "{}"}}
models:
  - {{name: mini, upstream: mock, upstream_model: gpt-4o-mini}}
ledger:
  database_url: {}
  spool_dir: {}
  durability: strict
"#,
        mock.base_url(),
        postgres.url(),
        disk.0.join("spool").display()
    );
    let sluice = Sluice::start(&yaml).await;
    let client = reqwest::Client::new();
    let url = sluice.url("/v1/chat/completions");
    let send = |id: String| {
        client
            .post(&url)
            .header("x-request-id", id)
            .json(&json!({"model": "mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(send("before".into()).await.unwrap().status(), 200);

    // The database goes away and the spool's disk is full.
    disk.fill();
    postgres.stop().unwrap();
    let mut refused = None;
    for i in 0..50 {
        let Ok(response) = send(format!("during-{i}")).await else {
            continue; // the answer whose record found nowhere to go: cut short
        };
        if response.status() == 503 {
            refused = Some(response.text().await.unwrap());
            break;
        }
        let _ = response.text().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("no clean refusal while nothing could take records");
    assert!(refused.contains("service_unavailable"), "{refused}");

    // Both come back: requests are served again, and every record that was
    // held meanwhile lands; none is lost.
    disk.free();
    postgres.start_again().unwrap();
    let mut served = false;
    for i in 0..200 {
        if let Ok(response) = send(format!("after-{i}")).await {
            if response.status() == 200 {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "never served again");
    let metrics = common::settled_metrics(&sluice).await;
    assert!(
        metrics.contains(r#"sluice_ledger_records_total{event="lost"} 0"#),
        "records were lost"
    );
}
