//! OpenAI SSE on the way back: reading each `data:` event for usage and text
//! and relaying the bytes on, as the pass-through path does for every OpenAI
//! and OpenAI-compatible stream. sluice's `UsageTracker` (borrowed parse of
//! `choices[].delta.content` and `usage`, the bytes relayed without a copy)
//! against the naive way: split events out of a `String` buffer, parse each
//! into `serde_json::Value`, serialise it again and append it to the output.

#![allow(clippy::panic, clippy::unwrap_used)] // A bench that silently timed the error path would lie.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_providers::UsageTracker;
use std::hint::black_box;

/// The events of one streamed chat completion with `n` content deltas, the
/// finish chunk, the usage-only chunk and `[DONE]`, as one string.
fn stream_text(n: usize) -> String {
    let chunk = |delta: &str, finish: &str| {
        format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":null}}\n\n")
    };
    let mut out = chunk(r#"{"role":"assistant","content":""}"#, "null");
    for i in 0..n {
        out.push_str(&chunk(&format!("{{\"content\":\"tok{i} \"}}"), "null"));
    }
    out.push_str(&chunk("{}", "\"stop\""));
    out.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":100,\"total_tokens\":112}}\n\n");
    out.push_str("data: [DONE]\n\n");
    out
}

/// The stream as the reads that deliver it: one event per read.
fn per_event(text: &str) -> Vec<Bytes> {
    text.split_inclusive("\n\n")
        .map(|e| Bytes::copy_from_slice(e.as_bytes()))
        .collect()
}

/// The stream as reads of `size` bytes, cutting events anywhere.
fn fixed_reads(text: &str, size: usize) -> Vec<Bytes> {
    text.as_bytes()
        .chunks(size)
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Naive: buffer as text, find each blank line, parse the event into a
/// `Value`, read the content and usage from it, re-serialise, re-frame.
fn naive_relay(reads: &[Bytes]) -> (usize, String, u64) {
    let mut pending = String::new();
    let mut text = String::new();
    let mut usage = 0;
    let mut sent = 0;
    for read in reads {
        pending.push_str(std::str::from_utf8(read).unwrap());
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let data = event.trim_end().strip_prefix("data: ").unwrap_or("");
            if data == "[DONE]" {
                sent += event.len();
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(data).unwrap();
            if let Some(t) = value["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(n) = value["usage"]["total_tokens"].as_u64() {
                usage = n;
            }
            let out = format!("data: {}\n\n", serde_json::to_string(&value).unwrap());
            sent += out.len();
        }
    }
    (sent, text, usage)
}

fn relay(c: &mut Criterion) {
    let mut group = c.benchmark_group("openai_sse_relay");
    for chunks in [10usize, 100] {
        let text = stream_text(chunks);
        let cases = [
            ("event_per_read", per_event(&text)),
            ("64B_reads", fixed_reads(&text, 64)),
        ];
        // Per content chunk, so the figure reads as cost per relayed token.
        group.throughput(Throughput::Elements(chunks as u64));
        for (shape, reads) in &cases {
            group.bench_with_input(
                BenchmarkId::new(format!("sluice_usage_tracker/{shape}"), chunks),
                reads,
                |b, reads| {
                    b.iter(|| {
                        let mut t = UsageTracker::new(true, true);
                        let mut sent = 0;
                        for read in reads {
                            sent += t.relay(read.clone()).len();
                        }
                        sent += t.finish().len();
                        assert!(t.saw_done() && t.reported().is_some());
                        black_box((sent, t.delivered_text().len()))
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("naive_value_reserialise/{shape}"), chunks),
                reads,
                |b, reads| b.iter(|| black_box(naive_relay(black_box(reads)))),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
