//! Reconnect delays: exponential backoff with full jitter, so a wijkcentrum full of
//! phones coming back at once does not knock on the server in lockstep. Pure: the
//! caller supplies the random number, so the schedule is tested as a table.

use std::time::Duration;

/// The delay schedule of one reconnect loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    failures: u32,
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Backoff {
        let initial_ms = initial_ms.max(1);
        Backoff {
            initial_ms,
            max_ms: max_ms.max(initial_ms),
            failures: 0,
        }
    }

    /// A connection succeeded: the next failure starts the schedule again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The ceiling after `failures` failures: initial × 2^(failures−1), at most max.
    pub fn ceiling(&self) -> u64 {
        let doublings = self.failures.saturating_sub(1).min(32);
        self.initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }

    /// Records a failure and returns the delay before the next attempt: a point in
    /// [ceiling/2, ceiling] chosen by `random` ("equal jitter": never zero, never more
    /// than the ceiling).
    pub fn next_delay(&mut self, random: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling();
        let half = ceiling / 2;
        let spread = ceiling - half;
        Duration::from_millis(half + random % (spread + 1))
    }
}

/// A random u64 for jitter (OS randomness; a constant if none is available).
pub fn jitter() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0;
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delay doubles per failure up to the maximum, stays within its jitter band,
    /// and starts over after a reset.
    #[test]
    fn schedule() {
        let check = |failures: u32, random: u64, expected_ms: u64| {
            let mut b = Backoff::new(500, 8_000);
            let mut last = Duration::ZERO;
            for _ in 0..failures {
                last = b.next_delay(random);
            }
            assert_eq!(
                last.as_millis(),
                u128::from(expected_ms),
                "{failures} failures, random {random}"
            );
        };
        check(1, 0, 250);
        check(1, u64::MAX, 250 + u64::MAX % 251);
        check(1, 250, 500);
        check(2, 0, 500);
        check(3, 0, 1_000);
        check(4, 500, 2_500);
        check(5, 0, 4_000);
        check(6, 0, 4_000);
        check(60, 4_000, 8_000);

        let mut b = Backoff::new(500, 8_000);
        for _ in 0..10 {
            b.next_delay(0);
        }
        b.reset();
        assert_eq!(b.next_delay(0), Duration::from_millis(250));
    }
}
