//! The ledger against a real PostgreSQL server started for the test (see
//! `sluice_ledger::testing`). Without server binaries these tests skip with
//! a note, except under CI, where they fail.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_ledger::testing::PostgresServer;
use sluice_ledger::{Ledger, Store};
use support::*;

/// The backend-independent scenarios, one database each on one server.
#[tokio::test]
async fn scenarios_on_postgres() {
    let Some(pg) = PostgresServer::start_or_skip("scenarios_on_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.create_database("write_restart").unwrap();
    scenario_write_restart_verify(&url, &dir.path().join("a")).await;
    let url = pg.create_database("tamper").unwrap();
    scenario_tamper_is_detected(&url, &dir.path().join("b")).await;
    let url = pg.create_database("reports").unwrap();
    scenario_reports(&url, &dir.path().join("c")).await;
    let url = pg.create_database("exact_totals").unwrap();
    scenario_exact_totals(&url, &dir.path().join("d")).await;
    let url = pg.create_database("upgrade").unwrap();
    scenario_upgrade_from_v1_rows(&url, &dir.path().join("e")).await;
    let url = pg.create_database("cache_writes").unwrap();
    scenario_cache_writes_after_v2_rows(&url, &dir.path().join("f")).await;
    let url = pg.create_database("conversations").unwrap();
    scenario_stored_conversations(&url).await;
}

/// The fault test from the issue: PostgreSQL stops in the middle of 500
/// concurrent `record()` calls from 5 tasks and comes back afterwards. After
/// replay exactly 500 records are stored, none twice, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_run_loses_nothing() {
    const TASKS: usize = 5;
    const PER_TASK: usize = 100;
    let Some(pg) = PostgresServer::start_or_skip("postgres_stopped_mid_run_loses_nothing") else {
        return;
    };
    let pg = Arc::new(pg);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = fast_settings(&pg.url(), &dir.path().join("spool"), "node-f");
    settings.queue_capacity = 64; // small: the overflow path runs too
    settings.write_timeout = Duration::from_millis(500);
    let ledger = Ledger::start(settings).await.unwrap();

    let recorded = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ledger = ledger.clone();
        let recorded = recorded.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let n = t * PER_TASK + i;
                ledger
                    .record(record(n, Some("acme"), "gpt-4o", DAY0 + n as i64))
                    .unwrap();
                recorded.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    // Stop the server once about 40% of the records are in.
    wait_until(Duration::from_secs(20), "200 records", || {
        let recorded = recorded.clone();
        async move { recorded.load(Ordering::Relaxed) >= 200 }
    })
    .await;
    let stopper = pg.clone();
    tokio::task::spawn_blocking(move || stopper.stop())
        .await
        .unwrap()
        .unwrap();
    let at_stop = recorded.load(Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        at_stop < TASKS * PER_TASK,
        "the server stopped only after the run ({at_stop})"
    );
    // Everything written while the server was down sits in the spool.
    let report = ledger.flush().await.unwrap();
    assert!(!report.database_up);
    assert!(report.spool_pending_records > 0);

    let starter = pg.clone();
    tokio::task::spawn_blocking(move || starter.start_again())
        .await
        .unwrap()
        .unwrap();
    drain(&ledger).await;
    let stats = ledger.stats();
    ledger.shutdown().await.unwrap();
    eprintln!("at_stop={at_stop} {stats:?}");
    assert_eq!(stats.records_received, 500);
    assert_eq!(stats.records_lost, 0);
    assert!(
        stats.records_spooled > 0 && stats.records_replayed > 0,
        "{stats:?}"
    );

    let store = Store::open(&pg.url()).await.unwrap();
    assert_eq!(counts(&store).await, (500, 500, 500));
    let verified = store.verify().await.unwrap();
    assert!(verified.is_intact(), "{:?}", verified.breaks);
    assert_eq!(verified.chains[0].last_seq, 500);
    store.close().await;
}
