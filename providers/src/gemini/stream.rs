//! The `streamGenerateContent?alt=sse` reply: each event is a whole
//! `GenerateContentResponse` holding the new text, translated into OpenAI
//! chunks. Gemini has no end event: the stream is complete if a finish
//! reason went by.

use super::response::{call_id, finish_reason, GenerateResponse};
use crate::chunk::{ChunkWriter, FinishReason};
use crate::wire::ToolCalls;
use crate::UpstreamError;
use bytes::BytesMut;

/// One event's `data`: written as OpenAI chunks, or the error it carried.
pub(super) fn on_event(
    tools: &mut ToolCalls,
    data: &[u8],
    w: &mut ChunkWriter,
    out: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let Ok(r) = serde_json::from_slice::<GenerateResponse>(data) else {
        return Ok(());
    };
    if let Some(e) = r.error {
        return Err(e.into_error(500));
    }
    if let Some(id) = &r.response_id {
        w.set_id(id);
    }
    if let Some(model) = &r.model_version {
        w.set_model(model);
    }
    w.start(out);
    if let Some(c) = r.candidates.into_iter().next() {
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(text) = &part.text {
                w.text(text, out);
            }
            if let Some(call) = part.function_call {
                // Gemini numbers no blocks: each call stands for itself.
                let index = tools.open(tools.count());
                w.tool_start(index, &call_id(call.id), &call.name, out);
                let args = call
                    .args
                    .map_or_else(|| "{}".into(), |a| a.get().to_string());
                w.tool_args(index, &args, out);
            }
        }
        if let Some(reason) = c.finish_reason {
            w.set_finish(finish_reason(&reason, tools.count() > 0));
        }
    }
    if r.prompt_feedback.and_then(|f| f.block_reason).is_some() {
        w.set_finish(FinishReason::ContentFilter);
    }
    if let Some(u) = r.usage_metadata {
        w.set_usage(u.into());
    }
    Ok(())
}
