//! Pricing and recording every forwarded request in the ledger.
//!
//! The ledger writer runs on its own small tokio runtime, so that its
//! batching, spooling and replay never compete with request handling, and so
//! that it can be flushed after pingora's runtimes have stopped (SIGTERM).
//! Reads of the database (reports, admin calls, budget seeding) go through
//! a store opened on the control runtime instead, so they never wait behind
//! the writer. [`Accounting::record`] never blocks the request path.

use super::Metrics;
use crate::error::GatewayError;
use arc_swap::ArcSwap;
use serde_json::Value;
use sluice_config::{Config, RawPrice, UpstreamKind};
use sluice_ledger::{
    count_tokens, DurableAck, EndState, Ledger, LedgerSettings, PriceBook, PriceOverride,
    PriceTable, Store, TokenUsage, UsageRecord, UsageSource, UsdPerMillion,
};
use sluice_providers::Usage;
use std::sync::Arc;

/// Why accounting could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// The ledger's runtime could not be built.
    #[error("cannot start the ledger runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The ledger or a price was refused.
    #[error("ledger: {0}")]
    Ledger(#[from] sluice_ledger::LedgerError),
}

/// What one finished request contributes to the ledger.
pub struct Finished<'a> {
    /// When the request headers arrived (unix micros).
    pub time_us: i64,
    /// Its id.
    pub request_id: &'a str,
    /// Tenant and key id, when authenticated.
    pub tenant: Option<&'a str>,
    /// The key id.
    pub key_id: Option<&'a str>,
    /// Client-visible model.
    pub model: &'a str,
    /// Upstream that served it.
    pub provider: &'a str,
    /// Model name sent upstream.
    pub upstream_model: &'a str,
    /// Usage the provider reported, if any.
    pub reported: Option<Usage>,
    /// Request body (for counting when nothing was reported).
    pub request_body: &'a [u8],
    /// Text delivered to the client (for counting).
    pub delivered_text: &'a str,
    /// Whole-request latency.
    pub latency_ms: u64,
    /// Time to the first body byte sent to the client.
    pub ttft_ms: Option<u64>,
    /// Status sent to the client.
    pub status: u16,
    /// Streamed?
    pub stream: bool,
    /// How it ended.
    pub end_state: EndState,
}

/// How long a stored Responses API response can be continued
/// (`previous_response_id`): 30 days, as OpenAI keeps them.
const STORED_RESPONSE_TTL_US: i64 = 30 * 24 * 3600 * 1_000_000;

/// Prices, the ledger writer and its runtime.
pub struct Accounting {
    ledger: Option<Ledger>,
    store: Option<Store>,
    /// Prices, replaced whole by a config reload.
    prices: ArcSwap<PriceBook>,
    /// Serve models with no price.
    pub allow_unpriced: bool,
    /// Whether a response waits for its record to be durable.
    durability: sluice_config::Durability,
    metrics: Arc<Metrics>,
    /// The ledger writer's runtime.
    runtime: tokio::runtime::Runtime,
    /// The control runtime, where the report store lives.
    control: tokio::runtime::Handle,
}

fn override_of(p: &RawPrice) -> Result<PriceOverride, sluice_ledger::LedgerError> {
    Ok(PriceOverride {
        model: p.model.clone(),
        input: UsdPerMillion::parse(&p.input.0)?,
        cached_input: p
            .cached_input
            .as_ref()
            .map(|c| UsdPerMillion::parse(&c.0))
            .transpose()?,
        cache_write: p
            .cache_write
            .as_ref()
            .map(|w| UsdPerMillion::parse(&w.0))
            .transpose()?,
        output: UsdPerMillion::parse(&p.output.0)?,
        as_of: None,
    })
}

/// The prices of models served by `kind: local` upstreams, by the model
/// name each route sends them (a wildcard route's names cannot be listed:
/// those stay unpriced unless `pricing:` names them). `pricing:` entries
/// come after these and win.
fn local_model_prices(config: &Config) -> Result<Vec<PriceOverride>, sluice_ledger::LedgerError> {
    let mut prices = Vec::new();
    for route in &config.models {
        for target in route.steps.iter().flat_map(|step| &step.targets) {
            let Some(upstream) = config.upstreams.get(target.upstream) else {
                continue;
            };
            let UpstreamKind::Local(local) = &upstream.kind else {
                continue;
            };
            let model = target.model.clone().unwrap_or_else(|| route.name.clone());
            if model == sluice_config::WILDCARD_MODEL {
                continue;
            }
            prices.push(PriceOverride {
                model,
                input: UsdPerMillion::parse(&local.price_input.0)?,
                cached_input: None,
                cache_write: None,
                output: UsdPerMillion::parse(&local.price_output.0)?,
                as_of: None,
            });
        }
    }
    Ok(prices)
}

/// The prices of `config`: the shipped table, the local engine's prices,
/// `pricing:` overrides, then each tenant's.
fn price_book(config: &Config) -> Result<PriceBook, sluice_ledger::LedgerError> {
    let mut overrides = local_model_prices(config)?;
    for price in &config.ledger.pricing {
        overrides.push(override_of(price)?);
    }
    let mut prices = PriceBook::new(PriceTable::embedded()?.with_overrides(&overrides)?);
    for tenant in &config.access.tenants {
        if !tenant.pricing.is_empty() {
            let own: Vec<PriceOverride> = tenant
                .pricing
                .iter()
                .map(override_of)
                .collect::<Result<_, _>>()?;
            prices.set_tenant_overrides(&tenant.name, &own)?;
        }
    }
    Ok(prices)
}

impl Accounting {
    /// Replaces the prices with those of a reloaded `config`; requests
    /// already priced keep their cost.
    pub fn set_prices(&self, config: &Config) -> Result<(), sluice_ledger::LedgerError> {
        self.prices.store(Arc::new(price_book(config)?));
        Ok(())
    }

    /// Loads prices and starts the ledger writer (unless disabled); the
    /// report store opens on `control`.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        control: tokio::runtime::Handle,
    ) -> Result<Self, AccountingError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-ledger")
            .enable_all()
            .build()?;
        let prices = ArcSwap::from_pointee(price_book(config)?);
        let settings = &config.ledger;
        let (ledger, store) = if settings.enabled {
            let ledger_settings = LedgerSettings {
                database_url: settings.database_url.expose().to_string(),
                spool_dir: settings.spool_dir.clone(),
                node_id: settings.node_id.clone(),
                queue_capacity: settings.queue_capacity,
                batch_size: settings.batch_size,
                flush_interval: settings.flush_interval,
                ..LedgerSettings::default()
            };
            if let Some(dir) = sqlite_parent(settings.database_url.expose()) {
                std::fs::create_dir_all(dir)?;
            }
            let ledger = runtime.block_on(Ledger::start(ledger_settings))?;
            // Reports read through their own pool; a database that is down at
            // start only disables reports until restart, never serving.
            // The writer opens (and migrates) the same database in the
            // background; a busy SQLite file gets a few tries.
            let store = control.block_on(async {
                let mut tries = 0;
                loop {
                    match Store::open(settings.database_url.expose()).await {
                        Ok(store) => break Some(store),
                        Err(e) if tries < 10 => {
                            tries += 1;
                            tracing::debug!(error = %e, tries, "report store not ready; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "usage reports unavailable: database unreachable");
                            break None;
                        }
                    }
                }
            });
            (Some(ledger), store)
        } else {
            (None, None)
        };
        Ok(Accounting {
            ledger,
            store,
            prices,
            allow_unpriced: settings.allow_unpriced,
            durability: settings.durability,
            metrics,
            runtime,
            control,
        })
    }

    /// Whether `model` has a price (for the unpriced policy).
    pub fn is_priced(&self, tenant: Option<&str>, model: &str) -> bool {
        self.prices.load().table_for(tenant).lookup(model).is_some()
    }

    /// Cost in micro-dollars of `prompt` + `completion` tokens of `model`, if priced.
    pub fn cost_micros(
        &self,
        tenant: Option<&str>,
        model: &str,
        prompt: u64,
        completion: u64,
    ) -> Option<i64> {
        let usage = TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_prompt_tokens: 0,
            cache_write_tokens: 0,
        };
        let cost = self.prices.load().cost(tenant, model, &usage);
        cost.priced.then_some(cost.micros)
    }

    /// Whether responses end only once their record is durable
    /// (`ledger.durability: strict` with a ledger on).
    pub fn strict(&self) -> bool {
        self.ledger.is_some() && self.durability == sluice_config::Durability::Strict
    }

    /// Whether a request may start: under [`Self::strict`] only while its
    /// record would have somewhere durable to go.
    pub fn accepting(&self) -> bool {
        match &self.ledger {
            Some(ledger) if self.strict() => ledger.can_persist(),
            _ => true,
        }
    }

    /// Prices and records one request; returns its cost when priced, and,
    /// under [`Self::strict`], what resolves once the record is durable.
    pub fn record(&self, done: Finished<'_>) -> (Option<i64>, Option<DurableAck>) {
        let (usage, source) = match done.reported {
            Some(u) => (
                TokenUsage {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                    cached_prompt_tokens: u.cached_prompt_tokens,
                    cache_write_tokens: u.cache_write_tokens,
                },
                UsageSource::Reported,
            ),
            None => (
                TokenUsage {
                    prompt_tokens: count_tokens(
                        done.upstream_model,
                        &prompt_text(done.request_body),
                    ),
                    completion_tokens: count_tokens(done.upstream_model, done.delivered_text),
                    cached_prompt_tokens: 0,
                    cache_write_tokens: 0,
                },
                UsageSource::Counted,
            ),
        };
        let cost = self
            .prices
            .load()
            .cost(done.tenant, done.upstream_model, &usage);
        let labels = [done.model, done.provider];
        self.metrics
            .tokens
            .with_label_values(&[done.model, done.provider, "prompt"])
            .inc_by(usage.prompt_tokens);
        self.metrics
            .tokens
            .with_label_values(&[done.model, done.provider, "completion"])
            .inc_by(usage.completion_tokens);
        if cost.priced {
            self.metrics
                .cost_micros
                .with_label_values(&labels)
                .inc_by(cost.micros.max(0) as u64);
            self.metrics
                .cost_picos
                .with_label_values(&labels)
                .inc_by(cost.picos.max(0) as u64);
        } else {
            self.metrics.unpriced.with_label_values(&labels).inc();
        }
        let priced = cost.priced.then_some(cost.micros);
        let Some(ledger) = &self.ledger else {
            return (priced, None);
        };
        let record = UsageRecord {
            time_us: done.time_us,
            request_id: done.request_id.to_string(),
            tenant: done.tenant.map(str::to_string),
            key_id: done.key_id.map(str::to_string),
            model: done.model.to_string(),
            provider: done.provider.to_string(),
            upstream_model: done.upstream_model.to_string(),
            usage,
            usage_source: source,
            cost_micros: cost.micros,
            cost_picos: cost.picos,
            priced: cost.priced,
            latency_ms: done.latency_ms,
            ttft_ms: done.ttft_ms,
            http_status: done.status,
            stream: done.stream,
            end_state: done.end_state,
        };
        if self.strict() {
            return (priced, Some(ledger.record_durable(record)));
        }
        if let Err(e) = ledger.record(record) {
            // Only a failing disk gets here: the record is lost, loudly.
            tracing::error!(error = %e, "usage record lost");
        }
        (priced, None)
    }

    /// Writes what is queued and replays any spool from an earlier run, so
    /// that reads of the database (budget seeding) see every record.
    pub fn catch_up(&self) {
        if let Some(ledger) = &self.ledger {
            match self.runtime.block_on(ledger.flush()) {
                Ok(report) if report.spool_pending_records > 0 => tracing::warn!(
                    pending = report.spool_pending_records,
                    "spooled usage records not yet in the database; budgets seed without them"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ledger catch-up failed"),
            }
        }
    }

    /// What each tenant (`GroupKey::Tenant`) or key (`GroupKey::Key`) spent
    /// since `from_us`, from the ledger, in exact pico-dollars (round the
    /// sum once with `sluice_ledger::round_picos_to_micros`); empty when the
    /// ledger is unreachable.
    pub fn spent_since(&self, from_us: i64, by: sluice_ledger::GroupKey) -> Vec<(String, i128)> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let query = sluice_ledger::ReportQuery::new(from_us, i64::MAX, &[by]);
        self.control.block_on(async {
            use futures_util::StreamExt;
            let mut rows = store.report(&query);
            let mut out = Vec::new();
            while let Some(Ok(row)) = rows.next().await {
                if let Some(Some(name)) = row.value(by) {
                    out.push((name.to_string(), row.cost_picos));
                }
            }
            out
        })
    }

    /// The items stored for Responses API response `id` of `tenant`
    /// (`Ok(None)`: unknown or expired). Runs on the control runtime, where
    /// the store's pool lives.
    pub async fn load_conversation(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<Option<String>, GatewayError> {
        let Some(store) = self.store.clone() else {
            return Err(GatewayError::LedgerUnavailable);
        };
        let (id, tenant) = (id.to_string(), tenant.map(str::to_string));
        let found = self
            .control
            .spawn(async move { store.load_conversation(&id, tenant.as_deref()).await })
            .await;
        match found {
            Ok(Ok(items)) => Ok(items),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "stored responses unreadable");
                Err(GatewayError::LedgerUnavailable)
            }
            Err(_) => Err(GatewayError::LedgerUnavailable),
        }
    }

    /// Stores the items of Responses API response `id` for `tenant`;
    /// resolves once stored (false, logged: it could not be).
    pub async fn save_conversation(
        &self,
        id: String,
        tenant: Option<String>,
        items: String,
    ) -> bool {
        let Some(store) = self.store.clone() else {
            return false;
        };
        let saved = self
            .control
            .spawn(async move {
                store
                    .save_conversation(&id, tenant.as_deref(), &items, STORED_RESPONSE_TTL_US)
                    .await
            })
            .await;
        match saved {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "response not stored for previous_response_id");
                false
            }
            Err(_) => false,
        }
    }

    /// The report store, when the database was reachable at start.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The writer's counters, for `/metrics`.
    pub fn stats(&self) -> Option<sluice_ledger::LedgerStats> {
        self.ledger.as_ref().map(Ledger::stats)
    }

    /// Flushes the queue to the database, or to the spool (SIGTERM).
    pub fn shutdown(&self) {
        if let Some(ledger) = &self.ledger {
            if let Err(e) = self.runtime.block_on(ledger.shutdown()) {
                tracing::error!(error = %e, "ledger shutdown incomplete");
            }
        }
    }
}

fn sqlite_parent(url: &str) -> Option<&std::path::Path> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
}

/// The text of a request that becomes prompt tokens: message contents
/// (strings or text parts), `prompt`, or `input`. Used only when the
/// provider reported no usage.
pub fn prompt_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let mut out = String::new();
    let mut push = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    if let Some(messages) = v["messages"].as_array() {
        for m in messages {
            match &m["content"] {
                Value::String(s) => push(s),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .for_each(&mut push),
                _ => {}
            }
        }
    }
    for key in ["prompt", "input"] {
        match &v[key] {
            Value::String(s) => push(s),
            Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut push),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_text_collects_what_the_model_reads() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert_eq!(prompt_text(body), "be brief\nhello\n");
        assert_eq!(prompt_text(br#"{"model":"m","input":["a","b"]}"#), "a\nb\n");
        assert_eq!(prompt_text(b"nope"), "");
    }

    #[test]
    fn sqlite_parent_dirs() {
        assert_eq!(
            sqlite_parent("sqlite:sluice-data/ledger.db"),
            Some(std::path::Path::new("sluice-data"))
        );
        assert_eq!(sqlite_parent("sqlite:ledger.db"), None);
        assert_eq!(sqlite_parent("postgres://x/y"), None);
    }
}
