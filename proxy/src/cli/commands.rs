//! `sluice usage export`, `sluice ledger verify` and `sluice keys create`:
//! the ledger database from the command line, without a running gateway.

use super::args::{CreateKeyArgs, ExportArgs};
use sluice_config::Config;
use sluice_ledger::{GroupKey, ReportQuery, Store};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn fail(message: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "sluice: {message}");
    ExitCode::FAILURE
}

fn config(path: Option<&Path>) -> Result<Config, sluice_config::ConfigError> {
    match path {
        Some(p) => sluice_config::load_file(p),
        None => Config::embedded_defaults(&|name| std::env::var(name).ok()),
    }
}

fn time(text: &str, field: &str) -> Result<i64, String> {
    crate::admin::usage::parse_time_us(text)
        .ok_or_else(|| format!("--{field} must be an RFC 3339 time or YYYY-MM-DD, got {text:?}"))
}

/// Opens the ledger database named by `config` and runs `work` on it.
fn with_store<F, Fut>(config: &Config, work: F) -> ExitCode
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        match Store::open(config.ledger.database_url.expose()).await {
            Ok(store) => work(store).await,
            Err(e) => fail(format!("cannot open the ledger database: {e}")),
        }
    })
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `sluice usage export`.
pub fn export(args: &ExportArgs) -> ExitCode {
    let config = match config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (from, to) = match (time(&args.from, "from"), time(&args.to, "to")) {
        (Ok(f), Ok(t)) if f < t => (f, t),
        (Ok(_), Ok(_)) => return fail("--from must be before --to"),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let mut keys = Vec::new();
    for name in args.group_by.split(',').filter(|s| !s.is_empty()) {
        match GroupKey::parse(name.trim()) {
            Some(k) => keys.push(k),
            None => return fail(format!("unknown --group-by key {name:?}")),
        }
    }
    let mut query = ReportQuery::new(from, to, &keys);
    if let Some(t) = &args.tenant {
        query = query.for_tenant(t.clone());
    }
    let csv = match args.format.as_str() {
        "csv" => true,
        "json" => false,
        other => return fail(format!("--format must be csv or json, got {other:?}")),
    };
    with_store(&config, |store| async move {
        let rows = store.report(&query);
        let out = std::io::stdout().lock();
        let written = if csv {
            sluice_ledger::export::write_csv(&query, rows, out).await
        } else {
            sluice_ledger::export::write_json_lines(rows, out).await
        };
        match written {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(format!("export failed: {e}")),
        }
    })
}

/// `sluice ledger verify`.
pub fn verify(path: Option<&Path>) -> ExitCode {
    let config = match config(path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    with_store(&config, |store| async move {
        match store.verify().await {
            Ok(report) => {
                let mut out = std::io::stdout().lock();
                for chain in &report.chains {
                    let _ = writeln!(out, "{chain:?}");
                }
                match report.first_break() {
                    None => {
                        let _ = writeln!(out, "ledger intact: {} chain(s)", report.chains.len());
                        ExitCode::SUCCESS
                    }
                    Some(b) => fail(format!("chain broken: {b}")),
                }
            }
            Err(e) => fail(format!("verify failed: {e}")),
        }
    })
}

/// `sluice keys create`.
pub fn create_key(args: &CreateKeyArgs) -> ExitCode {
    let config = match config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (plaintext, hash) = sluice_filters::auth::generate_key();
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.tenant, &hash.to_hex()[..8]));
    let mut spec = serde_json::json!({"id": id});
    if let Some(models) = &args.models {
        let list: Vec<&str> = models
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        spec["models"] = serde_json::json!(list);
    }
    if let Some(p) = &args.priority {
        spec["priority"] = serde_json::json!(p);
    }
    let raw: sluice_config::raw::RawKey = match serde_json::from_value(spec) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let names: Vec<String> = config.models.iter().map(|m| m.name.clone()).collect();
    if let Err(e) = sluice_config::key_from_spec(&raw, hash.0, "key", &names) {
        return fail(e);
    }
    let stored = sluice_ledger::StoredKey {
        key_id: id.clone(),
        tenant: args.tenant.clone(),
        key_sha256: hash.to_hex(),
        spec: serde_json::to_string(&raw).unwrap_or_default(),
        enabled: true,
    };
    with_store(&config, |store| async move {
        if let Err(e) = store.insert_key(&stored).await {
            return fail(format!("cannot store the key (is the id taken?): {e}"));
        }
        let out = serde_json::json!({"id": id, "tenant": args.tenant, "key": plaintext});
        let _ = writeln!(std::io::stdout(), "{out}");
        ExitCode::SUCCESS
    })
}
