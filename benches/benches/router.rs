//! Router target selection: `Router::resolve` + `Router::plan` (model name to
//! an ordered failover plan, balancing within each step by weight, in-flight
//! count or latency), against a naive router that scans a list of groups by
//! name, clones every target's strings and orders a step by sorting on
//! random keys.

#![allow(clippy::panic, clippy::unwrap_used)] // A bench that silently timed the error path would lie.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::Rng;
use sluice_config::load_str;
use sluice_providers::Router;
use std::fmt::Write;
use std::hint::black_box;

/// Models named before the benchmarked ones, so the name lookup is not trivial.
const FILLER_MODELS: usize = 50;

fn config() -> String {
    let mut yaml = String::from(
        "upstreams:\n  a: {base_url: 'http://127.0.0.1:1/v1'}\n  b: {base_url: 'http://127.0.0.1:2/v1'}\n  c: {base_url: 'http://127.0.0.1:3/v1'}\n  d: {base_url: 'http://127.0.0.1:4/v1'}\nrouting: {max_attempts: 3}\nmodels:\n",
    );
    for i in 0..FILLER_MODELS {
        let _ = writeln!(yaml, "  - {{name: filler-{i}, upstream: a}}");
    }
    yaml.push_str(
        "  - {name: single, upstream: a, upstream_model: llama}
  - name: weighted
    chain:
      - targets: [{upstream: a, model: m-a, weight: 9}, {upstream: b, model: m-b, weight: 1}]
      - targets: [{upstream: c}]
  - name: least
    chain: [{targets: [{upstream: a}, {upstream: b}, {upstream: c}, {upstream: d}], balance: least_in_flight}]
  - name: p2c
    chain: [{targets: [{upstream: a}, {upstream: b}, {upstream: c}, {upstream: d}], balance: p2c_latency}]
  - {name: '*', upstream: d}
",
    );
    yaml
}

/// A naive router's target: (upstream, model override, weight).
type NaiveTarget = (String, Option<String>, u32);
/// A naive router's view of the same table: (model, steps of targets).
type NaiveGroup = (String, Vec<Vec<NaiveTarget>>);

fn naive_table() -> Vec<NaiveGroup> {
    let one = |u: &str, m: Option<&str>, w: u32| (u.to_string(), m.map(str::to_string), w);
    let mut table: Vec<NaiveGroup> = (0..FILLER_MODELS)
        .map(|i| (format!("filler-{i}"), vec![vec![one("a", None, 1)]]))
        .collect();
    table.push(("single".into(), vec![vec![one("a", Some("llama"), 1)]]));
    table.push((
        "weighted".into(),
        vec![
            vec![one("a", Some("m-a"), 9), one("b", Some("m-b"), 1)],
            vec![one("c", None, 1)],
        ],
    ));
    let four = vec![
        one("a", None, 1),
        one("b", None, 1),
        one("c", None, 1),
        one("d", None, 1),
    ];
    table.push(("least".into(), vec![four.clone()]));
    table.push(("p2c".into(), vec![four]));
    table.push(("*".into(), vec![vec![one("d", None, 1)]]));
    table
}

/// Naive plan: linear scan by name (falling back to `*`), then each step
/// ordered by a weighted random key, every candidate as owned strings.
fn naive_plan(table: &[NaiveGroup], model: &str, max_attempts: usize) -> Vec<(String, String)> {
    let group = table
        .iter()
        .find(|(name, _)| name == model)
        .or_else(|| table.iter().find(|(name, _)| name == "*"))
        .unwrap();
    let mut rng = rand::rng();
    let mut once = Vec::new();
    for step in &group.1 {
        let mut keyed: Vec<(f64, &NaiveTarget)> = step
            .iter()
            .map(|t| (rng.random::<f64>().powf(1.0 / f64::from(t.2)), t))
            .collect();
        keyed.sort_by(|x, y| y.0.total_cmp(&x.0));
        for (_, (upstream, m, _)) in keyed {
            once.push((
                upstream.clone(),
                m.clone().unwrap_or_else(|| model.to_string()),
            ));
        }
    }
    once.iter().cycle().take(max_attempts).cloned().collect()
}

fn plan(c: &mut Criterion) {
    let router = Router::new(&load_str(&config(), &|_| None).unwrap());
    let naive = naive_table();
    let mut group = c.benchmark_group("router_plan");
    for model in ["single", "weighted", "least", "p2c", "unlisted-model"] {
        group.bench_with_input(
            BenchmarkId::new("sluice_resolve_plan", model),
            model,
            |b, m| {
                b.iter(|| {
                    let route = router.resolve(black_box(m)).unwrap();
                    let plan = router.plan(&route);
                    assert_eq!(plan.len(), 3);
                    black_box(plan)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("naive_scan_clone_sort", model),
            model,
            |b, m| b.iter(|| black_box(naive_plan(&naive, black_box(m), 3))),
        );
    }
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
