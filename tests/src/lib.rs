//! End-to-end test harness: the real `buurtsync` binary on a temporary SQLite file,
//! real websocket clients built on sync-core, and helpers to run third-party clients.
//!
//! Layout:
//! - [`server`]: start/stop the server process, run admin commands, seed fixtures.
//! - [`client`]: a Rust client on sync-core's codec and engine over tokio-tungstenite.

pub mod client;
pub mod http;
pub mod server;

/// Upper bound for any single wait in a test; loopback work finishes far sooner.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `len` letters that do not compress (a xorshift sequence from `seed`): sizes a test
/// sets are then the sizes automerge stores, compressed or not.
pub fn incompressible(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}
