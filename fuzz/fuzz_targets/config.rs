//! The config file: any text loads or gives a clean error naming its key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sluice_config::load_str(text, &|_| None);
    }
});
