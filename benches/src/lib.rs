//! Criterion benchmarks of sluice's hot paths, each beside a naive baseline.
//!
//! Start at `benches/request_parse.rs`. Run all with `cargo bench -p
//! sluice-benches`; `cargo test --workspace --all-targets` runs each once as a
//! smoke test. Results and the machine they were taken on are in README.md.
//! This library holds the shared request fixtures.

/// A chat request of roughly `prompt_bytes` of message text, as an SDK sends it.
pub fn chat_request(prompt_bytes: usize) -> Vec<u8> {
    let content = "lorem ipsum dolor sit amet ".repeat(prompt_bytes / 27 + 1);
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": content},
        ],
        "temperature": 0.7,
        "max_tokens": 256,
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    })
    .to_string()
    .into_bytes()
}
