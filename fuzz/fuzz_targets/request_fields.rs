//! A client's request body, as routing reads it: any bytes give a value or
//! a clean error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_providers::RoutingFields;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = RoutingFields::parse(data) {
        assert!(!fields.model.is_empty());
    }
});
