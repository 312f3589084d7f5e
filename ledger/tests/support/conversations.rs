//! Stored Responses API conversations: saved, found by their own tenant
//! only, replaced by a second save, gone once expired.

use sluice_ledger::Store;

/// Runs the stored-conversation checks against a fresh database at `url`.
pub async fn scenario_stored_conversations(url: &str) {
    let store = Store::open(url).await.unwrap();
    store
        .save_conversation(
            "resp_1",
            Some("acme"),
            r#"[{"role":"user","content":"hi"}]"#,
            60_000_000,
        )
        .await
        .unwrap();
    let found = store
        .load_conversation("resp_1", Some("acme"))
        .await
        .unwrap();
    assert_eq!(
        found.as_deref(),
        Some(r#"[{"role":"user","content":"hi"}]"#)
    );
    assert_eq!(
        store
            .load_conversation("resp_1", Some("globex"))
            .await
            .unwrap(),
        None,
        "another tenant's"
    );
    assert_eq!(
        store.load_conversation("resp_1", None).await.unwrap(),
        None,
        "no tenant is not every tenant"
    );
    assert_eq!(
        store
            .load_conversation("resp_2", Some("acme"))
            .await
            .unwrap(),
        None
    );

    // Without auth (no tenant) the same rules hold among tenantless callers.
    store
        .save_conversation("resp_3", None, "[]", 60_000_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .load_conversation("resp_3", None)
            .await
            .unwrap()
            .as_deref(),
        Some("[]")
    );
    assert_eq!(
        store
            .load_conversation("resp_3", Some("acme"))
            .await
            .unwrap(),
        None
    );

    // A second save of one id replaces the first.
    store
        .save_conversation("resp_1", Some("acme"), "[1]", 60_000_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .load_conversation("resp_1", Some("acme"))
            .await
            .unwrap()
            .as_deref(),
        Some("[1]")
    );

    // Expired: not found, and removed by the next save.
    store
        .save_conversation("resp_old", Some("acme"), "[]", -1)
        .await
        .unwrap();
    assert_eq!(
        store
            .load_conversation("resp_old", Some("acme"))
            .await
            .unwrap(),
        None
    );
    store
        .save_conversation("resp_4", Some("acme"), "[]", 60_000_000)
        .await
        .unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM stored_responses WHERE response_id = 'resp_old'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0);
}
