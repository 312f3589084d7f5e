//! Client dialects: a Messages or Responses request converted to the chat
//! shape the adapters read, and a chat stream rewritten into the client's
//! dialect event by event. Each beside a naive baseline that does the same
//! reshaping through `serde_json::Value` (parse into a tree, build a tree,
//! print it), as a first implementation would.

#![allow(clippy::panic, clippy::unwrap_used)] // A bench that silently timed the error path would lie.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use sluice_providers::dialects::messages::{self, MessagesWriter};
use sluice_providers::dialects::responses::{self, ResponsesRequest, ResponsesWriter};
use std::hint::black_box;

/// Content events per benchmarked stream.
const EVENTS: usize = 100;

fn text(bytes: usize) -> String {
    "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1)
}

fn messages_request() -> Vec<u8> {
    json!({
        "model": "claude", "max_tokens": 256, "stream": true,
        "system": [{"type": "text", "text": "You are a helpful assistant.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": text(1024)}]}],
        "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    })
    .to_string()
    .into_bytes()
}

fn responses_request() -> Vec<u8> {
    json!({
        "model": "gpt", "max_output_tokens": 256, "stream": true,
        "instructions": "You are a helpful assistant.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text(1024)}]}],
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    })
    .to_string()
    .into_bytes()
}

/// The naive conversion: the whole request as a tree, a new tree, printed.
fn naive_messages_to_chat(body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap();
    let mut out = vec![];
    for block in v["system"].as_array().into_iter().flatten() {
        out.push(json!({"role": "system", "content": [{"type": "text", "text": block["text"], "cache_control": block["cache_control"]}]}));
    }
    for m in v["messages"].as_array().into_iter().flatten() {
        let parts: Vec<Value> = m["content"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| json!({"type": "text", "text": b["text"]}))
            .collect();
        out.push(json!({"role": m["role"], "content": parts}));
    }
    let tools: Vec<Value> = v["tools"].as_array().into_iter().flatten().map(|t| json!({"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}})).collect();
    serde_json::to_vec(&json!({"model": v["model"], "max_tokens": v["max_tokens"], "stream": v["stream"], "messages": out, "tools": tools})).unwrap()
}

fn naive_responses_to_chat(body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap();
    let mut out = vec![json!({"role": "system", "content": v["instructions"]})];
    for m in v["input"].as_array().into_iter().flatten() {
        let parts: Vec<Value> = m["content"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| json!({"type": "text", "text": b["text"]}))
            .collect();
        out.push(json!({"role": m["role"], "content": parts}));
    }
    let tools: Vec<Value> = v["tools"].as_array().into_iter().flatten().map(|t| json!({"type": "function", "function": {"name": t["name"], "parameters": t["parameters"]}})).collect();
    serde_json::to_vec(&json!({"model": v["model"], "max_tokens": v["max_output_tokens"], "stream": v["stream"], "messages": out, "tools": tools})).unwrap()
}

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("dialect_request");
    let body = messages_request();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(BenchmarkId::new("messages", "sluice"), |b| {
        b.iter(|| black_box(messages::to_chat(black_box(&body)).unwrap()))
    });
    group.bench_function(BenchmarkId::new("messages", "naive_value"), |b| {
        b.iter(|| black_box(naive_messages_to_chat(black_box(&body))))
    });
    let body = responses_request();
    group.bench_function(BenchmarkId::new("responses", "sluice"), |b| {
        b.iter(|| black_box(responses::to_chat(black_box(&body), &[]).unwrap()))
    });
    group.bench_function(BenchmarkId::new("responses", "naive_value"), |b| {
        b.iter(|| black_box(naive_responses_to_chat(black_box(&body))))
    });
    group.finish();
}

/// A chat stream of `EVENTS` text deltas, a usage chunk and `[DONE]`, one
/// event per piece, as an OpenAI upstream (or the chunk writer) sends it.
fn chat_stream() -> Vec<Vec<u8>> {
    let chunk = |delta: &str, finish: &str| {
        format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n").into_bytes()
    };
    let mut out = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    out.extend((0..EVENTS).map(|i| chunk(&format!("{{\"content\":\"tok{i} \"}}"), "null")));
    out.push(chunk("{}", "\"stop\""));
    out.push(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":100,\"total_tokens\":110}}\n\n".to_vec());
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

/// The naive rewrite: each event parsed into a tree, a new tree printed.
fn naive_rewrite(pieces: &[Vec<u8>], kind: &str) -> usize {
    let mut written = 0;
    for piece in pieces {
        let data = &piece[6..piece.len() - 2];
        if data == b"[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_slice(data).unwrap();
        let text = &v["choices"][0]["delta"]["content"];
        let event =
            json!({"type": kind, "index": 0, "delta": {"type": "text_delta", "text": text}});
        written += format!("event: {kind}\ndata: {event}\n\n").len();
    }
    written
}

fn streams(c: &mut Criterion) {
    let mut group = c.benchmark_group("dialect_stream");
    let pieces = chat_stream();
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function(BenchmarkId::new("messages", "sluice"), |b| {
        b.iter(|| {
            let mut w = MessagesWriter::new(true, "m");
            let mut n = 0;
            for p in &pieces {
                n += w.feed(black_box(p)).len();
            }
            black_box(n + w.finish().len())
        })
    });
    group.bench_function(BenchmarkId::new("messages", "naive_value"), |b| {
        b.iter(|| black_box(naive_rewrite(black_box(&pieces), "content_block_delta")))
    });
    let request = ResponsesRequest::parse(&responses_request()).unwrap();
    group.bench_function(BenchmarkId::new("responses", "sluice"), |b| {
        b.iter(|| {
            let mut w = ResponsesWriter::new(true, "resp_1", "m", &request);
            let mut n = 0;
            for p in &pieces {
                n += w.feed(black_box(p)).len();
            }
            black_box(n + w.finish().len())
        })
    });
    group.bench_function(BenchmarkId::new("responses", "naive_value"), |b| {
        b.iter(|| {
            black_box(naive_rewrite(
                black_box(&pieces),
                "response.output_text.delta",
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, requests, streams);
criterion_main!(benches);
