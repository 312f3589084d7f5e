//! Provider adapters: building the upstream request from an OpenAI one, and
//! translating a provider's stream back into OpenAI chunks, per provider.
//! The baseline is OpenAI itself, where both are pass-through (a model
//! rename splice, and the usage tracker reading each event).

#![allow(clippy::panic, clippy::unwrap_used)] // A bench that silently timed the error path would lie.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_benches::chat_request;
use sluice_config::load_str;
use sluice_providers::eventstream::encode_message;
use sluice_providers::{Endpoint, Provider, RoutingFields};
use std::hint::black_box;

const PROVIDERS: [&str; 5] = ["openai", "azure", "anthropic", "gemini", "bedrock"];
/// Content events per benchmarked stream.
const EVENTS: usize = 100;

/// A provider of kind `name`, set up through the config as an operator does.
fn provider(name: &str) -> Provider {
    let yaml = format!(
        "upstreams:\n  u: {{kind: {name}, base_url: 'https://upstream.example.com/v1', api_key: sk-bench, \
         region: us-east-1, aws_access_key_id: AKIDEXAMPLE, \
         aws_secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}}\n"
    );
    Provider::from_settings(&load_str(&yaml, &|_| None).unwrap().upstreams[0])
}

fn request_translation(c: &mut Criterion) {
    let mut group = c.benchmark_group("provider_request");
    let body = Bytes::from(chat_request(1024));
    let fields = RoutingFields::parse(&body).unwrap();
    for name in PROVIDERS {
        let p = provider(name);
        group.bench_function(BenchmarkId::new(name, "1KiB_chat"), |b| {
            b.iter(|| {
                black_box(
                    p.build_request(Endpoint::ChatCompletions, black_box(&body), &fields, "up")
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            })
        });
    }
    group.finish();
}

/// A stream of `EVENTS` text deltas and its end, in `name`'s wire format,
/// as the pieces it would arrive in (one event per piece).
fn native_stream(name: &str) -> Vec<Bytes> {
    let piece = |i: usize| format!("tok{i} ");
    let mut out: Vec<Bytes> = Vec::new();
    match name {
        "openai" | "azure" => {
            let chunk = |delta: &str, finish: &str| {
                Bytes::from(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"))
            };
            out.push(chunk(r#"{"role":"assistant","content":""}"#, "null"));
            out.extend(
                (0..EVENTS).map(|i| chunk(&format!("{{\"content\":\"{}\"}}", piece(i)), "null")),
            );
            out.push(chunk("{}", "\"stop\""));
            out.push(Bytes::from_static(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":100,\"total_tokens\":105}}\n\n"));
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        "anthropic" => {
            let ev =
                |kind: &str, data: String| Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
            out.push(ev("message_start", r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":5,"output_tokens":1}}}"#.into()));
            out.push(ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into()));
            out.extend((0..EVENTS).map(|i| ev("content_block_delta", format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{}"}}}}"#, piece(i)))));
            out.push(ev(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#.into(),
            ));
            out.push(ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":100}}"#.into()));
            out.push(ev("message_stop", r#"{"type":"message_stop"}"#.into()));
        }
        "gemini" => {
            out.extend((0..EVENTS).map(|i| {
                let finish = if i + 1 == EVENTS { r#","finishReason":"STOP""# } else { "" };
                Bytes::from(format!(r#"data: {{"candidates":[{{"content":{{"parts":[{{"text":"{}"}}],"role":"model"}}{finish},"index":0}}],"usageMetadata":{{"promptTokenCount":5,"candidatesTokenCount":{i},"totalTokenCount":{}}},"modelVersion":"gemini-2.0-flash","responseId":"r1"}}"#, piece(i), 5 + i) + "\r\n\r\n")
            }));
        }
        _ => {
            let ev = |kind: &str, payload: String| {
                Bytes::from(encode_message(
                    &[
                        (":event-type", kind),
                        (":content-type", "application/json"),
                        (":message-type", "event"),
                    ],
                    payload.as_bytes(),
                ))
            };
            out.push(ev(
                "messageStart",
                r#"{"role":"assistant","p":"abc"}"#.into(),
            ));
            out.extend((0..EVENTS).map(|i| {
                ev(
                    "contentBlockDelta",
                    format!(
                        r#"{{"contentBlockIndex":0,"delta":{{"text":"{}"}},"p":"abcdefgh"}}"#,
                        piece(i)
                    ),
                )
            }));
            out.push(ev("contentBlockStop", r#"{"contentBlockIndex":0}"#.into()));
            out.push(ev("messageStop", r#"{"stopReason":"end_turn"}"#.into()));
            out.push(ev("metadata", r#"{"usage":{"inputTokens":5,"outputTokens":100,"totalTokens":105},"metrics":{"latencyMs":1}}"#.into()));
        }
    }
    out
}

fn stream_translation(c: &mut Criterion) {
    let mut group = c.benchmark_group("provider_stream");
    let body = Bytes::from(chat_request(256));
    let fields = RoutingFields::parse(&body).unwrap();
    for name in PROVIDERS {
        let p = provider(name);
        let req = p
            .build_request(Endpoint::ChatCompletions, &body, &fields, "up")
            .unwrap();
        let pieces = native_stream(name);
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.bench_function(BenchmarkId::new(name, format!("{EVENTS}_chunks")), |b| {
            b.iter(|| {
                let mut t = p.response_translator(&req.reply, 200);
                let mut sent = 0usize;
                for piece in &pieces {
                    sent += t.relay(piece.clone()).len();
                }
                sent += t.finish().len();
                assert!(t.saw_done(), "{name}: stream not completed");
                black_box((sent, t.usage()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request_translation, stream_translation);
criterion_main!(benches);
