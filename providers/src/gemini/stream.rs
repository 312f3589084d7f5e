//! The Gemini `streamGenerateContent?alt=sse` stream, translated event by event.

use super::*;

/// Translation state of one Gemini stream (each event is a whole
/// `GenerateContentResponse` holding the new text).
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    sse: SseDecoder,
    tool_calls: u32,
    error: Option<UpstreamError>,
}

impl StreamState {
    /// Takes upstream bytes; appends OpenAI events to `out`.
    pub fn feed(&mut self, chunk: &[u8], w: &mut ChunkWriter, out: &mut BytesMut) {
        if self.error.is_some() {
            return;
        }
        if self.sse.feed(chunk).is_err() {
            self.fail(unreadable(), w, out);
            return;
        }
        while let Some(event) = self.sse.next_event() {
            self.on_event(&event.data, w, out);
        }
    }

    /// The upstream ended: Gemini has no end event, so the stream is
    /// complete if a finish reason went by.
    pub fn finish(&mut self, w: &mut ChunkWriter, out: &mut BytesMut) {
        if let Some(event) = self.sse.finish() {
            self.on_event(&event.data, w, out);
        }
        if w.has_finish() {
            w.end(out);
        }
    }

    /// The error event seen, if any.
    pub fn error(&self) -> Option<&UpstreamError> {
        self.error.as_ref()
    }

    fn fail(&mut self, e: UpstreamError, w: &mut ChunkWriter, out: &mut BytesMut) {
        w.error(&e, out);
        self.error = Some(e);
    }

    fn on_event(&mut self, data: &[u8], w: &mut ChunkWriter, out: &mut BytesMut) {
        if self.error.is_some() {
            return;
        }
        let Ok(r) = serde_json::from_slice::<GenerateResponse>(data) else {
            return;
        };
        if let Some(e) = r.error {
            self.fail(e.into_error(500), w, out);
            return;
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
                    let index = self.tool_calls;
                    self.tool_calls += 1;
                    w.tool_start(index, &call_id(call.id), &call.name, out);
                    let args = call
                        .args
                        .map_or_else(|| "{}".into(), |a| a.get().to_string());
                    w.tool_args(index, &args, out);
                }
            }
            if let Some(reason) = c.finish_reason {
                w.set_finish(finish_reason(&reason, self.tool_calls > 0));
            }
        }
        if r.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            w.set_finish(FinishReason::ContentFilter);
        }
        if let Some(u) = r.usage_metadata {
            w.set_usage(u.into());
        }
    }
}
