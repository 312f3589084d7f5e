//! Real backing servers for tests: a `redis-server` on a free loopback port.
//!
//! Tests that need one call [`RedisServer::start`]; when the binary is not
//! installed they get `None` and should skip — except under `CI`, where the
//! harness panics so a missing install step can never pass silently.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a test that lacks `what` must fail (under CI) rather than skip.
pub fn require<T>(what: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        // Deliberately loud: CI must install what the tests need.
        #[allow(clippy::panic)]
        {
            panic!("{what} is required under CI but is not installed");
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping: {what} is not installed (set CI=1 to make this fail)"
    );
    None
}

impl RedisServer {
    /// Starts a server on a free port, or `None` if `redis-server` is missing
    /// (a panic under `CI`).
    pub fn start() -> Option<Self> {
        let port = free_port().ok()?;
        let mut server = RedisServer { port, child: None };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => require("redis-server"),
            Err(e) => {
                #[allow(clippy::panic)]
                {
                    panic!("redis-server failed to start: {e}");
                }
            }
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other(
            "redis-server did not start listening",
        ))
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (the port stays reserved for [`Self::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
