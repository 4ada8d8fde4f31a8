//! Fuzz target: the summary extension, decoded and decided against invented catalogs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| buurtsync_fuzz::summary(data));
