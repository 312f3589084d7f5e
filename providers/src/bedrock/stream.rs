//! The `converse-stream` reply: AWS event-stream messages, translated one
//! by one into OpenAI chunks. The usage arrives in the last event
//! (`metadata`), after `messageStop`, so the OpenAI terminal chunks are
//! written then (or when the upstream ends).

use super::response::{exception_kind, finish_reason, WireUsage};
use crate::chunk::ChunkWriter;
use crate::eventstream::Message;
use crate::wire::ToolCalls;
use crate::{UpstreamError, UpstreamErrorKind};
use bytes::BytesMut;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamEvent {
    #[serde(default)]
    content_block_index: Option<u32>,
    #[serde(default)]
    start: Option<BlockStart>,
    #[serde(default)]
    delta: Option<BlockDelta>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    tool_use: Option<StartToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartToolUse {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<DeltaToolUse>,
}

#[derive(Deserialize)]
struct DeltaToolUse {
    #[serde(default)]
    input: String,
}

/// One message: written as OpenAI chunks, or the exception it carried.
pub(super) fn on_message(
    tools: &mut ToolCalls,
    m: &Message,
    w: &mut ChunkWriter,
    out: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let parsed = serde_json::from_slice::<StreamEvent>(&m.payload);
    match m.header(":message-type") {
        Some("event") => {}
        Some("exception") => {
            let kind = exception_kind(m.header(":exception-type").unwrap_or_default());
            let message = parsed.ok().and_then(|e| e.message);
            return Err(UpstreamError::new(kind, message.as_deref()));
        }
        _ => {
            let message = m.header(":error-message");
            return Err(UpstreamError::new(UpstreamErrorKind::Server, message));
        }
    }
    let Ok(ev) = parsed else { return Ok(()) };
    match m.header(":event-type").unwrap_or_default() {
        "messageStart" => w.start(out),
        "contentBlockStart" => {
            if let (Some(index), Some(t)) =
                (ev.content_block_index, ev.start.and_then(|s| s.tool_use))
            {
                let tool = tools.open(index);
                w.tool_start(tool, &t.tool_use_id, &t.name, out);
            }
        }
        "contentBlockDelta" => {
            let Some(delta) = ev.delta else {
                return Ok(());
            };
            if let Some(text) = &delta.text {
                w.text(text, out);
            }
            if let Some(t) = delta.tool_use {
                if let Some(tool) = ev.content_block_index.and_then(|i| tools.of_block(i)) {
                    w.tool_args(tool, &t.input, out);
                }
            }
            // reasoningContent deltas: dropped.
        }
        "messageStop" => {
            w.set_finish(finish_reason(
                ev.stop_reason.as_deref().unwrap_or("end_turn"),
            ));
        }
        "metadata" => {
            if let Some(u) = ev.usage {
                w.set_usage(u.into());
            }
            if w.has_finish() {
                w.end(out);
            }
        }
        // contentBlockStop, unknown future events.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::encode_message;
    use crate::wire::{StreamFormat, StreamTranslation};
    use serde_json::{json, Value};

    #[test]
    fn stream_translates_events_and_exceptions() {
        let ev = |kind: &str, payload: Value| {
            encode_message(
                &[
                    (":message-type", "event"),
                    (":event-type", kind),
                    (":content-type", "application/json"),
                ],
                payload.to_string().as_bytes(),
            )
        };
        let mut bytes = Vec::new();
        bytes.extend(ev("messageStart", json!({"role": "assistant"})));
        bytes.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ));
        bytes.extend(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        ));
        bytes.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":1}"}}}),
        ));
        bytes.extend(ev("messageStop", json!({"stopReason": "tool_use"})));
        bytes.extend(ev(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
        ));
        // Byte by byte: framing must survive any split.
        let mut s = StreamTranslation::new(StreamFormat::EventStream(on_message));
        let mut w = ChunkWriter::new("m", true);
        let mut out = BytesMut::new();
        for b in &bytes {
            s.feed(std::slice::from_ref(b), &mut w, &mut out);
        }
        s.finish(&mut w, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains(r#""content":"Hi""#));
        assert!(text.contains(r#""id":"t1""#));
        assert!(text.contains(r#""finish_reason":"tool_calls""#));
        assert!(text.contains(r#""total_tokens":7"#));
        assert!(text.ends_with("data: [DONE]\n\n"));

        let mut s = StreamTranslation::new(StreamFormat::EventStream(on_message));
        let mut w = ChunkWriter::new("m", false);
        let mut out = BytesMut::new();
        let exc = encode_message(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"slow down"}"#,
        );
        s.feed(&exc, &mut w, &mut out);
        assert_eq!(s.error().unwrap().status(), 429);
        assert!(String::from_utf8_lossy(&out).contains("slow down"));
    }
}
