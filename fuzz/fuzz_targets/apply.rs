//! Fuzz target: a decoded message applied to a document under the server's check.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| buurtsync_fuzz::apply(data));
