//! Redis-backed quotas against a real redis-server: two "nodes" share one
//! limit, and a Redis outage is seen and recovered from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_filters::{LimitKind, QuotaLimits, RedisQuotas, Scope};
use sluice_load_tests::servers::RedisServer;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

fn limits(rpm: u32, tpm: u64, conc: u32) -> QuotaLimits {
    QuotaLimits {
        requests_per_minute: NonZeroU32::new(rpm),
        tokens_per_minute: NonZeroU64::new(tpm),
        concurrent_requests: NonZeroU32::new(conc),
    }
}

#[tokio::test]
async fn two_nodes_share_one_requests_per_minute_limit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let node_a = RedisQuotas::new(&redis.url()).unwrap();
    let node_b = RedisQuotas::new(&redis.url()).unwrap();
    let scopes = vec![(Scope::Tenant("acme".into()), limits(4, 0, 0))];
    let mut admitted = 0;
    for i in 0..8 {
        let node = if i % 2 == 0 { &node_a } else { &node_b };
        match node.admit(&scopes, 1).await.unwrap() {
            Ok(a) => {
                admitted += 1;
                let (limit, remaining, _) = a.status.requests.unwrap();
                assert_eq!((limit, remaining), (4, 4 - admitted));
            }
            Err(r) => {
                assert_eq!(r.limit, LimitKind::Requests);
                assert!(r.retry_after > Duration::from_secs(10));
            }
        }
    }
    assert_eq!(admitted, 4);
    assert!(node_a.is_up() && node_b.is_up());
}

#[tokio::test]
async fn tokens_settle_and_concurrency_releases_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quotas = RedisQuotas::new(&redis.url()).unwrap();
    let scopes = vec![(Scope::Key("k".into()), limits(0, 1000, 1))];
    let mut first = quotas.admit(&scopes, 800).await.unwrap().unwrap();
    assert_eq!(first.status.tokens.unwrap().1, 200);
    let refused = quotas.admit(&scopes, 100).await.unwrap().err().unwrap();
    assert_eq!(refused.limit, LimitKind::Concurrency);
    first.settle(50);
    drop(first);
    // Release runs in a background task: wait for it.
    let mut again = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Ok(a) = quotas.admit(&scopes, 900).await.unwrap() {
            again = Some(a);
            break;
        }
    }
    let again = again.expect("slot released and 750 tokens given back");
    assert!(again.status.tokens.unwrap().1 < 100);
    let never = quotas
        .admit(&[(Scope::Key("k2".into()), limits(0, 100, 0))], 500)
        .await
        .unwrap();
    assert!(never.err().unwrap().never);
}

#[tokio::test]
async fn an_outage_is_reported_and_recovered_from() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let quotas = RedisQuotas::new(&redis.url()).unwrap();
    let scopes = vec![(Scope::Key("k".into()), limits(100, 0, 0))];
    assert!(quotas.admit(&scopes, 1).await.unwrap().is_ok());
    redis.stop();
    let started = std::time::Instant::now();
    assert!(
        quotas.admit(&scopes, 1).await.is_err(),
        "down is an error, not an admission"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead Redis must not stall requests"
    );
    assert!(!quotas.is_up());
    redis.restart().unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if matches!(quotas.admit(&scopes, 1).await, Ok(Ok(_))) {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "reconnects by itself once Redis is back");
    assert!(quotas.is_up());
}
