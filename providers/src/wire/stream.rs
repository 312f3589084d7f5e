//! What every translated stream shares: decoding its framing as bytes
//! arrive, the tool calls it opened, stopping at the first error (written
//! once, as an OpenAI error event), and ending the OpenAI stream only if a
//! finish reason went by. A provider supplies one function: what one of
//! its events means, written through a [`ChunkWriter`].

use super::sse::SseDecoder;
use crate::chunk::ChunkWriter;
use crate::eventstream::{self, Message};
use crate::{UpstreamError, UpstreamErrorKind};
use bytes::BytesMut;

/// A provider's code for one SSE event: its `data` into OpenAI chunks on
/// `out`, or the provider error the event carried.
pub(crate) type SseEventFn =
    fn(&mut ToolCalls, &[u8], &mut ChunkWriter, &mut BytesMut) -> Result<(), UpstreamError>;

/// A provider's code for one event-stream message: as [`SseEventFn`].
pub(crate) type MessageFn =
    fn(&mut ToolCalls, &Message, &mut ChunkWriter, &mut BytesMut) -> Result<(), UpstreamError>;

/// How a provider frames its stream, with its code for one event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StreamFormat {
    /// Server-sent events (Anthropic, Gemini).
    Sse(SseEventFn),
    /// AWS's binary event stream (Bedrock).
    EventStream(MessageFn),
}

/// The tool calls a stream has opened, in OpenAI's order (their index in
/// the chunks), each with the provider's content-block index.
#[derive(Debug, Default)]
pub(crate) struct ToolCalls {
    blocks: Vec<u32>,
}

impl ToolCalls {
    /// Opens the next tool call, for content block `block`; returns its
    /// OpenAI index.
    pub fn open(&mut self, block: u32) -> u32 {
        let index = self.count();
        self.blocks.push(block);
        index
    }

    /// The OpenAI index of the call opened for content block `block`.
    pub fn of_block(&self, block: u32) -> Option<u32> {
        self.blocks
            .iter()
            .position(|b| *b == block)
            .map(|i| i as u32)
    }

    /// How many calls were opened.
    pub fn count(&self) -> u32 {
        self.blocks.len() as u32
    }
}

#[derive(Debug)]
enum Framing {
    Sse {
        decoder: SseDecoder,
        on_event: SseEventFn,
    },
    EventStream {
        decoder: eventstream::Decoder,
        on_message: MessageFn,
    },
}

/// The translation state of one provider stream.
#[derive(Debug)]
pub(crate) struct StreamTranslation {
    framing: Framing,
    tools: ToolCalls,
    error: Option<UpstreamError>,
}

impl StreamTranslation {
    /// The state for a new stream in `format`.
    pub fn new(format: StreamFormat) -> Self {
        let framing = match format {
            StreamFormat::Sse(on_event) => Framing::Sse {
                decoder: SseDecoder::default(),
                on_event,
            },
            StreamFormat::EventStream(on_message) => Framing::EventStream {
                decoder: eventstream::Decoder::default(),
                on_message,
            },
        };
        StreamTranslation {
            framing,
            tools: ToolCalls::default(),
            error: None,
        }
    }

    /// Takes upstream bytes; appends OpenAI events to `out`.
    pub fn feed(&mut self, chunk: &[u8], w: &mut ChunkWriter, out: &mut BytesMut) {
        let StreamTranslation {
            framing,
            tools,
            error,
        } = self;
        if error.is_some() {
            return;
        }
        match framing {
            Framing::Sse { decoder, on_event } => {
                if decoder.feed(chunk).is_err() {
                    fail(error, unreadable(), w, out);
                    return;
                }
                while let Some(event) = decoder.next_event() {
                    if let Err(e) = on_event(tools, &event.data, w, out) {
                        fail(error, e, w, out);
                        return;
                    }
                }
            }
            Framing::EventStream {
                decoder,
                on_message,
            } => {
                decoder.feed(chunk);
                loop {
                    let result = match decoder.next_message() {
                        Ok(Some(m)) => on_message(tools, &m, w, out),
                        Ok(None) => break,
                        Err(_) => Err(unreadable()),
                    };
                    if let Err(e) = result {
                        fail(error, e, w, out);
                        break;
                    }
                }
            }
        }
    }

    /// The upstream ended: take an unterminated last event, then end the
    /// OpenAI stream if a finish reason went by (a cut stream gets no `[DONE]`).
    pub fn finish(&mut self, w: &mut ChunkWriter, out: &mut BytesMut) {
        let StreamTranslation {
            framing,
            tools,
            error,
        } = self;
        if let Framing::Sse { decoder, on_event } = framing {
            if let Some(event) = decoder.finish() {
                if error.is_none() {
                    if let Err(e) = on_event(tools, &event.data, w, out) {
                        fail(error, e, w, out);
                    }
                }
            }
        }
        if error.is_none() && w.has_finish() {
            w.end(out);
        }
    }

    /// The provider error the stream carried, if any.
    pub fn error(&self) -> Option<&UpstreamError> {
        self.error.as_ref()
    }
}

/// A stream that cannot be decoded at all.
fn unreadable() -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Server, None)
}

/// Records the stream's first error and writes it as an OpenAI error event.
fn fail(
    slot: &mut Option<UpstreamError>,
    e: UpstreamError,
    w: &mut ChunkWriter,
    out: &mut BytesMut,
) {
    w.error(&e, out);
    *slot = Some(e);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_numbered_in_order_of_opening() {
        let mut t = ToolCalls::default();
        assert_eq!(t.open(3), 0);
        assert_eq!(t.open(1), 1);
        assert_eq!(t.of_block(1), Some(1));
        assert_eq!(t.of_block(3), Some(0));
        assert_eq!(t.of_block(0), None);
        assert_eq!(t.count(), 2);
    }
}
