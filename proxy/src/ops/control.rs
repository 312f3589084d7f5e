//! The control runtime: a small tokio runtime of its own for work that is
//! not a client request's hot path and must neither run on pingora's
//! request threads nor queue behind the ledger writer: auth's cold path
//! (keys looked up in the database), admin and report database calls,
//! budget seeding at start, and the Redis stream bus.

/// Threads of the control runtime: its work is I/O waits, not CPU.
const CONTROL_THREADS: usize = 1;

/// The control runtime; dropping it stops its tasks.
pub struct ControlRuntime {
    /// The runtime itself.
    runtime: tokio::runtime::Runtime,
}

impl ControlRuntime {
    /// Starts the runtime's thread.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CONTROL_THREADS)
            .thread_name("sluice-control")
            .enable_all()
            .build()?;
        Ok(ControlRuntime { runtime })
    }

    /// A handle to spawn work on from any thread.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Runs `future` to completion (start-up work only, off any runtime).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
