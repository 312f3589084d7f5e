//! Shared test harness: the real `sluice` binary on free ports (public and
//! admin), in front of an in-process mock upstream, over real sockets.

#![allow(dead_code)]

use serde::Deserialize;
use sluice::app::routes::{RouteKind, Served};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sluice-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `sluice serve`, killed on drop.
pub struct Sluice {
    child: Child,
    /// The public listener (`--listen`).
    pub addr: SocketAddr,
    /// The admin listener (`--admin-listen`).
    pub admin_addr: SocketAddr,
    dir: TempDir,
    /// The working directory (where the default ledger lives).
    work: PathBuf,
    /// The config file.
    config: PathBuf,
    /// The public listener's scheme: `http`, or `https` when started with
    /// [`Sluice::start_https`].
    scheme: &'static str,
    /// The admin listener's: `https` when started with
    /// [`Sluice::start_with_admin_tls`].
    admin_scheme: &'static str,
}

/// How to start one `sluice serve`.
struct Launch {
    work: PathBuf,
    config: PathBuf,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// `--upgrade`: take the sockets over from a running one.
    upgrade: bool,
}

impl Launch {
    /// Spawns it, logging into `dir`; does not wait.
    fn spawn(self, dir: TempDir, env: &[(&str, &str)]) -> Sluice {
        let log = std::fs::File::create(dir.0.join("sluice.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &self.addr.to_string(), "--threads", "2"])
            .args(["--admin-listen", &self.admin_addr.to_string()])
            .env("RUST_LOG", "info")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .current_dir(&self.work) // the default SQLite ledger lands in the scratch dir
            .stdout(Stdio::null())
            .stderr(log);
        if self.upgrade {
            command.arg("--upgrade");
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn sluice");
        Sluice {
            child,
            addr: self.addr,
            admin_addr: self.admin_addr,
            dir,
            work: self.work,
            config: self.config,
            scheme: "http",
            admin_scheme: "http",
        }
    }
}

impl Sluice {
    /// Starts sluice with `config_yaml` and waits until `/health/ready` answers 200.
    pub async fn start(config_yaml: &str) -> Sluice {
        Self::start_with_env(config_yaml, &[]).await
    }

    pub async fn start_with_env(config_yaml: &str, env: &[(&str, &str)]) -> Sluice {
        let dir = TempDir::new();
        let config = dir.write("sluice.yaml", config_yaml);
        Self::spawn(dir, config, env).await
    }

    /// Starts sluice serving HTTPS (`server.tls` in `config_yaml`); `client`
    /// trusts its certificate and probes readiness.
    pub async fn start_https(config_yaml: &str, client: reqwest::Client) -> Sluice {
        let mut sluice = Self::spawn_fresh(config_yaml);
        sluice.scheme = "https";
        sluice.wait_ready_with(client).await;
        sluice
    }

    /// Starts sluice whose admin listener serves HTTPS (`server.admin_tls`
    /// in `config_yaml`); `admin` is a client it accepts (its CA trusted, its
    /// certificate presented when mutual TLS is on).
    pub async fn start_with_admin_tls(config_yaml: &str, admin: reqwest::Client) -> Sluice {
        let mut sluice = Self::spawn_fresh(config_yaml);
        sluice.admin_scheme = "https";
        sluice.wait_ready_both(reqwest::Client::new(), admin).await;
        sluice
    }

    /// Spawns sluice on `config_yaml` in a new scratch dir, not waiting.
    fn spawn_fresh(config_yaml: &str) -> Sluice {
        let dir = TempDir::new();
        let config = dir.write("sluice.yaml", config_yaml);
        let launch = Launch {
            work: dir.0.clone(),
            config,
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            admin_addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            upgrade: false,
        };
        launch.spawn(dir, &[])
    }

    /// Starts another sluice in an existing scratch dir (a restart: same
    /// ledger). The new instance removes nothing on drop.
    pub async fn start_in(dir: &std::path::Path, config: &std::path::Path) -> Sluice {
        // Logs go to a subdirectory (removed with it); the ledger is shared.
        let scratch = TempDir(dir.join(format!("restart-{}", NEXT.fetch_add(1, Ordering::SeqCst))));
        std::fs::create_dir_all(&scratch.0).unwrap();
        Self::spawn_in(scratch, dir.to_path_buf(), config.to_path_buf(), &[]).await
    }

    async fn spawn(dir: TempDir, config: PathBuf, env: &[(&str, &str)]) -> Sluice {
        let work = dir.0.clone();
        Self::spawn_in(dir, work, config, env).await
    }

    async fn spawn_in(
        dir: TempDir,
        work: PathBuf,
        config: PathBuf,
        env: &[(&str, &str)],
    ) -> Sluice {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let launch = Launch {
            work,
            config,
            addr,
            admin_addr,
            upgrade: false,
        };
        let sluice = launch.spawn(dir, env);
        sluice.wait_ready().await;
        sluice
    }

    /// Starts a new sluice with `--upgrade` on the same config, addresses
    /// and working directory (so the same default `server.upgrade_sock`):
    /// it takes the listening sockets over once this one is sent SIGQUIT
    /// (not sent here). Returns once the new one waits for them. `env` is
    /// added to the new one's environment.
    pub async fn spawn_upgrade(&self, env: &[(&str, &str)]) -> Sluice {
        let scratch = TempDir(
            self.work
                .join(format!("upgrade-{}", NEXT.fetch_add(1, Ordering::SeqCst))),
        );
        std::fs::create_dir_all(&scratch.0).unwrap();
        let launch = Launch {
            work: self.work.clone(),
            config: self.config.clone(),
            addr: self.addr,
            admin_addr: self.admin_addr,
            upgrade: true,
        };
        let new = launch.spawn(scratch, env);
        new.wait_log("send it SIGQUIT", Duration::from_secs(20))
            .await;
        new
    }

    /// Waits until the log holds `text`.
    pub async fn wait_log(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            if Instant::now() > deadline {
                panic!("{text:?} not logged in {within:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until both listeners answer `/health/ready` with 200.
    async fn wait_ready(&self) {
        self.wait_ready_with(reqwest::Client::new()).await;
    }

    /// [`Sluice::wait_ready`], asking the public listener with `public`.
    async fn wait_ready_with(&self, public: reqwest::Client) {
        self.wait_ready_both(public, reqwest::Client::new()).await;
    }

    /// [`Sluice::wait_ready`] with a client for each listener.
    async fn wait_ready_both(&self, public: reqwest::Client, admin: reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (client, url) in [
            (&public, self.public_url("/health/ready")),
            (&admin, self.admin_url("/health/ready")),
        ] {
            loop {
                if let Ok(r) = client.get(&url).send().await {
                    if r.status() == 200 {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    panic!("sluice did not become ready; log:\n{}", self.log());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    /// `path` on the listener that serves it, by the route table: the admin
    /// listener for the admin and stream control APIs, metrics and docs,
    /// the public one for everything else.
    pub fn url(&self, path: &str) -> String {
        let addr = self.addr_for(path);
        let scheme = if addr == self.addr {
            self.scheme
        } else {
            "http"
        };
        format!("{scheme}://{addr}{path}")
    }

    /// The listener that serves `path` (see [`Sluice::url`]).
    pub fn addr_for(&self, path: &str) -> SocketAddr {
        // Every admin route classifies by its path alone under GET.
        match RouteKind::classify(&http::Method::GET, path).served() {
            Served::Admin => self.admin_addr,
            Served::Public | Served::Both => self.addr,
        }
    }

    /// `path` on the public listener, whatever it serves.
    pub fn public_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// `path` on the admin listener, whatever it serves.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.admin_scheme, self.admin_addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `QUIT`, ...) without waiting.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (without blocking the runtime) up to `within` for the process
    /// to exit; `None` if it still runs.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The scratch directory sluice runs in (its default ledger lives here).
    pub fn dir(&self) -> &std::path::Path {
        &self.work
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("sluice.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no flush (a crash, an OOM kill).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The config file it was started with (rewrite it to reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Config with one upstream `mock` at `base_url`, an alias `fast` rewritten
/// to `mock-model`, and `extra` appended under `models:`.
pub fn config_for(base_url: &str, extra_models: &str) -> String {
    format!(
        r#"
server:
  max_body_bytes: 1048576
upstreams:
  mock:
    base_url: {base_url}
    api_key: sk-upstream-secret
    headers: {{X-Team: research}}
    first_byte_timeout_ms: 1500
    idle_timeout_ms: 1500
models:
  - {{name: fast, upstream: mock, upstream_model: mock-model}}
{extra_models}"#
    )
}

/// OpenAI's error body, read as the OpenAI SDK reads it; unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiErrorBody {
    pub error: OpenAiError,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// Sends `body` to `path` and returns (status, parsed OpenAI error).
pub async fn expect_error(url: &str, body: impl Into<reqwest::Body>) -> (u16, OpenAiError) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let parsed: OpenAiErrorBody = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not an OpenAI error body ({e}): {text}"));
    (status, parsed.error)
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// `/metrics` once no request other than the scrape itself is in flight, so
/// every finished request's observations are in it.
pub async fn settled_metrics(sluice: &Sluice) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(sluice.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let busy = text.lines().any(|l| {
            l.starts_with("sluice_requests_in_flight{")
                && !l.contains(r#"route="metrics""#)
                && !l.ends_with(" 0")
        });
        if !busy {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    text
}

/// Runs `tests/sdk/<script>` with sluice's `/v1` base URL and `args`;
/// returns its stdout, failing with its output and sluice's log when it fails.
pub async fn run_sdk_script(sluice: &Sluice, script: &str, args: &[&str]) -> String {
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut all = vec![script, sluice.url("/v1")];
    all.extend(args.iter().map(|a| a.to_string()));
    // The stream control API is on the admin listener.
    let admin = sluice.admin_url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&all)
            .env("SLUICE_ADMIN_URL", admin)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "SDK run failed:\n{}\n{}\nsluice log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        sluice.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether python3 can import `module` (an official SDK the test drives).
/// Under `CI` a missing one fails the test; otherwise it is skipped with a note.
pub fn python_with(module: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("python3 with the `{module}` package is required under CI (pip install {module})");
    }
    if !found {
        // The skip is the test's only output: say why.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: python3 -m pip install {module} to run this test");
        }
    }
    found
}

/// Config with every provider kind behind the mock at `root`, one model
/// each (the names in [`EVERY_MODEL`]), one attempt per request.
pub fn every_provider(root: &str) -> String {
    format!(
        r#"
routing: {{max_attempts: 1}}
upstreams:
  oai: {{base_url: "{root}/v1", api_key: k}}
  az: {{kind: azure, base_url: "{root}", api_key: k}}
  claude: {{kind: anthropic, base_url: "{root}/v1", api_key: k}}
  gem: {{kind: gemini, base_url: "{root}/v1beta", api_key: k}}
  bed: {{kind: bedrock, base_url: "{root}", region: us-east-1, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}
models:
  - {{name: via-openai, upstream: oai, upstream_model: gpt-4o-mini}}
  - {{name: via-azure, upstream: az, upstream_model: my-deployment}}
  - {{name: via-anthropic, upstream: claude, upstream_model: claude-3-5-haiku-latest}}
  - {{name: via-gemini, upstream: gem, upstream_model: gemini-2.0-flash}}
  - {{name: via-bedrock, upstream: bed, upstream_model: anthropic.claude-3-haiku-20240307-v1:0}}
"#
    )
}

/// The models of [`every_provider`], comma-separated for the SDK scripts.
pub const EVERY_MODEL: &str = "via-openai,via-azure,via-anthropic,via-gemini,via-bedrock";
