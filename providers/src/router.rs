//! From the client's model name to an ordered plan of upstream attempts.
//!
//! A model name maps to a failover chain of steps; [`Router::plan`] turns a
//! chain into the order in which to try targets: each step's targets ordered
//! by its balance strategy (the chosen one first, then the others), step
//! after step, repeated until `routing.max_attempts` candidates are listed
//! (so a one-target chain is retried). Whether a candidate may be tried now
//! (breaker, `retry-after` cool-down) is decided when it is tried, through
//! [`UpstreamHealth::begin`].

use crate::health::UpstreamHealth;
use crate::provider::Provider;
use crate::ProviderError;
use rand::Rng;
use sluice_config::{
    Balance, Config, RouteStep, RoutingSettings, UpstreamSettings, WILDCARD_MODEL,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// An upstream server as the router hands it out.
#[derive(Debug)]
pub struct UpstreamTarget {
    /// Validated settings (address, timeouts).
    pub settings: UpstreamSettings,
    /// The wire adapter (identity for OpenAI-compatible upstreams); rebuilt
    /// when the API key file changes.
    provider: RwLock<Arc<Provider>>,
    /// The key file, when the key comes from one.
    key_file: Option<KeyFileWatch>,
    /// Breaker, in-flight count, latency average.
    pub health: UpstreamHealth,
}

/// How often a key file's modification time is looked at.
const KEY_FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct KeyFileWatch {
    path: std::path::PathBuf,
    /// When the file was last looked at, and its modification time then.
    seen: Mutex<(Instant, Option<SystemTime>)>,
}

impl UpstreamTarget {
    fn new(settings: &UpstreamSettings, breaker: sluice_config::BreakerSettings) -> Self {
        let key_file = settings.api_key_file.as_ref().map(|path| KeyFileWatch {
            seen: Mutex::new((Instant::now(), modified(path))),
            path: path.clone(),
        });
        UpstreamTarget {
            provider: RwLock::new(Arc::new(Provider::from_settings(settings))),
            settings: settings.clone(),
            key_file,
            health: UpstreamHealth::new(breaker),
        }
    }

    /// The adapter to use now. When the key comes from a file that changed
    /// (checked at most once a second), the key is re-read and the adapter
    /// rebuilt, without a restart.
    pub fn provider(&self) -> Arc<Provider> {
        if let Some(watch) = &self.key_file {
            self.reload_key_if_changed(watch);
        }
        self.provider
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn reload_key_if_changed(&self, watch: &KeyFileWatch) {
        let Ok(mut seen) = watch.seen.lock() else {
            return;
        };
        if seen.0.elapsed() < KEY_FILE_CHECK_EVERY {
            return;
        }
        seen.0 = Instant::now();
        let now = modified(&watch.path);
        if now == seen.1 {
            return;
        }
        seen.1 = now;
        match std::fs::read_to_string(&watch.path) {
            Ok(text) if !text.trim().is_empty() => {
                let mut settings = self.settings.clone();
                settings.api_key = Some(sluice_config::Secret::new(text.trim()));
                if let Ok(mut slot) = self.provider.write() {
                    *slot = Arc::new(Provider::from_settings(&settings));
                }
                tracing::info!(upstream = %self.settings.name, "reloaded the upstream API key from its file");
            }
            Ok(_) | Err(_) => {
                tracing::warn!(upstream = %self.settings.name, path = %watch.path.display(), "API key file unreadable or empty; keeping the previous key");
            }
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[derive(Debug)]
struct Group {
    name: String,
    steps: Vec<RouteStep>,
}

/// What a client's model name resolved to.
#[derive(Debug, Clone, Copy)]
pub struct Route<'r> {
    /// The name to use in metrics: the configured name, or `"*"` for names
    /// matched by the wildcard (keeps label cardinality bounded).
    pub model_label: &'r str,
    group: &'r Group,
}

/// One planned attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'r> {
    /// Index into [`Router::targets`].
    pub target: usize,
    /// The model name to send upstream when the route renames it; `None`
    /// sends the client's own name (see [`Candidate::upstream_model`]).
    pub rename: Option<&'r str>,
}

impl<'r> Candidate<'r> {
    /// The model name to send upstream for a client that asked for
    /// `client_model`.
    pub fn upstream_model<'a>(&self, client_model: &'a str) -> &'a str
    where
        'r: 'a,
    {
        self.rename.unwrap_or(client_model)
    }
}

/// Maps model names to failover plans; built once per config.
#[derive(Debug)]
pub struct Router {
    targets: Vec<UpstreamTarget>,
    by_name: HashMap<String, Group>,
    wildcard: Option<Group>,
    listed: Vec<String>,
    settings: RoutingSettings,
}

impl Router {
    /// Builds the routing table from a validated config.
    pub fn new(config: &Config) -> Self {
        let targets = config
            .upstreams
            .iter()
            .map(|settings| UpstreamTarget::new(settings, config.routing.breaker))
            .collect();
        let mut by_name = HashMap::with_capacity(config.models.len());
        let mut wildcard = None;
        for m in &config.models {
            let group = Group {
                name: m.name.clone(),
                steps: m.steps.clone(),
            };
            if m.name == WILDCARD_MODEL {
                wildcard = Some(group);
            } else {
                by_name.insert(m.name.clone(), group);
            }
        }
        Router {
            targets,
            by_name,
            wildcard,
            listed: config.listed_models().map(|m| m.name.clone()).collect(),
            settings: config.routing,
        }
    }

    /// Resolves a client's model name.
    pub fn resolve(&self, model: &str) -> Result<Route<'_>, ProviderError> {
        if let Some(group) = self.by_name.get(model) {
            return Ok(Route {
                model_label: &group.name,
                group,
            });
        }
        match &self.wildcard {
            Some(group) => Ok(Route {
                model_label: WILDCARD_MODEL,
                group,
            }),
            None => Err(ProviderError::UnknownModel {
                model: model.to_string(),
            }),
        }
    }

    /// The order in which to try targets for `route`.
    pub fn plan<'r>(&'r self, route: &Route<'r>) -> Vec<Candidate<'r>> {
        let max = self.settings.max_attempts as usize;
        let mut rng = rand::rng();
        let mut once: Vec<Candidate<'r>> = Vec::new();
        for step in &route.group.steps {
            for index in self.order(step, &mut rng) {
                let t = &step.targets[index];
                once.push(Candidate {
                    target: t.upstream,
                    rename: t.model.as_deref(),
                });
            }
        }
        once.iter().copied().cycle().take(max.max(1)).collect()
    }

    /// The indexes of a step's targets, best first.
    fn order(&self, step: &RouteStep, rng: &mut impl Rng) -> Vec<usize> {
        let n = step.targets.len();
        let mut order: Vec<usize> = (0..n).collect();
        if n < 2 {
            return order;
        }
        let health = |i: usize| &self.targets[step.targets[i].upstream].health;
        match step.balance {
            Balance::Weighted => {
                // Weighted sampling without replacement: each position by weight.
                let mut weights: Vec<u32> = step.targets.iter().map(|t| t.weight).collect();
                for slot in 0..n {
                    let total: u64 = weights[slot..].iter().map(|w| u64::from(*w)).sum();
                    let mut pick = rng.random_range(0..total.max(1));
                    let mut chosen = slot;
                    for (i, w) in weights.iter().enumerate().skip(slot) {
                        if pick < u64::from(*w) {
                            chosen = i;
                            break;
                        }
                        pick -= u64::from(*w);
                    }
                    weights.swap(slot, chosen);
                    order.swap(slot, chosen);
                }
            }
            Balance::LeastInFlight => {
                // Random tie-break: shuffle, then a stable sort.
                for i in (1..n).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                order.sort_by_key(|i| health(*i).in_flight());
            }
            Balance::PowerOfTwoLatency => {
                for i in (1..n).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                // Unmeasured targets (0) go first so they get measured.
                if health(order[1]).latency_ewma_us() < health(order[0]).latency_ewma_us() {
                    order.swap(0, 1);
                }
            }
        }
        order
    }

    /// All upstream targets, indexed by [`Candidate::target`].
    pub fn targets(&self) -> &[UpstreamTarget] {
        &self.targets
    }

    /// Failover and retry policy.
    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    /// Whether `name` is a configured (non-wildcard) model.
    pub fn is_listed(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The configured model names, in config order, for `GET /v1/models`.
    pub fn listed_models(&self) -> &[String] {
        &self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::load_str;

    const YAML: &str = "
upstreams:
  a: {base_url: 'http://127.0.0.1:1/v1'}
  b: {base_url: 'http://127.0.0.1:2/v1'}
  c: {base_url: 'http://127.0.0.1:3/v1'}
routing: {max_attempts: 5}
models:
  - {name: fast, upstream: b, upstream_model: llama}
  - {name: gpt-4o, upstream: a}
  - name: chained
    chain:
      - targets: [{upstream: a, model: m-a, weight: 9}, {upstream: b, model: m-b, weight: 1}]
      - targets: [{upstream: c}]
";

    fn router(yaml: &str) -> Router {
        Router::new(&load_str(yaml, &|_| None).unwrap())
    }

    #[test]
    fn resolves_names_and_rewrites() {
        let router = router(YAML);
        let r = router.resolve("fast").unwrap();
        let plan = router.plan(&r);
        assert_eq!(router.targets()[plan[0].target].settings.name, "b");
        assert_eq!(plan[0].upstream_model("fast"), "llama");
        assert_eq!(
            plan.len(),
            5,
            "a one-target chain is retried up to max_attempts"
        );
        assert!(plan.iter().all(|c| *c == plan[0]));
        assert_eq!(router.listed_models(), ["fast", "gpt-4o", "chained"]);
        assert_eq!(
            router.resolve("nope").unwrap_err(),
            ProviderError::UnknownModel {
                model: "nope".into()
            }
        );
    }

    #[test]
    fn chains_list_every_step_in_order_and_weights_pick_the_first() {
        let router = router(YAML);
        let r = router.resolve("chained").unwrap();
        let mut a_first = 0;
        for _ in 0..1000 {
            let plan = router.plan(&r);
            let names: Vec<&str> = plan
                .iter()
                .map(|c| router.targets()[c.target].settings.name.as_str())
                .collect();
            assert_eq!(names.len(), 5);
            assert_eq!(names[2], "c", "step 2 after both step-1 targets: {names:?}");
            assert_eq!(plan[2].upstream_model("chained"), "chained");
            if names[0] == "a" {
                a_first += 1;
                assert_eq!(plan[0].upstream_model("chained"), "m-a");
            }
        }
        assert!(
            (850..=950).contains(&a_first),
            "weight 9:1 -> {a_first}/1000"
        );
    }

    #[test]
    fn least_in_flight_prefers_the_idle_target() {
        let yaml = "
upstreams:
  a: {base_url: 'http://127.0.0.1:1/v1'}
  b: {base_url: 'http://127.0.0.1:2/v1'}
models:
  - name: m
    chain: [{targets: [{upstream: a}, {upstream: b}], balance: least_in_flight}]
";
        let router = router(yaml);
        let busy = router.targets()[0].health.begin().unwrap();
        let r = router.resolve("m").unwrap();
        for _ in 0..20 {
            assert_eq!(
                router.targets()[router.plan(&r)[0].target].settings.name,
                "b"
            );
        }
        drop(busy);
    }

    #[test]
    fn a_changed_key_file_is_picked_up_without_restart() {
        let dir = std::env::temp_dir().join(format!("sluice-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk-first\n").unwrap();
        let yaml = format!(
            "upstreams:\n  a: {{base_url: 'http://127.0.0.1:1/v1', api_key_file: '{}'}}\n",
            path.display()
        );
        let router = router(&yaml);
        let target = &router.targets()[0];
        let auth = |p: &Provider| match p {
            Provider::OpenAi(a) => a.headers().next().map(|(_, v)| v.to_string()),
            _ => None,
        };
        assert_eq!(auth(&target.provider()).as_deref(), Some("Bearer sk-first"));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "sk-second\n").unwrap();
        // Modification times are coarse on some filesystems; make it differ.
        let later = SystemTime::now() + Duration::from_secs(5);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(later).unwrap();
        // Not before the once-a-second check...
        assert_eq!(auth(&target.provider()).as_deref(), Some("Bearer sk-first"));
        std::thread::sleep(KEY_FILE_CHECK_EVERY + Duration::from_millis(50));
        assert_eq!(
            auth(&target.provider()).as_deref(),
            Some("Bearer sk-second")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wildcard_forwards_unknown_names_unchanged() {
        let yaml = format!("{YAML}  - {{name: '*', upstream: a}}\n");
        let router = router(&yaml);
        let r = router.resolve("o3-mini").unwrap();
        assert_eq!(r.model_label, "*");
        assert_eq!(router.plan(&r)[0].upstream_model("o3-mini"), "o3-mini");
        assert!(!router.is_listed("o3-mini"));
    }
}
