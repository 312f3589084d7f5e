//! Token usage, read from an OpenAI-format response as it streams past.
//!
//! [`UsageTracker`] watches the bytes relayed to the client. For a plain JSON
//! reply it keeps the body (up to a bound) and reads `usage` at the end. For
//! SSE it reads each complete `data:` event: the `usage` object of the final
//! chunk (present when `stream_options.include_usage` is on — sluice turns it
//! on for every stream, see [`crate::RoutingFields::body_for_upstream`]), and
//! the text delivered so far, so a cut stream can still be counted. When
//! sluice asked for usage on the client's behalf, the usage-only chunk is
//! dropped from what the client receives.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// Largest plain response body kept to read its `usage` (embeddings of big
/// batches run to megabytes; their usage is then counted, not read).
const MAX_TRACKED_BODY: usize = 8 * 1024 * 1024;
/// Most delivered text kept for counting a stream with no reported usage.
const MAX_TRACKED_TEXT: usize = 4 * 1024 * 1024;

/// Token counts in one common shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    #[serde(default, skip_deserializing)]
    pub cached_prompt_tokens: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`),
    /// also counted in `prompt_tokens`; priced at their own rate.
    #[serde(default, skip_deserializing)]
    pub cache_write_tokens: u64,
}

/// OpenAI's `usage` object as it arrives (whole bodies and stream chunks);
/// read into [`Usage`] with `From`.
#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// sluice's own field: cache writes reported by a translated upstream.
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Self {
        let details = w.prompt_tokens_details;
        Usage {
            prompt_tokens: w.prompt_tokens,
            completion_tokens: w.completion_tokens,
            cached_prompt_tokens: details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Read only when the provider reported no usage.
#[derive(Deserialize)]
struct WithChoices {
    #[serde(default)]
    choices: Vec<PlainChoice>,
}

#[derive(Deserialize)]
struct PlainChoice {
    #[serde(default)]
    message: Option<PlainMessage>,
    /// Legacy completions.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct PlainMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct StreamChunk<'a> {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    choices: Vec<StreamChoice<'a>>,
}

#[derive(Deserialize)]
struct StreamChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    /// Legacy completions stream text here.
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
}

/// Watches one response on its way to the client.
#[derive(Debug)]
pub struct UsageTracker {
    sse: bool,
    /// Drop the usage-only chunk: sluice asked for it, the client did not.
    strip_usage_chunk: bool,
    /// Bytes of an SSE event not yet terminated.
    pending: BytesMut,
    /// Plain body kept for parsing at the end, as the pieces that arrived
    /// (reference-counted, not copied).
    body: Vec<Bytes>,
    body_len: usize,
    body_overflowed: bool,
    /// Text delivered in stream deltas.
    delivered_text: String,
    reported: Option<Usage>,
    saw_done: bool,
}

impl UsageTracker {
    /// A tracker for a response that is SSE (`text/event-stream`) or not.
    pub fn new(sse: bool, strip_usage_chunk: bool) -> Self {
        UsageTracker {
            sse,
            strip_usage_chunk,
            pending: BytesMut::new(),
            body: Vec::new(),
            body_len: 0,
            body_overflowed: false,
            delivered_text: String::new(),
            reported: None,
            saw_done: false,
        }
    }

    /// Observes a piece of the response; returns what to relay to the client.
    /// SSE events are relayed whole, so a piece may be held back until its
    /// event's terminating blank line arrives.
    pub fn relay(&mut self, chunk: Bytes) -> Bytes {
        if !self.sse {
            if !self.body_overflowed {
                if self.body_len + chunk.len() > MAX_TRACKED_BODY {
                    self.body_overflowed = true;
                    self.body = Vec::new();
                } else {
                    self.body_len += chunk.len();
                    self.body.push(chunk.clone());
                }
            }
            return chunk;
        }
        // Fast path: nothing pending and the chunk ends on an event boundary.
        let complete = if self.pending.is_empty() && chunk.ends_with(b"\n\n") {
            chunk
        } else {
            self.pending.extend_from_slice(&chunk);
            match memchr::memmem::rfind(&self.pending, b"\n\n") {
                Some(end) => self.pending.split_to(end + 2).freeze(),
                None => return Bytes::new(),
            }
        };
        self.observe_events(complete)
    }

    /// Whatever is still held back when the upstream ends (an unterminated
    /// last event is relayed as is).
    pub fn finish(&mut self) -> Bytes {
        if !self.sse {
            let pieces = std::mem::take(&mut self.body);
            let joined;
            let body: &[u8] = match pieces.as_slice() {
                [] => &[],
                [one] => one,
                many => {
                    joined = many.concat();
                    &joined
                }
            };
            if let Ok(parsed) = serde_json::from_slice::<WithUsage>(body) {
                self.reported = parsed.usage.map(Usage::from);
            }
            if self.reported.is_none() {
                // Kept only for counting when the provider reported nothing.
                if let Ok(parsed) = serde_json::from_slice::<WithChoices>(body) {
                    for choice in parsed.choices {
                        if let Some(text) = choice.message.and_then(|m| m.content).or(choice.text) {
                            self.delivered_text.push_str(&text);
                        }
                    }
                }
            }
            return Bytes::new();
        }
        let rest = std::mem::take(&mut self.pending).freeze();
        if rest.is_empty() {
            rest
        } else {
            self.observe_events(rest)
        }
    }

    /// Reads every event in `events` (whole events, each ending in a blank
    /// line except perhaps the last) and returns them, less a dropped one.
    fn observe_events(&mut self, events: Bytes) -> Bytes {
        let mut dropped: Option<std::ops::Range<usize>> = None;
        let mut start = 0;
        while start < events.len() {
            let end = memchr::memmem::find(&events[start..], b"\n\n")
                .map_or(events.len(), |i| start + i + 2);
            if self.observe_event(&events[start..end]) {
                dropped = Some(start..end);
            }
            start = end;
        }
        match dropped {
            Some(range) => {
                let mut out = BytesMut::with_capacity(events.len());
                out.extend_from_slice(&events[..range.start]);
                out.extend_from_slice(&events[range.end..]);
                out.freeze()
            }
            None => events,
        }
    }

    /// Reads one event; returns whether to drop it from the client's stream.
    fn observe_event(&mut self, event: &[u8]) -> bool {
        let mut drop_it = false;
        for line in event.split(|b| *b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                self.saw_done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_slice::<StreamChunk<'_>>(data) else {
                continue;
            };
            for choice in &chunk.choices {
                let text = choice
                    .delta
                    .as_ref()
                    .and_then(|d| d.content.as_deref())
                    .or(choice.text.as_deref());
                if let Some(text) = text {
                    if self.delivered_text.len() + text.len() <= MAX_TRACKED_TEXT {
                        self.delivered_text.push_str(text);
                    }
                }
            }
            if let Some(usage) = chunk.usage {
                self.reported = Some(usage.into());
                drop_it |= self.strip_usage_chunk && chunk.choices.is_empty();
            }
        }
        drop_it
    }

    /// The provider's own usage, if it reported one.
    pub fn reported(&self) -> Option<Usage> {
        self.reported
    }

    /// Text delivered (stream deltas, or a plain reply without usage), for
    /// counting when the provider reported nothing.
    pub fn delivered_text(&self) -> &str {
        &self.delivered_text
    }

    /// Whether the stream's `[DONE]` marker went by.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}],\"usage\":null}}\n\n")
    }

    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n";

    #[test]
    fn reads_usage_from_a_plain_body_in_pieces() {
        let mut t = UsageTracker::new(false, false);
        let body =
            br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        let (a, b) = body.split_at(20);
        assert_eq!(&t.relay(Bytes::copy_from_slice(a))[..], a);
        assert_eq!(&t.relay(Bytes::copy_from_slice(b))[..], b);
        t.finish();
        assert_eq!(
            t.reported(),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 5,
                cached_prompt_tokens: 0,
                cache_write_tokens: 0,
            })
        );
    }

    #[test]
    fn reads_stream_usage_and_text_and_strips_the_injected_chunk() {
        let stream = format!("{}{}{USAGE}data: [DONE]\n\n", chunk("Hel"), chunk("lo"));
        let mut t = UsageTracker::new(true, true);
        // Split mid-event to exercise holding back.
        let (a, b) = stream.split_at(30);
        let mut out = Vec::new();
        out.extend_from_slice(&t.relay(Bytes::copy_from_slice(a.as_bytes())));
        out.extend_from_slice(&t.relay(Bytes::copy_from_slice(b.as_bytes())));
        out.extend_from_slice(&t.finish());
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!("{}{}data: [DONE]\n\n", chunk("Hel"), chunk("lo"))
        );
        assert_eq!(t.delivered_text(), "Hello");
        assert_eq!(
            t.reported(),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
                cached_prompt_tokens: 2,
                cache_write_tokens: 0,
            })
        );
        assert!(t.saw_done());
    }

    #[test]
    fn keeps_the_usage_chunk_when_the_client_asked_for_it() {
        let stream = format!("{}{USAGE}data: [DONE]\n\n", chunk("a"));
        let mut t = UsageTracker::new(true, false);
        let out = t.relay(Bytes::from(stream.clone()));
        assert_eq!(&out[..], stream.as_bytes());
        assert_eq!(t.reported().unwrap().prompt_tokens, 7);
    }

    #[test]
    fn a_plain_body_without_usage_keeps_its_text_for_counting() {
        let mut t = UsageTracker::new(false, false);
        t.relay(Bytes::from_static(
            br#"{"choices":[{"message":{"role":"assistant","content":"Hi there"}}]}"#,
        ));
        t.finish();
        assert_eq!(t.reported(), None);
        assert_eq!(t.delivered_text(), "Hi there");
    }

    #[test]
    fn whole_events_pass_without_copying() {
        let mut t = UsageTracker::new(true, true);
        let c = Bytes::from(chunk("x"));
        let out = t.relay(c.clone());
        assert_eq!(out.as_ptr(), c.as_ptr());
    }

    #[test]
    fn a_cut_stream_keeps_what_was_delivered() {
        let mut t = UsageTracker::new(true, true);
        t.relay(Bytes::from(chunk("partial ")));
        t.relay(Bytes::from(
            "data: {\"choices\":[{\"delta\":{\"content\":\"cu",
        ));
        t.finish();
        assert_eq!(t.delivered_text(), "partial ");
        assert_eq!(t.reported(), None);
        assert!(!t.saw_done());
    }
}
