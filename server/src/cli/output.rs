//! How commands answer: one human line, or one JSON document with `--json`.

pub fn print(json_out: bool, value: serde_json::Value, text: &str) {
    if json_out {
        println!("{value}");
    } else if !text.is_empty() {
        println!("{text}");
    }
}

/// Unix seconds as RFC 3339 (UTC), clamped to what humantime can print.
pub fn rfc3339(secs: i64) -> String {
    // humantime cannot format years past 9999; clamp rather than panic.
    const MAX: u64 = 253_402_300_799;
    let secs = u64::try_from(secs).unwrap_or(0).min(MAX);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}
