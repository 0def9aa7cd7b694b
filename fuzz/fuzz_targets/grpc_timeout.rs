#![no_main]
//! See `order_service::fuzzing::grpc_timeout` for what the input means and the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| order_service::fuzzing::grpc_timeout(data));
