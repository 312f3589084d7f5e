//! `sluice`: the gateway binary.
//!
//! Start at [`gateway`]: `Gateway` is the pingora application that serves
//! every request — health, metrics and `/v1/models` locally, and the OpenAI
//! endpoints through [`forward`]. [`server`] assembles the pingora server,
//! [`error`] is the one mapping from failures to OpenAI error bodies, and
//! [`cli`] is the command line. Only this crate knows pingora.

mod access;
mod accounting;
mod admin;
mod admin_keys;
mod alert;
mod cli;
mod error;
mod failover;
mod forward;
mod gateway;
mod logging;
mod metrics;
mod report;
mod server;
mod streams;
mod upstream;

/// mimalloc instead of glibc malloc: the request path allocates and frees
/// many small objects across threads, where glibc's arenas spent 13% of the
/// gateway's CPU (load-tests/PROFILE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use cli::{Cli, Command, KeysCommand, LedgerCommand, LogFormatArg, ServeArgs, UsageCommand};
use sluice_config::{Config, ConfigError, LogFormat};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { path }) => check_config(&path),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Usage(UsageCommand::Export(args))) => report::export(&args),
        Some(Command::Ledger(LedgerCommand::Verify { config })) => {
            report::verify(config.as_deref())
        }
        Some(Command::Keys(KeysCommand::Create(args))) => report::create_key(&args),
        None => serve(cli.serve),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match sluice_config::load_file(path) {
        Ok(config) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} upstreams, {} models)",
                path.display(),
                config.upstreams.len(),
                config.models.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => sluice_config::load_file(path)?,
        None => Config::embedded_defaults(&|name| std::env::var(name).ok())?,
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(threads) = args.threads.filter(|t| *t > 0) {
        config.server.threads = threads;
    }
    if let Some(format) = args.log_format {
        config.server.log_format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(config) => config,
        Err(e) => {
            let source = args.config.as_ref().map_or_else(
                || "embedded defaults".to_string(),
                |p| p.display().to_string(),
            );
            let _ = writeln!(
                std::io::stderr(),
                "sluice: cannot load config ({source}): {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    logging::init(config.server.log_format);
    if config.models.is_empty() {
        tracing::warn!(
            "no models configured: every model answers 404 (set OPENAI_API_KEY or pass --config)"
        );
    }
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sluice failed to start");
            ExitCode::FAILURE
        }
    }
}
