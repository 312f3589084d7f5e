//! An incremental reader of a provider's server-sent events (Anthropic,
//! Gemini): fed bytes as they arrive, it hands out each complete event and
//! keeps only the unterminated tail.

use bytes::{Buf, BytesMut};

/// Largest unterminated event held before the stream is declared broken.
const MAX_EVENT: usize = 16 * 1024 * 1024;

/// One event: its `event:` name (empty when absent) and its `data:` lines
/// joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    pub name: String,
    pub data: Vec<u8>,
}

/// Splits a byte stream into SSE events.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    buf: BytesMut,
}

/// The event stream grew past [`MAX_EVENT`] without an event boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventTooLarge;

impl SseDecoder {
    /// Adds bytes from upstream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > MAX_EVENT && find_boundary(&self.buf).is_none() {
            return Err(EventTooLarge);
        }
        Ok(())
    }

    /// The next complete event, if one has arrived. Comment-only events
    /// (`: ping`) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let (end, sep) = find_boundary(&self.buf)?;
            let raw = self.buf.split_to(end);
            self.buf.advance(sep);
            if let Some(event) = parse_event(&raw) {
                return Some(event);
            }
        }
    }

    /// What is left when the upstream ends: an unterminated last event, if
    /// it parses as one.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let raw = std::mem::take(&mut self.buf);
        parse_event(&raw)
    }
}

/// Where the first event ends and how long its separator is (`\n\n`,
/// `\r\n\r\n`, or `\r\r`).
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = memchr::memchr2(b'\n', b'\r', buf)?;
    while i < buf.len() {
        let rest = &buf[i..];
        if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            return Some((i, 2));
        }
        if rest.starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        i += 1 + memchr::memchr2(b'\n', b'\r', &buf[i + 1..])?;
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let mut event = SseEvent::default();
    let mut any_data = false;
    for line in raw.split(|b| *b == b'\n' || *b == b'\r') {
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => event.name = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if any_data {
                    event.data.push(b'\n');
                }
                event.data.extend_from_slice(value);
                any_data = true;
            }
            _ => {}
        }
    }
    (any_data || !event.name.is_empty()).then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_any_chunking() {
        let stream = b"event: a\ndata: {\"x\":1}\n\n: comment\n\nevent: b\r\ndata: 1\r\ndata: 2\r\n\r\ndata: tail";
        for cut in 0..stream.len() {
            let mut d = SseDecoder::default();
            let mut got = Vec::new();
            d.feed(&stream[..cut]).unwrap();
            while let Some(e) = d.next_event() {
                got.push(e);
            }
            d.feed(&stream[cut..]).unwrap();
            while let Some(e) = d.next_event() {
                got.push(e);
            }
            got.extend(d.finish());
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0].name, "a");
            assert_eq!(got[0].data, b"{\"x\":1}");
            assert_eq!(got[1].name, "b");
            assert_eq!(got[1].data, b"1\n2");
            assert_eq!(got[2].data, b"tail");
        }
    }
}
