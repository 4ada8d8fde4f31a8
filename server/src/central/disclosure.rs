//! Statistical disclosure control of the aggregates: primary suppression, secondary
//! suppression over every additive relation the central office can form, and
//! consistency across releases.
//!
//! The central office may fetch the month, quarter and year tables of the same data and
//! fetches them again every night. Suppressing small cells one by one (primary
//! suppression) is then not enough: a hidden month follows from its quarter minus the
//! other two months, and a cell hidden tonight follows from last night's release if it
//! did not change. This module protects the *union* of all releases:
//!
//! 1. **Primary**: a cell resting on 1 to k-1 units (households, sessions, ...) is
//!    suppressed.
//! 2. **Relations**: the additive relations between published cells are written down as
//!    equations `total = part + part + ...` ([`Relation`]): year = its quarters, quarter =
//!    its months, and equal metrics (`plans_closed` = `plans_status.afgesloten`). The
//!    aggregates publish no wijk totals and no category totals, so these are all the
//!    equations there are (docs/central-office.md lists them).
//! 3. **Secondary**: an attacker ([`determined`]) solves every equation system exactly
//!    (Gaussian elimination over the unknowns) and narrows every unknown with interval
//!    propagation (values are whole and not negative). While it pins down a suppressed
//!    cell, the smallest published cell of an equation holding that cell is suppressed
//!    too, and the attack runs again. This is the iterate-until-safe idea of τ-ARGUS'
//!    hierarchical ("modular", HiTaS) secondary suppression (Hundepool et al.,
//!    *Statistical Disclosure Control*, Wiley 2012, §4.3; Eurostat/CBS practice for
//!    frequency tables), simplified to our small, tree-shaped hierarchies, where an exact
//!    check per connected set of equations is cheap.
//! 4. **Across releases**: [`Memory`] keeps what every earlier release said. A cell
//!    suppressed before stays suppressed while its value is unchanged (else last night's
//!    equations would solve it today), and a cell published before with the same value
//!    counts as known to the attacker (it cannot be hidden again, so it is never chosen
//!    as a secondary suppression).
//!
//! Zero cells inside a suppressed equation may be chosen as secondary suppressions, so
//! a suppressed cell may be 0: the attacker knows only "whole and not negative".

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use crate::store::releases::Released;

/// One cell to protect: its value, the number of distinct units behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub value: f64,
    pub units: u64,
}

/// `Σ cells[left] = Σ cells[right]`, by index into the cell list: a total and its
/// parts (`[quarter] = [months]`), two equal metrics, or two breakdowns of one count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub left: Vec<usize>,
    pub right: Vec<usize>,
}

impl Relation {
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.left.iter().chain(&self.right).copied()
    }
}

/// [`protect`] for each connected set of cells on its own (cells share no equation
/// across sets, and the exact attack is cubic in the unknowns of one system).
pub fn protect_all(cells: &[Input], relations: &[Relation], how: Protection<'_>) -> Vec<bool> {
    let n = cells.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for r in relations {
        let mut members = r.members();
        if let Some(first) = members.next() {
            for m in members {
                let (a, b) = (root(&mut parent, first), root(&mut parent, m));
                parent[a] = b;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut by_group: BTreeMap<usize, Vec<&Relation>> = BTreeMap::new();
    for r in relations {
        if let Some(first) = r.members().next() {
            let g = root(&mut parent, first);
            by_group.entry(g).or_default().push(r);
        }
    }
    let mut out = vec![false; n];
    for (g, members) in groups {
        let local: HashMap<usize, usize> =
            members.iter().enumerate().map(|(j, &i)| (i, j)).collect();
        let sub_cells: Vec<Input> = members.iter().map(|&i| cells[i].clone()).collect();
        let sub_relations: Vec<Relation> = by_group
            .get(&g)
            .map(|rs| {
                rs.iter()
                    .map(|r| Relation {
                        left: r.left.iter().map(|i| local[i]).collect(),
                        right: r.right.iter().map(|i| local[i]).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sub_keys: Option<Vec<String>> = how
            .keys
            .map(|(k, _)| members.iter().map(|&i| k[i].clone()).collect());
        let sub_floor: Option<Vec<bool>> =
            how.floor.map(|f| members.iter().map(|&i| f[i]).collect());
        let s = protect(
            &sub_cells,
            &sub_relations,
            Protection {
                min_count: how.min_count,
                keys: sub_keys.as_deref().zip(how.keys.map(|(_, m)| m)),
                floor: sub_floor.as_deref(),
            },
        );
        for (j, &i) in members.iter().enumerate() {
            out[i] = s[j];
        }
    }
    out
}

/// What earlier releases published, per cell key: the value and whether it was hidden.
/// Loaded from the store (`store.releases()`) before a release and written back with
/// it, so it survives restarts and is shared by every node.
#[derive(Debug, Default)]
pub struct Memory {
    released: HashMap<String, Released>,
    /// Keys whose entry [`remember`](Self::remember) changed: what the store must write.
    changed: BTreeSet<String>,
}

impl Memory {
    /// The memory as the store keeps it.
    pub fn from_store(released: HashMap<String, Released>) -> Memory {
        Memory {
            released,
            changed: BTreeSet::new(),
        }
    }

    /// Remembers a release.
    pub fn remember<'a>(&mut self, cells: impl IntoIterator<Item = (&'a str, f64, bool)>) {
        for (key, value, suppressed) in cells {
            let new = Released { value, suppressed };
            let old = self.released.insert(key.to_owned(), new);
            if old.is_none_or(|o| o.suppressed != suppressed || !same(o.value, value)) {
                self.changed.insert(key.to_owned());
            }
        }
    }

    /// The entries changed since [`from_store`](Self::from_store), in key order.
    pub fn changed(&self) -> Vec<(String, Released)> {
        self.changed
            .iter()
            .filter_map(|k| Some((k.clone(), *self.released.get(k)?)))
            .collect()
    }

    fn get(&self, key: &str) -> Option<(f64, bool)> {
        self.released.get(key).map(|r| (r.value, r.suppressed))
    }
}

/// What to protect against: the threshold, earlier releases, and cells hidden anyway.
#[derive(Clone, Copy, Debug)]
pub struct Protection<'a> {
    /// k: a cell resting on 1 to k-1 units is suppressed.
    pub min_count: u64,
    /// The cells' keys and the memory of earlier releases; `None` protects one release
    /// on its own.
    pub keys: Option<(&'a [String], &'a Memory)>,
    /// Cells hidden whatever happens (a stricter export starts from the server's own
    /// release, so it publishes a subset of what that release publishes).
    pub floor: Option<&'a [bool]>,
}

impl Protection<'_> {
    /// One release on its own at threshold `min_count`.
    pub fn alone(min_count: u64) -> Protection<'static> {
        Protection {
            min_count,
            keys: None,
            floor: None,
        }
    }
}

/// Which cells to suppress: primary (1 to `min_count - 1` units), then secondary until
/// no suppressed cell follows from the relations, this release and earlier ones.
/// `how.keys` name the cells for [`Memory`].
pub fn protect(cells: &[Input], relations: &[Relation], how: Protection<'_>) -> Vec<bool> {
    let Protection {
        min_count,
        keys,
        floor,
    } = how;
    let n = cells.len();
    let mut suppressed: Vec<bool> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.units > 0 && c.units < min_count) || floor.is_some_and(|f| f[i]))
        .collect();
    // Known to the attacker from an earlier release, with the same value.
    let mut known_before = vec![false; n];
    if let Some((keys, memory)) = keys {
        for (i, key) in keys.iter().enumerate() {
            match memory.get(key) {
                Some((v, true)) if same(v, cells[i].value) => suppressed[i] = true,
                Some((v, false)) if same(v, cells[i].value) => known_before[i] = true,
                _ => {}
            }
        }
    }
    let values: Vec<f64> = cells.iter().map(|c| c.value).collect();
    // Each pass suppresses at least one more cell, so this ends.
    loop {
        let hidden: Vec<bool> = (0..n).map(|i| suppressed[i] && !known_before[i]).collect();
        let pinned = determined(&values, &hidden, relations);
        // One at a time (one extra cell often protects several), the cheapest over
        // every pinned cell: below it before beside it before above it, then smallest.
        let best = pinned
            .into_iter()
            .filter_map(|x| cheapest_partner(x, &values, &suppressed, &known_before, relations))
            .min_by(|a, b| {
                a.1.cmp(&b.1)
                    .then(values[a.0].total_cmp(&values[b.0]))
                    .then(a.0.cmp(&b.0))
            });
        match best {
            Some((extra, _)) => suppressed[extra] = true,
            None => break,
        }
    }
    suppressed
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The published cell, in an equation holding `x`, whose suppression costs least, and
/// its tier: 0 a part under `x` (x is the total), 1 a part beside `x`, 2 a total
/// (hiding totals spreads upwards, so they come last); then the smallest value.
fn cheapest_partner(
    x: usize,
    values: &[f64],
    suppressed: &[bool],
    known_before: &[bool],
    relations: &[Relation],
) -> Option<(usize, u8)> {
    relations
        .iter()
        .filter(|r| r.members().any(|m| m == x))
        .flat_map(|r| {
            // The longer side holds the parts.
            let (parts, totals) = if r.right.len() >= r.left.len() {
                (&r.right, &r.left)
            } else {
                (&r.left, &r.right)
            };
            let x_is_total = totals.contains(&x);
            parts
                .iter()
                .map(move |&p| (p, if x_is_total { 0u8 } else { 1 }))
                .chain(totals.iter().map(|&t| (t, 2u8)))
        })
        .filter(|&(i, _)| !suppressed[i] && !known_before[i])
        .min_by(|a, b| {
            a.1.cmp(&b.1)
                .then(values[a.0].total_cmp(&values[b.0]))
                .then(a.0.cmp(&b.0))
        })
}

/// The attacker: the hidden cells whose exact value follows from the published cells
/// and the relations (exactly, by linear algebra, or by bounds: values are whole and
/// not negative). Pure, so the tests run the same attack the server defends against.
pub fn determined(values: &[f64], hidden: &[bool], relations: &[Relation]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    // Equations over hidden cells only: Σ coef·x = constant from the published ones.
    let equations: Vec<(BTreeMap<usize, f64>, f64)> = relations
        .iter()
        .filter_map(|r| {
            let mut coef: BTreeMap<usize, f64> = BTreeMap::new();
            let mut constant = 0.0;
            let mut term = |i: usize, c: f64| {
                if hidden[i] {
                    *coef.entry(i).or_default() += c;
                } else {
                    constant -= c * values[i];
                }
            };
            for &l in &r.left {
                term(l, 1.0);
            }
            for &p in &r.right {
                term(p, -1.0);
            }
            coef.retain(|_, c| c.abs() > 1e-12);
            (!coef.is_empty()).then_some((coef, constant))
        })
        .collect();
    out.extend(linear(&equations));
    out.extend(bounds(&equations, hidden));
    out
}

/// Unknowns fixed by the equations alone: Gaussian elimination to reduced row echelon
/// form; a row with a single unknown fixes it.
fn linear(equations: &[(BTreeMap<usize, f64>, f64)]) -> BTreeSet<usize> {
    let vars: Vec<usize> = equations
        .iter()
        .flat_map(|(c, _)| c.keys().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let col: HashMap<usize, usize> = vars.iter().enumerate().map(|(j, &v)| (v, j)).collect();
    let mut rows: Vec<Vec<f64>> = equations
        .iter()
        .map(|(coef, _)| {
            let mut row = vec![0.0; vars.len()];
            for (v, c) in coef {
                row[col[v]] = *c;
            }
            row
        })
        .collect();
    let mut pivot_row = 0;
    for j in 0..vars.len() {
        let Some(p) =
            (pivot_row..rows.len()).max_by(|&a, &b| rows[a][j].abs().total_cmp(&rows[b][j].abs()))
        else {
            break;
        };
        if rows[p][j].abs() < 1e-9 {
            continue;
        }
        rows.swap(pivot_row, p);
        let lead = rows[pivot_row][j];
        for v in rows[pivot_row].iter_mut() {
            *v /= lead;
        }
        for r in 0..rows.len() {
            if r != pivot_row && rows[r][j].abs() > 1e-12 {
                let f = rows[r][j];
                let pivot = rows[pivot_row].clone();
                for (v, pv) in rows[r].iter_mut().zip(pivot) {
                    *v -= f * pv;
                }
            }
        }
        pivot_row += 1;
    }
    rows.iter()
        .filter_map(|row| {
            let mut nonzero = row.iter().enumerate().filter(|(_, v)| v.abs() > 1e-9);
            match (nonzero.next(), nonzero.next()) {
                (Some((j, _)), None) => Some(vars[j]),
                _ => None,
            }
        })
        .collect()
}

/// Unknowns whose bounds meet: every hidden cell lies in [0, ∞); each equation with
/// coefficients ±1 narrows each of its unknowns from the others' bounds.
fn bounds(equations: &[(BTreeMap<usize, f64>, f64)], hidden: &[bool]) -> BTreeSet<usize> {
    let mut lo: HashMap<usize, f64> = HashMap::new();
    let mut hi: HashMap<usize, f64> = HashMap::new();
    for (i, _) in hidden.iter().enumerate().filter(|(_, h)| **h) {
        lo.insert(i, 0.0);
        hi.insert(i, f64::INFINITY);
    }
    // Each pass only narrows; a few passes reach the fixpoint on these small systems.
    for _ in 0..20 {
        let mut changed = false;
        for (coef, constant) in equations {
            for (&x, &cx) in coef {
                // cx·x = constant − Σ c·y over the others.
                let (mut min, mut max) = (*constant, *constant);
                for (&y, &cy) in coef {
                    if y == x {
                        continue;
                    }
                    let (a, b) = (cy * lo[&y], cy * hi[&y]);
                    let (small, large) = if a <= b { (a, b) } else { (b, a) };
                    min -= if large.is_nan() { f64::INFINITY } else { large };
                    max -= if small.is_nan() {
                        f64::NEG_INFINITY
                    } else {
                        small
                    };
                }
                let (mut new_lo, mut new_hi) = (min / cx, max / cx);
                if cx < 0.0 {
                    std::mem::swap(&mut new_lo, &mut new_hi);
                }
                let (new_lo, new_hi) = (new_lo.ceil(), new_hi.floor());
                if new_lo > lo[&x] + 1e-9 {
                    lo.insert(x, new_lo);
                    changed = true;
                }
                if new_hi < hi[&x] - 1e-9 {
                    hi.insert(x, new_hi);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    lo.iter()
        .filter(|(x, l)| (hi[x] - **l).abs() < 1e-9)
        .map(|(x, _)| *x)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A year tree: cells 0..12 months, 12..16 quarters, 16 the year.
    fn year_relations() -> Vec<Relation> {
        let mut r: Vec<Relation> = (0..4)
            .map(|q| Relation {
                left: vec![12 + q],
                right: (3 * q..3 * q + 3).collect(),
            })
            .collect();
        r.push(Relation {
            left: vec![16],
            right: (12..16).collect(),
        });
        r
    }

    /// Months (household counts = units); quarters and the year summed from them.
    fn year(months: [u64; 12]) -> Vec<Input> {
        let mut v: Vec<u64> = months.to_vec();
        for q in 0..4 {
            v.push(months[3 * q..3 * q + 3].iter().sum());
        }
        v.push(months.iter().sum());
        v.into_iter()
            .map(|n| Input {
                value: n as f64,
                units: n,
            })
            .collect()
    }

    fn remembering<'a>(keys: &'a [String], memory: &'a Memory) -> Protection<'a> {
        Protection {
            min_count: 5,
            keys: Some((keys, memory)),
            floor: None,
        }
    }

    fn hidden_indices(s: &[bool]) -> Vec<usize> {
        s.iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| i)
            .collect()
    }

    /// Suppression patterns of one year tree (k = 5), as tables: which cells end up
    /// hidden, and the attacker pins none of them.
    #[test]
    fn secondary_suppression_tables() {
        let check = |months: [u64; 12], expected: &[usize]| {
            let cells = year(months);
            let rel = year_relations();
            let s = protect(&cells, &rel, Protection::alone(5));
            assert_eq!(hidden_indices(&s), expected, "{months:?}");
            let values: Vec<f64> = cells.iter().map(|c| c.value).collect();
            assert!(determined(&values, &s, &rel).is_empty(), "{months:?}");
        };
        // Nothing small: nothing hidden.
        check([9; 12], &[]);
        // One small month: its quarter partner month (cheapest), then nothing else.
        check([9, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9], &[0, 1]);
        // A small month whose quarter is small too: the quarter needs a partner quarter,
        // and that quarter a month of its own (the zero months go first: they are free).
        check([0, 3, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9], &[0, 1, 2, 3, 12, 13]);
        // Zeros are cheapest partners.
        check([9, 1, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9], &[1, 2]);
        // Two small months summing to 2 with the quarter published: [0, ∞) bounds
        // leave (0,2), (1,1), (2,0) open, so no third cell is needed.
        check([1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9], &[0, 1]);
        // An empty year: nothing to hide.
        check([0; 12], &[]);
    }

    /// The attacker as a table: plain primary suppression leaves cells it pins down.
    #[test]
    fn attacker_tables() {
        let check = |months: [u64; 12], hide: &[usize], expected: &[usize]| {
            let cells = year(months);
            let values: Vec<f64> = cells.iter().map(|c| c.value).collect();
            let mut hidden = vec![false; values.len()];
            for &h in hide {
                hidden[h] = true;
            }
            let got: Vec<usize> = determined(&values, &hidden, &year_relations())
                .into_iter()
                .collect();
            assert_eq!(got, expected, "{hide:?}");
        };
        let m = [9, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        check(m, &[1], &[1]);
        check(m, &[0, 1], &[]);
        // Month and its quarter hidden: the year gives the quarter, then the month.
        check(m, &[1, 12], &[1, 12]);
        check(m, &[1, 12, 0, 13], &[12, 13]);
        check(m, &[1, 12, 0, 13, 3], &[]);
        // Bounds: a hidden pair in an equation with a published 0 total are both 0.
        check([0; 12], &[0, 1], &[0, 1]);
    }

    /// Across releases: a cell hidden before stays hidden while unchanged, and a cell
    /// published before is never used to hide another (the attacker knows it).
    #[test]
    fn consistent_across_releases() {
        let rel = year_relations();
        let keys: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
        let mut memory = Memory::default();
        let first = year([9, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        let s1 = protect(&first, &rel, remembering(&keys, &memory));
        assert_eq!(hidden_indices(&s1), [0, 1]);
        memory.remember(
            keys.iter()
                .zip(&first)
                .zip(&s1)
                .map(|((k, c), s)| (k.as_str(), c.value, *s)),
        );
        // Tonight month 1 reached 5 and a small month 2 appeared (it had 9).
        let second = year([9, 5, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        let s2 = protect(&second, &rel, remembering(&keys, &memory));
        // Month 0 (unchanged, hidden yesterday) stays hidden: with month 1 published now
        // and month 2 hidden, still two unknowns in quarter 1.
        assert!(s2[0] && s2[2] && !s2[1], "{:?}", hidden_indices(&s2));
        // Both releases together: the attacker pins nothing.
        let mut values: Vec<f64> = second.iter().map(|c| c.value).collect();
        let mut hidden = s2.clone();
        let mut relations = rel.clone();
        // Release 1 as 17 more cells, with "unchanged" equalities where values match.
        values.extend(first.iter().map(|c| c.value));
        hidden.extend(s1.iter().copied());
        // Release 1 as 17 more cells; a cell with the same value in both releases is
        // taken as unchanged (the strongest attacker: `x_today = x_yesterday`).
        for i in 0..17 {
            if same(first[i].value, second[i].value) {
                relations.push(Relation {
                    left: vec![i],
                    right: vec![17 + i],
                });
            }
        }
        for r in year_relations() {
            relations.push(Relation {
                left: r.left.iter().map(|p| p + 17).collect(),
                right: r.right.iter().map(|p| p + 17).collect(),
            });
        }
        assert!(determined(&values, &hidden, &relations).is_empty());
    }
}
