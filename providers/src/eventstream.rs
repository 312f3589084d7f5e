//! AWS's binary `application/vnd.amazon.eventstream` framing, decoded
//! incrementally (Bedrock's `converse-stream` speaks it).
//!
//! A message is a 12-byte prelude (total length, headers length, CRC32 of
//! those 8 bytes), the headers, the payload and a CRC32 of everything before
//! it; integers are big-endian. Both checksums are verified: a corrupt or
//! truncated stream is an error, never silently misread.

use bytes::{Buf, Bytes, BytesMut};

const PRELUDE: usize = 12;
/// Smallest message: prelude and message CRC.
const MIN_MESSAGE: usize = PRELUDE + 4;
/// Largest message accepted (the format's own limit is 16 MiB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Why the byte stream cannot be read as event-stream messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude's CRC does not match.
    PreludeCrc,
    /// The message's CRC does not match.
    MessageCrc,
    /// A length is out of bounds.
    Length,
    /// A header is malformed.
    Header,
}

/// One decoded message. Only string-valued headers are kept (the ones
/// Bedrock uses: `:message-type`, `:event-type`, `:exception-type`,
/// `:content-type`); other header types are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `(name, value)` of string headers, in order.
    pub headers: Vec<(String, String)>,
    /// The payload (JSON for Bedrock).
    pub payload: Bytes,
}

impl Message {
    /// The value of string header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a byte stream into messages; keeps only the incomplete tail.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Adds bytes from upstream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that do not yet make a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = be32(&self.buf[0..4]) as usize;
        let headers_len = be32(&self.buf[4..8]) as usize;
        if crc32fast::hash(&self.buf[0..8]) != be32(&self.buf[8..12]) {
            return Err(DecodeError::PreludeCrc);
        }
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&total) || headers_len > total - MIN_MESSAGE {
            return Err(DecodeError::Length);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        if crc32fast::hash(&frame[..total - 4]) != be32(&frame[total - 4..]) {
            return Err(DecodeError::MessageCrc);
        }
        let headers = parse_headers(&frame[PRELUDE..PRELUDE + headers_len])?;
        let payload = frame.slice(PRELUDE + headers_len..total - 4);
        Ok(Some(Message { headers, payload }))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::with_capacity(3);
    while b.has_remaining() {
        let name_len = b.get_u8() as usize;
        if b.remaining() < name_len + 1 {
            return Err(DecodeError::Header);
        }
        let name = String::from_utf8_lossy(&b[..name_len]).into_owned();
        b.advance(name_len);
        let skip = match b.get_u8() {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            kind @ (6 | 7) => {
                if b.remaining() < 2 {
                    return Err(DecodeError::Header);
                }
                let len = b.get_u16() as usize;
                if b.remaining() < len {
                    return Err(DecodeError::Header);
                }
                if kind == 7 {
                    out.push((name, String::from_utf8_lossy(&b[..len]).into_owned()));
                }
                len
            }
            _ => return Err(DecodeError::Header),
        };
        if b.remaining() < skip {
            return Err(DecodeError::Header);
        }
        b.advance(skip);
    }
    Ok(out)
}

/// Encodes one message with string headers: for tests, benches and mocks.
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (MIN_MESSAGE + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// aws-c-event-stream's published vector: one string header
    /// (`content-type: application/json`), payload `{'foo':'bar'}`.
    const VECTOR: &str = "0000003d0000002007fd83960c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e7b27666f6f273a27626172277d8d9c08b1";

    #[test]
    fn decodes_the_published_vector_at_every_split() {
        let bytes = unhex(VECTOR);
        for cut in 0..bytes.len() {
            let mut d = Decoder::default();
            d.feed(&bytes[..cut]);
            assert_eq!(d.next_message(), Ok(None), "cut {cut}");
            d.feed(&bytes[cut..]);
            let m = d.next_message().unwrap().unwrap();
            assert_eq!(m.header("content-type"), Some("application/json"));
            assert_eq!(&m.payload[..], b"{'foo':'bar'}");
            assert_eq!(d.pending(), 0);
        }
        assert_eq!(
            encode_message(&[("content-type", "application/json")], b"{'foo':'bar'}"),
            bytes
        );
    }

    #[test]
    fn rejects_corruption() {
        let mut bytes = unhex(VECTOR);
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        let mut d = Decoder::default();
        d.feed(&bytes);
        assert_eq!(d.next_message(), Err(DecodeError::MessageCrc));
        let mut bytes = unhex(VECTOR);
        bytes[2] ^= 1;
        let mut d = Decoder::default();
        d.feed(&bytes);
        assert_eq!(d.next_message(), Err(DecodeError::PreludeCrc));
    }

    #[test]
    fn skips_non_string_headers() {
        // Hand-built: a bool-true header, an int32 header, then a string one.
        let mut h = vec![1, b'a', 0, 1, b'b', 4, 0, 0, 0, 7];
        h.extend_from_slice(&[1, b'c', 7, 0, 1, b'x']);
        let total = (16 + h.len()) as u32;
        let mut msg = total.to_be_bytes().to_vec();
        msg.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&msg);
        msg.extend_from_slice(&crc.to_be_bytes());
        msg.extend_from_slice(&h);
        let crc = crc32fast::hash(&msg);
        msg.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        d.feed(&msg);
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(m.headers, vec![("c".to_string(), "x".to_string())]);
        assert!(m.payload.is_empty());
    }
}
