//! The Bedrock ConverseStream stream, translated event by event.

use super::*;

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

/// Translation state of one Bedrock ConverseStream.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    frames: Decoder,
    /// (content block index, OpenAI tool call index) of each toolUse block.
    tools: Vec<(u32, u32)>,
    error: Option<UpstreamError>,
}

impl StreamState {
    /// Takes upstream bytes; appends OpenAI events to `out`.
    pub fn feed(&mut self, chunk: &[u8], w: &mut ChunkWriter, out: &mut BytesMut) {
        if self.error.is_some() {
            return;
        }
        self.frames.feed(chunk);
        loop {
            match self.frames.next_message() {
                Ok(Some(m)) => self.on_message(&m, w, out),
                Ok(None) => break,
                Err(_) => {
                    self.fail(UpstreamError::new(UpstreamErrorKind::Server, None), w, out);
                    break;
                }
            }
            if self.error.is_some() {
                break;
            }
        }
    }

    /// The upstream ended: complete the stream if it had stopped.
    pub fn finish(&mut self, w: &mut ChunkWriter, out: &mut BytesMut) {
        if self.error.is_none() && w.has_finish() {
            w.end(out);
        }
    }

    /// The exception seen, if any.
    pub fn error(&self) -> Option<&UpstreamError> {
        self.error.as_ref()
    }

    fn fail(&mut self, e: UpstreamError, w: &mut ChunkWriter, out: &mut BytesMut) {
        w.error(&e, out);
        self.error = Some(e);
    }

    fn on_message(
        &mut self,
        m: &crate::eventstream::Message,
        w: &mut ChunkWriter,
        out: &mut BytesMut,
    ) {
        let parsed = serde_json::from_slice::<StreamEvent>(&m.payload);
        match m.header(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let kind = exception_kind(m.header(":exception-type").unwrap_or_default());
                let message = parsed.ok().and_then(|e| e.message);
                self.fail(UpstreamError::new(kind, message.as_deref()), w, out);
                return;
            }
            _ => {
                let message = m.header(":error-message");
                self.fail(
                    UpstreamError::new(UpstreamErrorKind::Server, message),
                    w,
                    out,
                );
                return;
            }
        }
        let Ok(ev) = parsed else { return };
        match m.header(":event-type").unwrap_or_default() {
            "messageStart" => w.start(out),
            "contentBlockStart" => {
                if let (Some(index), Some(t)) =
                    (ev.content_block_index, ev.start.and_then(|s| s.tool_use))
                {
                    let tool = self.tools.len() as u32;
                    self.tools.push((index, tool));
                    w.tool_start(tool, &t.tool_use_id, &t.name, out);
                }
            }
            "contentBlockDelta" => {
                let Some(delta) = ev.delta else { return };
                if let Some(text) = &delta.text {
                    w.text(text, out);
                }
                if let Some(t) = delta.tool_use {
                    let tool = ev
                        .content_block_index
                        .and_then(|i| self.tools.iter().find(|(b, _)| *b == i))
                        .map(|(_, t)| *t);
                    if let Some(tool) = tool {
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
    }
}
