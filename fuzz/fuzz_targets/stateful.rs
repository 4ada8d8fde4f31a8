//! Fuzz target: two peers' message sequences through the server's check.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| buurtsync_fuzz::stateful(data));
