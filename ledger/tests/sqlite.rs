//! The ledger against real SQLite files in temporary directories.

mod support;

use std::time::Duration;

use sluice_ledger::{sqlite_url, Admission, Ledger, Store};
use support::*;

fn url_in(dir: &tempfile::TempDir) -> String {
    sqlite_url(&dir.path().join("ledger.db"))
}

#[tokio::test]
async fn writes_survive_restart_and_chains_verify() {
    let dir = tempfile::tempdir().unwrap();
    scenario_write_restart_verify(&url_in(&dir), dir.path()).await;
}

#[tokio::test]
async fn tampering_is_reported_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    scenario_tamper_is_detected(&url_in(&dir), dir.path()).await;
}

#[tokio::test]
async fn grouped_reports_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    scenario_reports(&url_in(&dir), dir.path()).await;
}

#[tokio::test]
async fn database_missing_at_start_spools_then_replays() {
    let dir = tempfile::tempdir().unwrap();
    // The database's directory does not exist yet: every open fails.
    let db_dir = dir.path().join("not-yet");
    let url = sqlite_url(&db_dir.join("ledger.db"));
    let ledger = Ledger::start(fast_settings(&url, &dir.path().join("spool"), "n1"))
        .await
        .unwrap();
    for n in 0..300 {
        ledger
            .record(record(n, Some("acme"), "gpt-4o", DAY0))
            .unwrap();
    }
    let report = ledger.flush().await.unwrap();
    assert!(!report.database_up);
    assert_eq!(report.spool_pending_records, 300);
    assert!(ledger.stats().spool_bytes > 0);

    std::fs::create_dir(&db_dir).unwrap();
    drain(&ledger).await;
    let stats = ledger.stats();
    assert_eq!(
        (
            stats.records_written,
            stats.records_replayed,
            stats.records_lost
        ),
        (300, 300, 0)
    );
    assert_eq!(stats.spool_bytes, 0);
    ledger.shutdown().await.unwrap();

    let store = Store::open(&url).await.unwrap();
    assert_eq!(counts(&store).await, (300, 300, 300));
    assert!(store.verify().await.unwrap().is_intact());
    // Replayed segments are gone from the spool directory.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn full_queue_overflows_to_the_spool_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir);
    let mut settings = fast_settings(&url, &dir.path().join("spool"), "n1");
    settings.queue_capacity = 4;
    settings.batch_size = 2;
    let ledger = Ledger::start(settings).await.unwrap();
    // No await between calls: the writer cannot drain the queue meanwhile.
    let admissions: Vec<Admission> = (0..200)
        .map(|n| ledger.record(record(n, None, "gpt-4o", DAY0)).unwrap())
        .collect();
    let spooled = admissions
        .iter()
        .filter(|a| **a == Admission::Spooled)
        .count();
    assert_eq!(spooled, 196, "all but the queue's capacity overflow");
    assert_eq!(ledger.stats().queue_depth, 4);
    drain(&ledger).await;
    ledger.shutdown().await.unwrap();
    let store = Store::open(&url).await.unwrap();
    assert_eq!(counts(&store).await, (200, 200, 200));
    assert!(store.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn spool_survives_restart_and_replay_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let good_url = url_in(&dir);
    // First run: the database is unreachable for its whole life.
    let bad_url = sqlite_url(&dir.path().join("missing").join("ledger.db"));
    let first = Ledger::start(fast_settings(&bad_url, &spool_dir, "n1"))
        .await
        .unwrap();
    for n in 0..50 {
        first
            .record(record(n, Some("acme"), "gpt-4o", DAY0))
            .unwrap();
    }
    first.shutdown().await.unwrap();
    assert_eq!(first.stats().spool_pending_records, 50);
    // After shutdown, records still land in the spool.
    assert_eq!(
        first
            .record(record(50, Some("acme"), "gpt-4o", DAY0))
            .unwrap(),
        Admission::Spooled
    );

    // Simulate a crash after a replay committed but before it deleted its
    // segment: every spooled record is there twice.
    let segments: Vec<_> = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!segments.is_empty());
    for (i, segment) in segments.iter().enumerate() {
        std::fs::copy(
            segment,
            spool_dir.join(format!("segment-{:020}.jsonl", 1000 + i)),
        )
        .unwrap();
    }

    // Second run, database reachable: everything replayed exactly once.
    let second = Ledger::start(fast_settings(&good_url, &spool_dir, "n1"))
        .await
        .unwrap();
    drain(&second).await;
    let stats = second.stats();
    assert_eq!(stats.records_written, 51);
    second.shutdown().await.unwrap();
    let store = Store::open(&good_url).await.unwrap();
    assert_eq!(counts(&store).await, (51, 51, 51));
    assert!(store.verify().await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_mid_run_spools_then_replays() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir);
    let mut settings = fast_settings(&url, &dir.path().join("spool"), "n1");
    settings.write_timeout = Duration::from_millis(300);
    let ledger = Ledger::start(settings).await.unwrap();
    for n in 0..100 {
        ledger.record(record(n, None, "gpt-4o", DAY0)).unwrap();
    }
    assert!(ledger.flush().await.unwrap().database_up);

    // Another connection takes the write lock and sits on it: the ledger's
    // writes time out, as with a database that is up but far too slow.
    let blocker = Store::open(&url).await.unwrap();
    let mut lock = blocker.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    for n in 100..200 {
        ledger.record(record(n, None, "gpt-4o", DAY0)).unwrap();
    }
    let report = ledger.flush().await.unwrap();
    assert!(!report.database_up);
    assert_eq!(report.spool_pending_records, 100);
    assert!(ledger.stats().writes_failed >= 1);

    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    drain(&ledger).await;
    ledger.shutdown().await.unwrap();
    let store = Store::open(&url).await.unwrap();
    assert_eq!(counts(&store).await, (200, 200, 200));
    assert!(store.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn bad_settings_and_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = fast_settings("mysql://x", &dir.path().join("spool"), "n1");
    assert_eq!(
        Ledger::start(settings.clone()).await.unwrap_err().kind(),
        "settings"
    );
    settings.database_url = url_in(&dir);
    settings.node_id = String::new();
    assert_eq!(
        Ledger::start(settings).await.unwrap_err().kind(),
        "settings"
    );
    // A spool that cannot be created is fatal: nothing would be safe.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let settings = fast_settings(&url_in(&dir), &file.join("spool"), "n1");
    assert_eq!(Ledger::start(settings).await.unwrap_err().kind(), "spool");
}

#[tokio::test]
async fn totals_are_exact_over_many_small_records() {
    let dir = tempfile::tempdir().unwrap();
    scenario_exact_totals(&url_in(&dir), dir.path()).await;
}

#[tokio::test]
async fn a_ledger_from_before_exact_costs_migrates_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    scenario_upgrade_from_v1_rows(&url_in(&dir), dir.path()).await;
}

#[tokio::test]
async fn a_ledger_from_before_cache_writes_migrates_and_prices_them() {
    let dir = tempfile::tempdir().unwrap();
    scenario_cache_writes_after_v2_rows(&url_in(&dir), dir.path()).await;
}

#[tokio::test]
async fn stored_conversations_are_scoped_replaced_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    scenario_stored_conversations(&url_in(&dir)).await;
}
