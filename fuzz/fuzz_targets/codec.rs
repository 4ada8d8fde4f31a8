//! Fuzz target: the protocol codec on arbitrary frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| buurtsync_fuzz::codec(data));
