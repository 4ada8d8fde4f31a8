//! Cell-key perturbation, an option for the aggregates (`--central-disclosure
//! cell-key`; the default is suppression, `super::disclosure`).
//!
//! Instead of hiding small cells, every count is published with a little noise, and
//! the noise of a cell depends only on *which* units are in it, so the same cell gets
//! the same noise in every release, table and period length (what makes differencing
//! useless: quarter minus its months is noise, and asking again gives the same noise).
//! This is the cell key method of the Australian Bureau of Statistics (Fraser and
//! Wooton, "A proposed method for confidentialising tabular output to protect against
//! differencing", 2005; Thompson, Broadfoot and Elazar, "Methodology for the automatic
//! confidentialisation of statistical outputs from remote servers at the ABS", 2013),
//! recommended by the ESSnet on harmonised protection of census data for the 2021
//! census round in the European Statistical System and implemented in the sdcTools R
//! packages `cellKey` and `ptable`.
//!
//! - **Record keys.** Each unit (household, session, activiteit, volunteer) has a key,
//!   uniform on [0, 1): HMAC of the unit under a key derived from the server's
//!   pseudonym secret (so nobody without the key store can recompute the noise).
//! - **Cell key.** The fractional part of the sum of the record keys of a cell's
//!   units: here the wrapping sum of 64-bit keys.
//! - **Perturbation table** ([`perturb`]): a count below the threshold js (k) becomes 0
//!   or js, js with probability n/js, so no 1 to js-1 is ever published and the
//!   expected value is n; from js on, noise of at most ±2 with probabilities 0.05,
//!   0.2, 0.5, 0.2, 0.05, narrowed symmetrically so the result is never below js
//!   (expected noise 0, variance 0.8 away from js). Zeros stay zero.
//!
//! Sums of magnitudes (participants, volunteer hours) and quantiles are not counts: they
//! are suppressed below k units, as under suppression.

use serde::{Deserialize, Serialize};

use super::pseudonym::mac;

/// How the aggregates are protected.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disclosure {
    /// Primary and secondary suppression, consistent across releases.
    #[default]
    Suppression,
    /// Every count published with cell-key noise; magnitudes and quantiles suppressed.
    CellKey,
}

/// The record keys of one server (no `Debug`: the key must not reach a log).
#[derive(Clone)]
pub struct CellKeys {
    key: [u8; 32],
}

impl CellKeys {
    /// The record keys under the server's pseudonym secret.
    pub fn new(secret: &[u8; 32]) -> CellKeys {
        CellKeys {
            key: mac(secret, &[b"buurtsync cell key v1"]),
        }
    }

    /// A unit's record key: 64 bits, uniform.
    pub fn record_key(&self, unit: &[u8]) -> u64 {
        let m = mac(&self.key, &[unit]);
        u64::from_be_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]])
    }
}

/// The cell key of a cell: the sum of its units' record keys, modulo 2^64 (the
/// fractional part of a sum of keys on [0, 1)).
pub fn cell_key(record_keys: impl IntoIterator<Item = u64>) -> u64 {
    record_keys.into_iter().fold(0u64, u64::wrapping_add)
}

/// Noise and its probability, away from the threshold.
const NOISE: [(i64, f64); 5] = [(-2, 0.05), (-1, 0.2), (0, 0.5), (1, 0.2), (2, 0.05)];

/// The published value of a count `n` whose cell key is `ck`, threshold `js` (≥ 1).
pub fn perturb(n: u64, ck: u64, js: u64) -> u64 {
    // The top 53 bits as a uniform number on [0, 1).
    let u = (ck >> 11) as f64 / (1u64 << 53) as f64;
    let js = js.max(1);
    if n == 0 {
        return 0;
    }
    if n < js {
        return if u < n as f64 / js as f64 { js } else { 0 };
    }
    let reach = i64::try_from((n - js).min(2)).unwrap_or(2);
    let table: Vec<(i64, f64)> = NOISE
        .iter()
        .copied()
        .filter(|(v, _)| v.abs() <= reach)
        .collect();
    let total: f64 = table.iter().map(|(_, p)| p).sum();
    let mut acc = 0.0;
    for (v, p) in &table {
        acc += p / total;
        if u < acc {
            return n.saturating_add_signed(*v);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell key whose uniform number is `u`.
    fn at(u: f64) -> u64 {
        ((u * (1u64 << 53) as f64) as u64) << 11
    }

    /// The perturbation table as a table: (n, uniform, js) → published.
    #[test]
    fn perturbation_table() {
        let check = |n: u64, u: f64, js: u64, expected: u64| {
            assert_eq!(perturb(n, at(u), js), expected, "n {n}, u {u}, js {js}");
        };
        check(0, 0.9, 5, 0);
        // Below js: js with probability n/js, else 0.
        check(1, 0.1, 5, 5);
        check(1, 0.3, 5, 0);
        check(4, 0.7, 5, 5);
        check(4, 0.9, 5, 0);
        // At js: exact; one above: ±1 at most; further: ±2.
        check(5, 0.01, 5, 5);
        check(5, 0.99, 5, 5);
        check(6, 0.01, 5, 5);
        check(6, 0.99, 5, 7);
        check(20, 0.01, 5, 18);
        check(20, 0.2, 5, 19);
        check(20, 0.5, 5, 20);
        check(20, 0.8, 5, 21);
        check(20, 0.99, 5, 22);
    }

    /// Over a fine grid of cell keys: no 1 to js-1 is published, the noise stays within
    /// ±2 from js on, and the mean is the true count (unbiased).
    #[test]
    fn perturbation_is_bounded_and_unbiased() {
        let js = 5;
        for n in 0..40u64 {
            let steps = 10_000u64;
            let mut sum = 0u64;
            for i in 0..steps {
                let out = perturb(n, at((i as f64 + 0.5) / steps as f64), js);
                assert!(out == 0 || out >= js, "n {n} published as {out}");
                if n >= js {
                    assert!(
                        out.abs_diff(n) <= 2 && out >= js,
                        "n {n} published as {out}"
                    );
                }
                sum += out;
            }
            let mean = sum as f64 / steps as f64;
            assert!((mean - n as f64).abs() < 0.01, "n {n}: mean {mean}");
        }
    }

    /// The same units give the same cell key in any order; other units another one.
    #[test]
    fn cell_keys_are_consistent() {
        let keys = CellKeys::new(&[7; 32]);
        let a = [keys.record_key(b"h1"), keys.record_key(b"h2")];
        let b = [a[1], a[0]];
        assert_eq!(cell_key(a), cell_key(b));
        assert_ne!(
            cell_key(a),
            cell_key([keys.record_key(b"h1"), keys.record_key(b"h3")])
        );
        assert_ne!(
            CellKeys::new(&[8; 32]).record_key(b"h1"),
            keys.record_key(b"h1"),
            "another server, other keys"
        );
    }
}
