//! The `stream: true` reply: Anthropic's SSE events, translated one by one
//! into OpenAI chunks.

use super::response::{error_kind, finish_reason, ErrorDetail, WireUsage};
use crate::chunk::{ChunkWriter, FinishReason};
use crate::wire::ToolCalls;
use crate::{UpstreamError, UpstreamErrorKind};
use bytes::BytesMut;
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<StartMessage>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    content_block: Option<StartBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<ErrorDetail<'a>>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartBlock<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    partial_json: Cow<'a, str>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

/// One event's `data`: written as OpenAI chunks, or the error it carried.
pub(super) fn on_event(
    tools: &mut ToolCalls,
    data: &[u8],
    w: &mut ChunkWriter,
    out: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let Ok(ev) = serde_json::from_slice::<Event<'_>>(data) else {
        return Ok(());
    };
    match ev.kind.as_ref() {
        "message_start" => {
            if let Some(m) = ev.message {
                if let Some(id) = &m.id {
                    w.set_id(id);
                }
                if let Some(model) = &m.model {
                    w.set_model(model);
                }
                if let Some(u) = m.usage {
                    u.apply(w.usage_mut());
                }
            }
            w.start(out);
        }
        "content_block_start" => {
            if let (Some(index), Some(block)) = (ev.index, ev.content_block) {
                if block.kind == "tool_use" {
                    let tool = tools.open(index);
                    w.tool_start(tool, &block.id, &block.name, out);
                }
            }
        }
        "content_block_delta" => {
            let Some(delta) = ev.delta else {
                return Ok(());
            };
            match delta.kind.as_ref() {
                "text_delta" => w.text(&delta.text, out),
                "input_json_delta" => {
                    if let Some(tool) = ev.index.and_then(|i| tools.of_block(i)) {
                        w.tool_args(tool, &delta.partial_json, out);
                    }
                }
                // thinking_delta, signature_delta, citations: dropped.
                _ => {}
            }
        }
        "message_delta" => {
            if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                w.set_finish(finish_reason(&reason));
            }
            if let Some(u) = ev.usage {
                u.apply(w.usage_mut());
            }
        }
        "message_stop" => {
            if !w.has_finish() {
                w.set_finish(FinishReason::Stop);
            }
            w.end(out);
        }
        "error" => {
            let e = match ev.error {
                Some(d) => UpstreamError::new(error_kind(&d.kind, 500), Some(&d.message)),
                None => UpstreamError::new(UpstreamErrorKind::Server, None),
            };
            return Err(e);
        }
        // ping, content_block_stop, unknown future events.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{StreamFormat, StreamTranslation};
    use crate::Usage;

    #[test]
    fn stream_drops_thinking_and_maps_tool_indices() {
        let events = [
            r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut s = StreamTranslation::new(StreamFormat::Sse(on_event));
        let mut w = ChunkWriter::new("m", false);
        let mut out = BytesMut::new();
        for e in events {
            s.feed(
                format!("event: x\ndata: {e}\n\n").as_bytes(),
                &mut w,
                &mut out,
            );
        }
        s.finish(&mut w, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("hmm"));
        assert!(text.contains(r#""tool_calls":[{"index":0,"id":"toolu_9""#));
        assert!(text.contains(r#""finish_reason":"tool_calls""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            w.usage(),
            Some(Usage {
                prompt_tokens: 14,
                completion_tokens: 7,
                cached_prompt_tokens: 4,
                cache_write_tokens: 0,
            })
        );
    }
}
