//! Every provider's answer on its way back to the client: a body or an
//! SSE stream of any bytes, cut into any pieces, translated to OpenAI's
//! shape without a panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_config::load_str;
use sluice_providers::{Endpoint, Provider, ReplyContext};
use std::sync::OnceLock;

const KINDS: [&str; 5] = ["openai", "azure", "anthropic", "gemini", "bedrock"];

fn providers() -> &'static Vec<Provider> {
    static PROVIDERS: OnceLock<Vec<Provider>> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        KINDS
            .iter()
            .map(|kind| {
                let yaml = format!(
                    "upstreams:\n  u: {{kind: {kind}, base_url: 'https://upstream.example.com/v1', api_key: sk-fuzz, \
                     region: us-east-1, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}\n"
                );
                let config = load_str(&yaml, &|_| None).expect("fuzz config");
                Provider::from_settings(&config.upstreams[0])
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: provider and stream flag; byte 1: piece size; the rest: the body.
    let [choice, size, body @ ..] = data else {
        return;
    };
    let provider = &providers()[usize::from(*choice) % KINDS.len()];
    let reply = ReplyContext {
        endpoint: Endpoint::ChatCompletions,
        stream: choice & 0x80 != 0,
        include_usage: choice & 0x40 != 0,
        strip_usage_chunk: choice & 0x20 != 0,
        model: "m".to_string(),
    };
    let status = if choice & 0x10 != 0 { 400 } else { 200 };
    let mut translator = provider.response_translator(&reply, status);
    for piece in body.chunks(usize::from(*size).max(1)) {
        let _ = translator.relay(Bytes::copy_from_slice(piece));
    }
    let _ = translator.finish();
    let _ = translator.usage();
});
