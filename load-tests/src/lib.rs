//! A mock OpenAI upstream and a load generator, for tests and load tests.
//!
//! Start at [`MockUpstream`]: an HTTP/1.1 + h2c server on a real socket that
//! speaks OpenAI's wire format (chat completions plain and SSE, completions,
//! embeddings, models) and Anthropic's, Gemini's, Azure's and Bedrock's at
//! their native paths, with a tool-call mode (`x-mock-tool-call`), and can
//! misbehave on request (status codes, delays, aborting a stream half-way)
//! through `x-mock-*` headers; it counts what it
//! was sent so tests can assert on the upstream side. [`loadgen`] drives
//! closed-loop load and reports throughput and latency percentiles;
//! [`servers`] starts real backing servers (Redis) for tests. The
//! binaries `mock-upstream` and `loadgen` wrap both for scripts.

pub mod loadgen;
pub mod mock;
mod mock_body;
mod mock_providers;
pub mod servers;

pub use mock::{MockOptions, MockStats, MockUpstream, RecordedRequest};
