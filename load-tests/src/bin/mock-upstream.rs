//! `mock-upstream`: the mock OpenAI server as a process, for load tests.

use clap::Parser;
use sluice_load_tests::{MockOptions, MockStats};
use std::sync::Arc;
use std::time::Duration;

/// A mock OpenAI-compatible upstream with fixed latency.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Delay before response headers, in microseconds.
    #[arg(long, default_value_t = 0)]
    latency_us: u64,
    /// Content chunks per streamed reply.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Delay before each streamed chunk, in microseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        let options = MockOptions {
            latency: Duration::from_micros(args.latency_us),
            chunks: args.chunks,
            chunk_delay: Duration::from_micros(args.chunk_delay_us),
            record_requests: false,
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        sluice_load_tests::mock::serve(listener, options, Arc::new(MockStats::default()), shutdown)
            .await;
        Ok(())
    })
}
