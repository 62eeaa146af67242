//! Triangular solves with a supernodal Cholesky factor, split over two disjoint parts of the
//! elimination tree so that two threads can each sweep their own half of the factor.
//!
//! faer's supernodal solve visits the supernodes one after the other: one core streams the
//! whole factor (≈ 440 MB at 1M unknowns) forward and again backward, which is bound by what
//! one core can read from memory, while the other core is idle. In the elimination tree a
//! supernode only updates its ancestors, so the supernodes below the top separator fall into
//! subtrees that never touch each other: [`SubtreeSplit`] cuts the supernodes (in their
//! postorder) into a part A = `[0, mid)`, a part B = `[mid, top)` with no parent link from A
//! into B, and the top `[top, n_supernodes)` that both update.
//!
//! - Forward (L y = b): A and B run at once; each subtracts its updates of its own columns in
//!   place and its updates of the top columns into an accumulator of its own; the top then
//!   receives A's accumulator, then B's, and is solved on one thread.
//! - Backward (Lᵀ x = y): the top first, then A and B at once, both only reading the top.
//!
//! Each supernode's arithmetic is faer's own (the same dense triangular solve and product),
//! and the accumulators are added in the same order whatever the thread count, so the result
//! is the same bit for bit on one worker or two. It differs from faer's sequential solve only
//! in the rounding of the top columns' updates (summed per part, then added).

use faer::linalg::matmul::matmul_with_conj;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place_with_conj, solve_upper_triangular_in_place_with_conj,
};
use faer::sparse::linalg::cholesky::supernodal::{SupernodalLltRef, SymbolicSupernodalCholesky};
use faer::{Accum, Conj, MatMut, MatRef, Par};
use std::ops::Range;

/// How many candidate tops (the last supernodes in postorder) the split tries.
const TOP_CANDIDATES: usize = 256;

/// A split is kept only when the smaller part holds at least this share of the factor: below
/// it the second thread saves less than its spawn and the accumulators cost.
const MIN_SHARE: f64 = 0.125;

/// Where the supernodes are cut: part A `[0, mid)`, part B `[mid, top)`, the top
/// `[top, n_supernodes)`, and the first column of B and of the top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubtreeSplit {
    mid: usize,
    top: usize,
    n_supernodes: usize,
    col_mid: usize,
    col_top: usize,
    n: usize,
}

impl SubtreeSplit {
    /// The balanced split of the factor's supernodes, or `None` when none is worth it (a small
    /// or chain-like tree, or supernodes not in a postorder faer guarantees today but this
    /// code does not assume).
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
        let (mid, top) = best_cut(&parent, &prefix)?;
        Some(SubtreeSplit {
            mid,
            top,
            n_supernodes: ns,
            col_mid: begin[mid] as usize,
            col_top: begin[top] as usize,
            n,
        })
    }

    /// Solves L Lᵀ x = b in place for one right-hand side `x` in the factor's (permuted)
    /// order; parts A and B on two threads when `workers` ≥ 2, one after the other otherwise,
    /// with the same arithmetic either way.
    pub(crate) fn solve(&self, l: SupernodalLltRef<'_, u32, f64>, x: &mut [f64], workers: usize) {
        let (xa, rest) = x.split_at_mut(self.col_mid);
        let (xb, xt) = rest.split_at_mut(self.col_top - self.col_mid);
        let a = 0..self.mid;
        let b = self.mid..self.top;
        let top = self.top..self.n_supernodes;
        let (col_top, col_mid, n) = (self.col_top, self.col_mid, self.n);
        let mut acc_a = vec![0.0; n - col_top];
        let mut acc_b = vec![0.0; n - col_top];
        both(
            workers,
            || forward(l, a.clone(), 0, col_top, xa, &mut acc_a),
            || forward(l, b.clone(), col_mid, col_top, xb, &mut acc_b),
        );
        for ((t, pa), pb) in xt.iter_mut().zip(&acc_a).zip(&acc_b) {
            *t = (*t + pa) + pb;
        }
        forward(l, top.clone(), col_top, n, xt, &mut []);
        backward(l, top, col_top, n, xt, &[]);
        let xt = &*xt;
        both(
            workers,
            || backward(l, a, 0, col_top, xa, xt),
            || backward(l, b, col_mid, col_top, xb, xt),
        );
    }
}

/// The cut (mid, top) minimising the larger part plus the top, among tops made of the last
/// [`TOP_CANDIDATES`] supernodes; `None` when the smaller part would be under [`MIN_SHARE`].
fn best_cut(parent: &[Option<usize>], prefix: &[u64]) -> Option<(usize, usize)> {
    let ns = parent.len();
    let total = prefix[ns];
    let mut best: Option<(u64, usize, usize)> = None;
    let mut crossing = vec![0i64; ns + 2];
    for top in (ns.saturating_sub(TOP_CANDIDATES).max(2)..ns).rev() {
        if total - prefix[top] > total / 2 {
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
        let mut open = 0;
        for m in 1..top {
            open += crossing[m];
            if open != 0 {
                continue;
            }
            let (wa, wb) = (prefix[m], prefix[top] - prefix[m]);
            let cost = wa.max(wb) + (total - prefix[top]);
            if (wa.min(wb) as f64) >= MIN_SHARE * total as f64
                && best.is_none_or(|(c, _, _)| cost < c)
            {
                best = Some((cost, m, top));
            }
        }
    }
    best.map(|(_, m, top)| (m, top))
}

/// Runs `fa` on this thread and `fb` on a second one when `workers` ≥ 2, else one after the
/// other. A panic in either is passed on.
fn both(workers: usize, fa: impl FnOnce() + Send, fb: impl FnOnce() + Send) {
    if workers < 2 {
        fa();
        fb();
        return;
    }
    std::thread::scope(|scope| {
        let h = scope.spawn(fb);
        fa();
        if let Err(e) = h.join() {
            std::panic::resume_unwind(e);
        }
    });
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
    use sprs::{CsMat, TriMat};

    /// The 5-point Laplacian on an m × m grid.
    fn poisson(m: usize) -> CsMat<f64> {
        let n = m * m;
        let mut t = TriMat::new((n, n));
        for i in 0..m {
            for j in 0..m {
                let k = i * m + j;
                t.add_triplet(k, k, 4.0);
                if j > 0 {
                    t.add_triplet(k, k - 1, -1.0);
                }
                if j + 1 < m {
                    t.add_triplet(k, k + 1, -1.0);
                }
                if i > 0 {
                    t.add_triplet(k, k - m, -1.0);
                }
                if i + 1 < m {
                    t.add_triplet(k, k + m, -1.0);
                }
            }
        }
        t.to_csr()
    }

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
            one.is_split(),
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
    fn best_cut_separates_two_subtrees_under_a_chain() {
        // Postorder: 0 ← 1 ← 2 (subtree under 6), 3 ← 4 ← 5 (subtree under 6), 6 ← 7 (top).
        let parent = [1, 2, 6, 4, 5, 6, 7].map(Some).into_iter().chain([None]);
        let parent: Vec<Option<usize>> = parent.collect();
        let prefix: Vec<u64> = (0..=8).map(|s| 10 * s as u64).collect();
        assert_eq!(best_cut(&parent, &prefix), Some((3, 6)));
    }

    #[test]
    fn best_cut_refuses_a_chain_and_a_lopsided_tree() {
        let chain: Vec<Option<usize>> = (1..8).map(Some).chain([None]).collect();
        let prefix: Vec<u64> = (0..=8).map(|s| 10 * s as u64).collect();
        assert_eq!(best_cut(&chain, &prefix), None);
        // 0 alone under 7, 1..=6 a chain under 7: the smaller part holds 1/8 of the work
        // only with equal weights; make it lighter.
        let lopsided: Vec<Option<usize>> = [7, 2, 3, 4, 5, 6, 7]
            .map(Some)
            .into_iter()
            .chain([None])
            .collect();
        let mut prefix = vec![0u64, 1];
        prefix.extend((1..=7).map(|s| 1 + 100 * s as u64));
        assert_eq!(best_cut(&lopsided, &prefix), None);
    }
}
