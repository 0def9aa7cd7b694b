#![no_main]
//! See `status_client::serve::fuzzing::gateway_body` for what the input means and the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| status_client::serve::fuzzing::gateway_body(data));
