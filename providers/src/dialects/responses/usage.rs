//! [`ResponsesUsage`]: usage read from a Responses reply that passes
//! through untouched (a native OpenAI upstream).

use crate::Usage;
use serde_json::Value;

/// Largest whole body kept to read its usage (8 MiB).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Most delivered text kept for counting a stream with no reported usage.
const MAX_TEXT: usize = 4 * 1024 * 1024;

/// Watches one Responses reply on its way to the client: feed it every
/// piece with [`ResponsesUsage::observe`]. Usage comes from
/// `response.completed`'s (or `response.incomplete`'s) `response.usage` in
/// a stream, or the body's `usage` for a whole reply.
#[derive(Debug)]
pub struct ResponsesUsage {
    /// Whether the reply is the event stream.
    stream: bool,
    /// The whole body, or the unterminated tail of the stream.
    held: Vec<u8>,
    /// Whether the whole body outgrew [`MAX_BODY`] and was let go.
    overflowed: bool,
    /// Text delivered in `response.output_text.delta` events (or the whole
    /// body's `output_text` parts).
    delivered_text: String,
    /// The reported usage.
    usage: Option<Usage>,
    /// Whether the terminal `response.completed` (or `.incomplete`) arrived.
    completed: bool,
}

impl ResponsesUsage {
    /// A reader for a streamed (`stream`) or whole reply.
    pub fn new(stream: bool) -> Self {
        ResponsesUsage {
            stream,
            held: Vec::new(),
            overflowed: false,
            delivered_text: String::new(),
            usage: None,
            completed: false,
        }
    }

    /// Observes one piece of the reply, split anywhere. A whole body is read
    /// once it parses as JSON (its last piece).
    pub fn observe(&mut self, piece: &[u8]) {
        if self.overflowed {
            return;
        }
        self.held.extend_from_slice(piece);
        if !self.stream {
            if self.held.len() > MAX_BODY {
                self.overflowed = true;
                self.held = Vec::new();
            } else if let Some(body) = self.whole_body() {
                self.held = Vec::new();
                self.read_response(&body);
                self.completed = body.get("status").and_then(Value::as_str) != Some("failed")
                    && body.get("error").is_none_or(Value::is_null);
                self.collect_text(&body);
            }
            return;
        }
        while let Some(end) = memchr::memmem::find(&self.held, b"\n\n") {
            let event: Vec<u8> = self.held.drain(..end + 2).collect();
            self.event(&event);
        }
        if self.held.len() > MAX_BODY {
            self.overflowed = true;
            self.held = Vec::new();
        }
    }

    /// The whole body, once it has all arrived: parsed only when the held
    /// bytes end in `}`, so a body in many pieces is not parsed each time.
    fn whole_body(&self) -> Option<Value> {
        let last = self.held.iter().rev().find(|b| !b.is_ascii_whitespace())?;
        if *last != b'}' {
            return None;
        }
        serde_json::from_slice(&self.held).ok()
    }

    /// Reads one stream event.
    fn event(&mut self, event: &[u8]) {
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            let Ok(payload) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            match payload.get("type").and_then(Value::as_str) {
                Some("response.output_text.delta") => {
                    if let Some(delta) = payload.get("delta").and_then(Value::as_str) {
                        if self.delivered_text.len() + delta.len() <= MAX_TEXT {
                            self.delivered_text.push_str(delta);
                        }
                    }
                }
                Some("response.completed" | "response.incomplete") => {
                    self.completed = true;
                    if let Some(response) = payload.get("response") {
                        self.read_response(response);
                    }
                }
                Some("response.failed") => {
                    if let Some(response) = payload.get("response") {
                        self.read_response(response);
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads `usage` from a Response object.
    fn read_response(&mut self, response: &Value) {
        let Some(usage) = response.get("usage").and_then(Value::as_object) else {
            return;
        };
        let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let details = usage.get("input_tokens_details");
        self.usage = Some(Usage {
            prompt_tokens: count(usage.get("input_tokens")),
            completion_tokens: count(usage.get("output_tokens")),
            cached_prompt_tokens: count(details.and_then(|d| d.get("cached_tokens"))),
            cache_write_tokens: count(details.and_then(|d| d.get("cache_write_tokens"))),
        });
    }

    /// Keeps a whole reply's text, for counting when it reports no usage.
    fn collect_text(&mut self, body: &Value) {
        if self.usage.is_some() {
            return;
        }
        let parts = body
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("content").and_then(Value::as_array))
            .flatten();
        for part in parts {
            if part.get("type").and_then(Value::as_str) == Some("output_text") {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    self.delivered_text.push_str(text);
                }
            }
        }
    }

    /// The usage the upstream reported, once read.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Text delivered so far (stream deltas; a whole reply's text when it
    /// reported no usage), for counting when no usage was reported.
    pub fn delivered_text(&self) -> &str {
        &self.delivered_text
    }

    /// Whether the reply finished: `response.completed` or
    /// `response.incomplete` went by, or a whole Response that did not fail.
    pub fn completed(&self) -> bool {
        self.completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hel\",\"sequence_number\":1}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"lo\",\"sequence_number\":2}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":11}}}\n\n",
    );

    #[test]
    fn reads_stream_usage_from_response_completed_in_any_pieces() {
        for size in [1, 7, 64, STREAM.len()] {
            let mut reader = ResponsesUsage::new(true);
            for piece in STREAM.as_bytes().chunks(size) {
                reader.observe(piece);
            }
            assert_eq!(
                reader.usage(),
                Some(Usage {
                    prompt_tokens: 9,
                    completion_tokens: 2,
                    cached_prompt_tokens: 4,
                    cache_write_tokens: 0,
                })
            );
            assert_eq!(reader.delivered_text(), "Hello");
            assert!(reader.completed());
        }
    }

    #[test]
    fn a_cut_stream_keeps_its_text_and_is_not_completed() {
        let mut reader = ResponsesUsage::new(true);
        let cut = STREAM.find("event: response.completed").unwrap();
        reader.observe(&STREAM.as_bytes()[..cut + 30]);
        assert_eq!(reader.usage(), None);
        assert_eq!(reader.delivered_text(), "Hello");
        assert!(!reader.completed());
    }

    #[test]
    fn reads_a_whole_body_in_pieces() {
        let body = br#"{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"total_tokens":25}}"#;
        let mut reader = ResponsesUsage::new(false);
        for piece in body.chunks(7) {
            reader.observe(piece);
        }
        assert_eq!(reader.usage().map(|u| u.prompt_tokens), Some(20));
        assert_eq!(reader.usage().map(|u| u.completion_tokens), Some(5));
        assert!(reader.completed());
    }
}
