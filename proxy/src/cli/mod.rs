//! The command line: `sluice [serve]`, `check-config`, `usage export`,
//! `ledger verify`, `keys create`. [`args`] declares them; [`commands`]
//! runs the ones that work on the ledger database without a gateway.

pub mod args;
pub mod commands;

use args::{Cli, Command, KeysCommand, LedgerCommand, LogFormatArg, ServeArgs, UsageCommand};
use clap::Parser;
use sluice_config::{Config, ConfigError, LogFormat};
use std::io::Write;
use std::process::ExitCode;

/// Runs the command line: parses the arguments and does what they say.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { path }) => check_config(&path),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Usage(UsageCommand::Export(args))) => commands::export(&args),
        Some(Command::Ledger(LedgerCommand::Verify { config })) => {
            commands::verify(config.as_deref())
        }
        Some(Command::Keys(KeysCommand::Create(args))) => commands::create_key(&args),
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
    if let Some(admin_listen) = args.admin_listen {
        config.server.admin_listen = admin_listen;
    }
    config.server.check_listeners()?;
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
    // Held until the server has stopped: dropping it flushes exported spans.
    let _log_guard = crate::ops::logging::init(config.server.log_format, &config.tracing);
    let mut config = config;
    let local = match crate::local::start::start_engines(&mut config, args.offline) {
        Ok(local) => local,
        Err(e) => {
            tracing::error!(error = %e, "sluice failed to start");
            return ExitCode::FAILURE;
        }
    };
    if config.models.is_empty() {
        tracing::warn!("no models configured: every model answers 404 (pass --config)");
    }
    let start = if args.upgrade {
        crate::Start::Upgrade
    } else {
        crate::Start::Fresh
    };
    let path = args.config.clone();
    let reload = crate::app::server::ReloadFrom {
        source: Box::new(move || load(&args)),
        path,
    };
    match crate::run(config, local, start, Some(reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sluice failed to start");
            ExitCode::FAILURE
        }
    }
}
