//! Fuzz target: the HTTP API's request parsing, as the server's handlers call it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| buurtsync_fuzz::http(data));
