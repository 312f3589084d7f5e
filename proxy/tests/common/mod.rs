//! Shared test harness: the real `sluice` binary on a free port, in front of
//! an in-process mock upstream, over real sockets.

#![allow(dead_code)]

use serde::Deserialize;
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
    pub addr: SocketAddr,
    dir: TempDir,
    /// The working directory (where the default ledger lives).
    work: PathBuf,
    /// The config file it was started with.
    config: PathBuf,
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
        let log = std::fs::File::create(dir.0.join("sluice.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &addr.to_string(), "--threads", "2"])
            .env("RUST_LOG", "info")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .current_dir(&work) // the default SQLite ledger lands in the scratch dir
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn sluice");
        let sluice = Sluice {
            child,
            addr,
            dir,
            work,
            config,
        };
        sluice.wait_ready().await;
        sluice
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("sluice did not become ready; log:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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

    /// Sends `signal` (`HUP`, `TERM`, ...) without waiting.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
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
pub async fn settled_metrics(base: &str) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(format!("{base}/metrics"))
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
