//! The filter chain on the hot path, each piece beside a naive baseline:
//! auth lookup on a cache hit, quota admission (local and Redis), budget
//! reservation, and the whole chain on a cache hit.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // benches fail loudly
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use sluice_config::{Budget, BudgetPeriod, Limits, Priority};
use sluice_filters::{
    Authenticator, BudgetSpec, KeyEntry, KeyHash, LocalBudgets, Quotas, RedisQuotas, Scope,
};
use std::collections::HashMap;
use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Mutex;

fn entry(i: usize) -> KeyEntry {
    KeyEntry {
        key_id: format!("key-{i}"),
        tenant: format!("tenant-{}", i % 10),
        hash: KeyHash::of(&format!("sk-sluice-bench-{i:040}")),
        models: None,
        priority: Priority::Standard,
        expires_at: None,
        enabled: true,
        limits: Limits::default(),
        budget: None::<Budget>,
    }
}

fn limits() -> Limits {
    Limits {
        requests_per_minute: NonZeroU32::new(u32::MAX),
        tokens_per_minute: NonZeroU64::new(u64::MAX / 4),
        concurrent_requests: NonZeroU32::new(1_000_000),
    }
}

fn scopes() -> Vec<(Scope, Limits)> {
    vec![
        (Scope::Key("key-7".into()), limits()),
        (Scope::Tenant("tenant-7".into()), limits()),
    ]
}

fn auth(c: &mut Criterion) {
    let keys: Vec<KeyEntry> = (0..10_000).map(entry).collect();
    let auth = Authenticator::new(keys.clone(), None);
    let presented = format!("sk-sluice-bench-{:040}", 7);
    let mut group = c.benchmark_group("auth_lookup_hit");
    group.bench_function("sluice_sha256_map", |b| {
        b.iter(|| {
            auth.authenticate(Some(black_box(&presented)), 0)
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });
    // Naive: plaintext keys in a mutex-guarded map (and no constant-time check).
    let naive: Mutex<HashMap<String, KeyEntry>> = Mutex::new(
        (0..10_000)
            .map(|i| (format!("sk-sluice-bench-{i:040}"), entry(i)))
            .collect(),
    );
    group.bench_function("naive_mutex_plaintext_map", |b| {
        b.iter(|| {
            naive
                .lock()
                .unwrap()
                .get(black_box(&presented))
                .cloned()
                .unwrap()
        })
    });
    group.finish();
}

fn quota(c: &mut Criterion) {
    let quotas = Quotas::local();
    let scopes = scopes();
    let mut group = c.benchmark_group("quota_admit");
    group.bench_function("sluice_local_gcra_bucket_concurrency", |b| {
        b.iter(|| {
            let mut a = quotas
                .admit(black_box(&scopes), 100)
                .now_or_never()
                .unwrap()
                .unwrap();
            a.settle(80);
        })
    });
    // Naive: one fixed-window counter per scope in a mutex-guarded map.
    let naive: Mutex<HashMap<String, (u64, u64)>> = Mutex::new(HashMap::new());
    group.bench_function("naive_mutex_fixed_window", |b| {
        b.iter(|| {
            let mut map = naive.lock().unwrap();
            for name in ["key-7", "tenant-7"] {
                let slot = map.entry(name.to_string()).or_insert((0, 0));
                slot.0 += 1;
                slot.1 += 100;
            }
        })
    });
    if let Some(redis) = sluice_load_tests::servers::RedisServer::start() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shared = Quotas::shared(RedisQuotas::new(&redis.url()).unwrap(), false);
        group.bench_function("sluice_redis_one_round_trip", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut a = shared.admit(&scopes, 100).await.unwrap();
                    a.settle(80);
                    drop(a);
                })
            })
        });
    }
    group.finish();
}

fn budget(c: &mut Criterion) {
    let budgets = LocalBudgets::new(jiff::tz::TimeZone::UTC);
    let spec = BudgetSpec {
        limit_micros: i64::MAX / 4,
        soft_limit_micros: None,
        period: BudgetPeriod::Monthly,
    };
    let scopes = vec![
        (Scope::Key("key-7".into()), spec.clone()),
        (Scope::Tenant("tenant-7".into()), spec),
    ];
    let now = jiff::Timestamp::now();
    let mut group = c.benchmark_group("budget_reserve_settle");
    group.bench_function("sluice_local_reservation", |b| {
        b.iter(|| {
            budgets
                .reserve(black_box(&scopes), 1_000, now)
                .unwrap()
                .settle(800)
        })
    });
    let naive: Mutex<HashMap<String, i64>> = Mutex::new(HashMap::new());
    group.bench_function("naive_mutex_spend_map", |b| {
        b.iter(|| {
            let mut map = naive.lock().unwrap();
            for name in ["key-7", "tenant-7"] {
                *map.entry(name.to_string()).or_insert(0) += 800;
            }
        })
    });
    group.finish();
}

fn chain(c: &mut Criterion) {
    let auth = Authenticator::new((0..10_000).map(entry).collect(), None);
    let quotas = Quotas::local();
    let budgets = LocalBudgets::new(jiff::tz::TimeZone::UTC);
    let spec = BudgetSpec {
        limit_micros: i64::MAX / 4,
        soft_limit_micros: Some(i64::MAX / 8),
        period: BudgetPeriod::Monthly,
    };
    let presented = format!("sk-sluice-bench-{:040}", 7);
    let now = jiff::Timestamp::now();
    c.bench_function("filter_chain_cache_hit", |b| {
        b.iter(|| {
            let key = auth
                .authenticate(Some(black_box(&presented)), 0)
                .now_or_never()
                .unwrap()
                .unwrap();
            let quota_scopes = [
                (Scope::Key(key.key_id.clone()), limits()),
                (Scope::Tenant(key.tenant.clone()), limits()),
            ];
            let mut admission = quotas
                .admit(&quota_scopes, 300)
                .now_or_never()
                .unwrap()
                .unwrap();
            let budget_scopes = [
                (Scope::Key(key.key_id.clone()), spec.clone()),
                (Scope::Tenant(key.tenant.clone()), spec.clone()),
            ];
            let reservation = budgets.reserve(&budget_scopes, 3_000, now).unwrap();
            admission.settle(250);
            reservation.settle(2_500);
        })
    });
}

criterion_group!(benches, auth, quota, budget, chain);
criterion_main!(benches);
