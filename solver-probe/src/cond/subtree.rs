//! Triangular solves with a supernodal Cholesky factor, split over disjoint subtrees of the
//! elimination tree so that two threads can each sweep their own share of the factor.
//!
//! faer's supernodal solve visits the supernodes one after the other: one core streams the
//! whole factor (≈ 440 MB at 1M unknowns) forward and again backward, which is bound by what
//! one core can read from memory, while the other core is idle. In the elimination tree a
//! supernode only updates its ancestors, so below a top set of supernodes (the top separator
//! and what lies above it) the tree falls into subtrees that never touch each other.
//! [`SubtreeSplit`] cuts the supernodes (in their postorder, where each subtree is a range)
//! into parts `[cuts[i], cuts[i+1])` of whole subtrees with no parent link from one part into
//! another, and the top `[top, n_supernodes)` that all of them update.
//!
//! - Forward (L y = b): the parts run on the worker threads, each taking the next untaken part
//!   from a shared counter ([`run_parts`], as the SpMV does: a slow core costs the part it
//!   holds, not half the solve). A part subtracts its updates of its own columns in place and
//!   its updates of the top columns into an accumulator of its own; the top then receives the
//!   accumulators in part order and is solved on one thread.
//! - Backward (Lᵀ x = y): the top first, then the parts on the threads, all only reading the top.
//!
//! Each supernode's arithmetic is faer's own (the same dense triangular solve and product),
//! and the accumulators are added in part order whatever thread ran which part, so the result
//! is the same bit for bit on one worker or two. It differs from faer's sequential solve only
//! in the rounding of the top columns' updates (summed per part, then added).

use faer::linalg::matmul::matmul_with_conj;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place_with_conj, solve_upper_triangular_in_place_with_conj,
};
use faer::sparse::linalg::cholesky::supernodal::{SupernodalLltRef, SymbolicSupernodalCholesky};
use faer::{Accum, Conj, MatMut, MatRef, Par};
use std::ops::Range;

use crate::krylov::{run_parts, split_mut};

/// How many candidate tops (the last supernodes in postorder) the split tries.
const TOP_CANDIDATES: usize = 32;

/// Parts aimed at: enough that a stalled thread's last part is a small share of the solve and
/// two threads end close together, few enough that each part's accumulator of the top
/// columns (and its hand-over) costs nothing against its sweep.
const TARGET_PARTS: u64 = 16;

/// A split is kept only when two threads are predicted to finish the solve in at most this
/// share of the sequential sweep (below it a thread and the accumulators are not worth it).
const MAX_PREDICTED_SHARE: f64 = 0.8;

/// Where the supernodes are cut: parts `[cuts[i], cuts[i+1])` (the last cut is the first
/// supernode of the top), their first columns (first 0, last the top's first column, so they
/// cut the columns below the top), and the sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubtreeSplit {
    cuts: Vec<usize>,
    col_cuts: Vec<usize>,
    n_supernodes: usize,
    n: usize,
}

impl SubtreeSplit {
    /// The best split of the factor's supernodes, or `None` when none is worth it (a small or
    /// chain-like tree), or when a supernode's parent does not come after it (faer's order
    /// always has parents after their children; this code checks rather than assumes).
    pub(crate) fn new(sym: &SymbolicSupernodalCholesky<u32>) -> Option<SubtreeSplit> {
        let ns = sym.n_supernodes();
        let n = sym.nrows();
        if ns < 3 {
            return None;
        }
        let begin = sym.supernode_begin();
        let end = sym.supernode_end();
        let mut col_to_super = vec![0usize; n];
        for s in 0..ns {
            col_to_super[begin[s] as usize..end[s] as usize].fill(s);
        }
        // parent[s]: the supernode of the first row below s's diagonal block (none: a root).
        let ptr = sym.col_ptr_for_row_idx();
        let rows = sym.row_idx();
        let mut parent = vec![None; ns];
        for (s, p) in parent.iter_mut().enumerate() {
            let pattern = &rows[ptr[s] as usize..ptr[s + 1] as usize];
            *p = pattern.iter().min().map(|&r| col_to_super[r as usize]);
            if p.is_some_and(|p| p <= s) {
                return None;
            }
        }
        // Work per supernode: the values a solve reads.
        let val = sym.col_ptr_for_val();
        let mut prefix = vec![0u64; ns + 1];
        for s in 0..ns {
            prefix[s + 1] = prefix[s] + u64::from(val[s + 1] - val[s]);
        }
        let cuts = best_cuts(&parent, &prefix)?;
        let col_cuts = cuts.iter().map(|&c| begin[c] as usize).collect();
        Some(SubtreeSplit {
            cuts,
            col_cuts,
            n_supernodes: ns,
            n,
        })
    }

    /// Number of parts below the top.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> usize {
        self.cuts.len() - 1
    }

    /// Solves L Lᵀ x = b in place for one right-hand side `x` in the factor's (permuted)
    /// order, the parts on `workers` threads, with the same arithmetic for any count.
    pub(crate) fn solve(&self, l: SupernodalLltRef<'_, u32, f64>, x: &mut [f64], workers: usize) {
        let parts = self.cuts.len() - 1;
        let (col_top, n) = (self.col_cuts[parts], self.n);
        let top = self.cuts[parts]..self.n_supernodes;
        let (below, xt) = x.split_at_mut(col_top);
        let mut accs = vec![vec![0.0; n - col_top]; parts];
        let ranges = |i: usize| (self.cuts[i]..self.cuts[i + 1], self.col_cuts[i]);
        {
            let xs = split_mut(below, &self.col_cuts);
            let jobs: Vec<_> = xs.into_iter().zip(accs.iter_mut()).enumerate().collect();
            let done = run_parts(workers, jobs, false, |(i, (xp, acc))| {
                let (range, c_lo) = ranges(i);
                forward(l, range, c_lo, col_top, xp, acc);
                true
            });
            assert_all(&done);
        }
        for acc in &accs {
            xt.iter_mut().zip(acc).for_each(|(t, a)| *t += a);
        }
        forward(l, top.clone(), col_top, n, xt, &mut []);
        backward(l, top, col_top, n, xt, &[]);
        let xt = &*xt;
        let xs = split_mut(below, &self.col_cuts);
        let done = run_parts(
            workers,
            xs.into_iter().enumerate().collect(),
            false,
            |(i, xp)| {
                let (range, c_lo) = ranges(i);
                backward(l, range, c_lo, col_top, xp, xt);
                true
            },
        );
        assert_all(&done);
    }
}

/// A part whose thread panicked is a broken invariant of the split (its columns were only
/// partly solved): passed on as a panic, as faer's own solve would.
fn assert_all(done: &[bool]) {
    if done.iter().any(|ok| !ok) {
        panic!("a part of the split triangular solve panicked");
    }
}

/// The cuts `[0, c₁, …, top]` minimising the predicted time of two threads (parts handed out
/// in order to whichever is free, then the top on one), among tops made of the last
/// [`TOP_CANDIDATES`] supernodes; `None` when no cut leaves two parts or the prediction is
/// above [`MAX_PREDICTED_SHARE`] of the sequential sweep.
fn best_cuts(parent: &[Option<usize>], prefix: &[u64]) -> Option<Vec<usize>> {
    let ns = parent.len();
    let total = prefix[ns];
    let mut best: Option<(u64, Vec<usize>)> = None;
    let mut crossing = vec![0i64; ns + 2];
    for top in (ns.saturating_sub(TOP_CANDIDATES).max(2)..ns).rev() {
        let w_top = total - prefix[top];
        if w_top > total / 4 {
            break;
        }
        // A cut at m is valid when no supernode s < m has its parent in [m, top): the link
        // s → p crosses every cut m in (s, p].
        crossing.fill(0);
        for (s, p) in parent[..top].iter().enumerate() {
            if let Some(p) = *p {
                if p < top {
                    crossing[s + 1] += 1;
                    crossing[p + 1] -= 1;
                }
            }
        }
        let target = prefix[top] / TARGET_PARTS;
        let mut cuts = vec![0];
        let mut open = 0;
        let mut last_valid = 0;
        for m in 1..=top {
            open += crossing[m];
            if open != 0 && m < top {
                continue;
            }
            let from = cuts[cuts.len() - 1];
            if prefix[m] - prefix[from] > target && last_valid > from {
                cuts.push(last_valid);
            }
            last_valid = m;
        }
        if cuts[cuts.len() - 1] != top {
            cuts.push(top);
        }
        if cuts.len() < 3 {
            continue;
        }
        // Two threads, each taking the next part when free.
        let mut load = [0u64; 2];
        for w in cuts.windows(2) {
            let k = usize::from(load[1] < load[0]);
            load[k] += prefix[w[1]] - prefix[w[0]];
        }
        let cost = load[0].max(load[1]) + w_top;
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, cuts));
        }
    }
    best.filter(|(cost, _)| *cost as f64 <= MAX_PREDICTED_SHARE * total as f64)
        .map(|(_, cuts)| cuts)
}

/// Forward substitution over the supernodes `range`, whose columns start at `c_lo` and are
/// held in `x`; updates of rows at or above `col_top` are subtracted into `acc` instead
/// (index `row − col_top`). Per supernode it is faer's step: the diagonal block's triangular
/// solve, the product with the block below, and the scatter of that product.
fn forward(
    l: SupernodalLltRef<'_, u32, f64>,
    range: Range<usize>,
    c_lo: usize,
    col_top: usize,
    x: &mut [f64],
    acc: &mut [f64],
) {
    let mut tmp = Vec::new();
    for s in range {
        let sn = l.supernode(s);
        let ls = sn.val();
        let size = ls.ncols();
        let (ls_top, ls_bot) = ls.split_at_row(size);
        let start = sn.start() - c_lo;
        let xs = &mut x[start..start + size];
        solve_lower_triangular_in_place_with_conj(
            ls_top,
            Conj::No,
            MatMut::from_column_major_slice_mut(xs, size, 1),
            Par::Seq,
        );
        let pattern = sn.pattern();
        tmp.resize(pattern.len(), 0.0);
        matmul_with_conj(
            MatMut::from_column_major_slice_mut(&mut tmp, pattern.len(), 1),
            Accum::Replace,
            ls_bot,
            Conj::No,
            MatRef::from_column_major_slice(xs, size, 1),
            Conj::No,
            1.0,
            Par::Seq,
        );
        for (&i, &t) in pattern.iter().zip(&tmp) {
            let i = i as usize;
            if i < col_top {
                x[i - c_lo] -= t;
            } else {
                acc[i - col_top] -= t;
            }
        }
    }
}

/// Backward substitution over the supernodes `range` in reverse, their columns held in `x`
/// from `c_lo`, reading rows at or above `col_top` from `x_top`. Per supernode it is faer's
/// step: gather, product with the transposed block below, transposed triangular solve.
fn backward(
    l: SupernodalLltRef<'_, u32, f64>,
    range: Range<usize>,
    c_lo: usize,
    col_top: usize,
    x: &mut [f64],
    x_top: &[f64],
) {
    let mut tmp = Vec::new();
    for s in range.rev() {
        let sn = l.supernode(s);
        let ls = sn.val();
        let size = ls.ncols();
        let (ls_top, ls_bot) = ls.split_at_row(size);
        let pattern = sn.pattern();
        tmp.clear();
        tmp.extend(pattern.iter().map(|&i| {
            let i = i as usize;
            if i < col_top {
                x[i - c_lo]
            } else {
                x_top[i - col_top]
            }
        }));
        let start = sn.start() - c_lo;
        let xs = &mut x[start..start + size];
        matmul_with_conj(
            MatMut::from_column_major_slice_mut(xs, size, 1),
            Accum::Add,
            ls_bot.transpose(),
            Conj::Yes,
            MatRef::from_column_major_slice(&tmp, pattern.len(), 1),
            Conj::No,
            -1.0,
            Par::Seq,
        );
        solve_upper_triangular_in_place_with_conj(
            ls_top.transpose(),
            Conj::Yes,
            MatMut::from_column_major_slice_mut(xs, size, 1),
            Par::Seq,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cond::factor::SparseCholesky;
    use crate::cond::shift_invert::{smallest_eigen, Limits};
    use crate::cond::sparse;
    use crate::test_matrices::poisson_2d as poisson;

    fn rhs(n: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect()
    }

    #[test]
    fn split_solve_is_the_same_bits_on_one_or_two_workers_and_solves_a() {
        let a = poisson(150);
        let n = a.rows();
        let one = SparseCholesky::new(&a, 1 << 30).unwrap().with_workers(1);
        let two = SparseCholesky::new(&a, 1 << 30).unwrap().with_workers(2);
        assert!(
            one.split_parts() >= 2,
            "the 150 x 150 Laplacian's factor was not split"
        );
        let b = rhs(n);
        let (mut x1, mut x2) = (b.clone(), b.clone());
        one.solve_in_place(&mut x1);
        two.solve_in_place(&mut x2);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x1), bits(&x2));
        // faer's own sequential solve (the unsplit path, a block of two equal columns).
        let mut faer_x = [b.clone(), b.clone()].concat();
        one.solve_block_in_place(&mut faer_x, 2);
        let diff = sparse::distance2(&x1, &faer_x[..n]);
        assert!(
            diff <= 1e-12 * sparse::norm2(&x1),
            "split vs faer: {diff:e}"
        );
        let mut ax = vec![0.0; n];
        sparse::matvec(&a, &x1, &mut ax);
        assert!(sparse::distance2(&ax, &b) <= 1e-10 * sparse::norm2(&b));
        assert_eq!(one.solves(), 3);
    }

    #[test]
    fn lambda_min_is_the_same_bits_on_one_or_two_workers() {
        let m = 150;
        let a = poisson(m);
        let lmax = 8.0;
        let start = {
            let v = rhs(a.rows());
            let nv = sparse::norm2(&v);
            v.into_iter().map(|x| x / nv).collect::<Vec<_>>()
        };
        let limits = Limits {
            tol: 1e-10,
            max_solves: 60,
            max_basis: 16,
        };
        let run = |workers| {
            let c = SparseCholesky::new(&a, 1 << 30)
                .unwrap()
                .with_workers(workers);
            smallest_eigen(&a, &c, start.clone(), lmax, limits).unwrap()
        };
        let (e1, e2) = (run(1), run(2));
        assert_eq!(e1.rho.to_bits(), e2.rho.to_bits());
        assert_eq!(e1.res.to_bits(), e2.res.to_bits());
        assert_eq!(e1.solves, e2.solves);
        let h = std::f64::consts::PI / (2.0 * (m + 1) as f64);
        let exact = 8.0 * h.sin().powi(2);
        assert!((e1.rho - exact).abs() <= 5e-8 * exact, "{e1:?} vs {exact}");
    }

    #[test]
    fn best_cuts_separate_two_subtrees_under_a_chain() {
        // Postorder: 0 ← 1 ← 2 (subtree under 6), 3 ← 4 ← 5 (subtree under 6), 6 ← 7 (top).
        let parent = [1, 2, 6, 4, 5, 6, 7].map(Some).into_iter().chain([None]);
        let parent: Vec<Option<usize>> = parent.collect();
        let prefix: Vec<u64> = (0..=8).map(|s| 10 * s as u64).collect();
        assert_eq!(best_cuts(&parent, &prefix), Some(vec![0, 3, 6]));
    }

    #[test]
    fn best_cuts_make_several_parts_of_many_subtrees() {
        // 16 leaves 0..16 under 16, 16 under 17 (top); equal work: the leaves are parts of
        // about total/16 each, every cut between two leaves is valid.
        let mut parent: Vec<Option<usize>> = vec![Some(16); 16];
        parent.extend([Some(17), None]);
        let prefix: Vec<u64> = (0..=18).map(|s| 10 * s as u64).collect();
        let cuts = best_cuts(&parent, &prefix).unwrap();
        assert!(cuts.len() >= 5, "{cuts:?}");
        assert_eq!(cuts.first(), Some(&0));
        assert!(matches!(cuts.last(), Some(16 | 17)), "{cuts:?}");
    }

    #[test]
    fn best_cut_refuses_a_chain_and_a_lopsided_tree() {
        let chain: Vec<Option<usize>> = (1..8).map(Some).chain([None]).collect();
        let prefix: Vec<u64> = (0..=8).map(|s| 10 * s as u64).collect();
        assert_eq!(best_cuts(&chain, &prefix), None);
        // 0 alone under 7, 1..=6 a chain under 7, 0 light: two threads would save nothing.
        let lopsided: Vec<Option<usize>> = [7, 2, 3, 4, 5, 6, 7]
            .map(Some)
            .into_iter()
            .chain([None])
            .collect();
        let mut prefix = vec![0u64, 1];
        prefix.extend((1..=7).map(|s| 1 + 100 * s as u64));
        assert_eq!(best_cuts(&lopsided, &prefix), None);
    }
}
