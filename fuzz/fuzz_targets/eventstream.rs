//! Bedrock's binary event-stream framing: any bytes, fed in any pieces,
//! decode to messages or a clean error, never a panic or a runaway buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_providers::eventstream::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    // The first byte picks the piece size, as a network would.
    let (size, rest) = match data.split_first() {
        Some((size, rest)) => (usize::from(*size).max(1), rest),
        None => return,
    };
    for piece in rest.chunks(size) {
        decoder.feed(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let _ = message.header(":event-type");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
