//! A throwaway PostgreSQL server for integration tests (cargo feature
//! `testing`), usable from any crate's tests:
//!
//! ```toml
//! [dev-dependencies]
//! sluice-ledger = { workspace = true, features = ["testing"] }
//! ```
//!
//! ```ignore
//! let Some(pg) = sluice_ledger::testing::PostgresServer::start_or_skip("my_test") else { return };
//! let url = pg.url();
//! ```
//!
//! [`PostgresServer::start`] runs `initdb` into a fresh temporary directory
//! and `pg_ctl start` on a free 127.0.0.1 port, with the unix socket inside
//! that directory (nothing shared with a system server). Binaries are looked
//! for in `$SLUICE_PG_BINDIR`, `pg_config --bindir`,
//! `/usr/lib/postgresql/*/bin` (newest first), then `$PATH`. Running as root
//! (CI containers), every server command runs as the `postgres` user via
//! `runuser`, since `initdb` refuses root. The server is stopped
//! (`-m immediate`) and its directory removed on drop.
//!
//! The server trades durability for speed (`fsync=off`): data survives
//! [`PostgresServer::stop`] / [`PostgresServer::start_again`] because the
//! OS keeps it, not a power cut. Fine for tests, never for anything else.
//!
//! For upgrade tests on either backend, [`create_schema_up_to`] leaves a
//! database as a release that knew only the older migrations did.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::{LedgerError, Store, StoreOptions};

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `initdb` / `pg_ctl` found: PostgreSQL server binaries are not installed.
    #[error("PostgreSQL server binaries not found (install postgresql, or set SLUICE_PG_BINDIR)")]
    BinariesMissing,
    /// A command could not be run or failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line, shortened.
        command: String,
        /// Exit status and output.
        detail: String,
    },
    /// Local file system trouble (temp dir, free port).
    #[error("test server setup: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether tests must fail rather than skip when a server is missing: the
/// `CI` environment variable is set to anything but empty, `0` or `false`.
pub fn servers_required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Creates the ledger schema at `url` (SQLite or PostgreSQL) with only the
/// migrations numbered up to `version`, as a release that knew no later
/// ones left it; [`crate::Store::open`] afterwards runs the rest.
pub async fn create_schema_up_to(url: &str, version: i64) -> Result<(), LedgerError> {
    let store = Store::connect(url, &StoreOptions::default()).await?;
    let migrated = store.migrate_up_to(version).await;
    store.close().await;
    migrated
}

/// A PostgreSQL server private to one test.
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    port: u16,
    /// Run server commands as `postgres` (we are root).
    as_postgres: bool,
    // Dropped last: the server is stopped in `Drop::drop` before this goes.
    dir: TempDir,
}

impl PostgresServer {
    /// Initialises and starts a new server; see the module docs.
    pub fn start() -> Result<PostgresServer, HarnessError> {
        let bin_dir = find_bin_dir().ok_or(HarnessError::BinariesMissing)?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("sluice-pg-").tempdir()?;
        std::fs::create_dir(dir.path().join("sock"))?;
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path()))?;
        }
        let mut server = PostgresServer {
            bin_dir,
            port: 0,
            as_postgres,
            dir,
        };
        let data = server.data_dir();
        server.run_server_command("initdb", |cmd| {
            cmd.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ]);
        })?;
        // Another process may take the free port between our probe and the
        // server's bind; try a few.
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(HarnessError::BinariesMissing))
    }

    /// [`PostgresServer::start`] for a test: `None` (and a note on stderr)
    /// when the binaries are missing outside CI, so the test can return early.
    ///
    /// # Panics
    ///
    /// When the server cannot be started and either CI is set
    /// ([`servers_required`]) or the binaries exist but failed: a test that
    /// needs a server must fail loudly, not pass by skipping.
    #[allow(clippy::panic, clippy::print_stderr)] // test harness: failing loudly is its job
    pub fn start_or_skip(test_name: &str) -> Option<PostgresServer> {
        match PostgresServer::start() {
            Ok(server) => Some(server),
            Err(HarnessError::BinariesMissing) if !servers_required() => {
                eprintln!("note: skipping {test_name}: PostgreSQL server binaries not found (CI would fail here)");
                None
            }
            Err(e) => panic!("{test_name}: cannot start PostgreSQL: {e}"),
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth, no TLS).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates database `name` (letters, digits and `_` only) and returns
    /// its URL, so several tests can share one server without seeing each
    /// other's tables.
    pub fn create_database(&self, name: &str) -> Result<String, HarnessError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(HarnessError::Command {
                command: "create database".into(),
                detail: format!("invalid database name {name:?}"),
            });
        }
        let port = self.port.to_string();
        let sql = format!("CREATE DATABASE {name}");
        run(Command::new(self.bin_dir.join("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                &sql,
            ])
            .stdin(std::process::Stdio::null()))?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: clients are cut
    /// off mid-transaction, as in a crash). Data committed so far stays.
    pub fn stop(&self) -> Result<(), HarnessError> {
        let data = self.data_dir();
        self.run_server_command("pg_ctl", |cmd| {
            cmd.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
        })
    }

    /// Starts the (stopped) server again on the same port and waits until it
    /// accepts connections.
    pub fn start_again(&self) -> Result<(), HarnessError> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50",
            self.port,
            self.dir.path().join("sock").display()
        );
        self.run_server_command("pg_ctl", |cmd| {
            cmd.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(&options)
                .arg("start");
        })
        .map_err(|e| match e {
            HarnessError::Command { command, detail } => HarnessError::Command {
                command,
                detail: format!("{detail}\nserver log:\n{}", tail(&log)),
            },
            other => other,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run_server_command(
        &self,
        program: &str,
        args: impl FnOnce(&mut Command),
    ) -> Result<(), HarnessError> {
        let binary = self.bin_dir.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&binary);
            cmd
        } else {
            Command::new(&binary)
        };
        args(&mut cmd);
        // pg_ctl's children inherit our stdout: keep test output clean.
        cmd.stdin(std::process::Stdio::null());
        run(&mut cmd).map(|_| ())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.stop();
        }
    }
}

fn run(cmd: &mut Command) -> Result<Output, HarnessError> {
    let described = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| HarnessError::Command {
        command: described.clone(),
        detail: e.to_string(),
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(HarnessError::Command {
            command: described,
            detail: format!(
                "{}\nstdout: {}\nstderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(2000);
    text.get(start..).unwrap_or_default().to_string()
}

fn free_port() -> Result<u16, HarnessError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if any.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("SLUICE_PG_BINDIR").map(PathBuf::from) {
        return has_server(&dir).then_some(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_server(dir))
}
