//! Sparse factorizations with fill-reducing orderings (faer), sized before they are formed.
//!
//! - [`SparseCholesky`]: LLᵀ with an AMD ordering, for symmetric positive definite matrices.
//!   Its size is exact after the symbolic analysis (the number of stored values of L).
//! - [`SparseLu`]: LU with partial pivoting and a COLAMD column ordering, for everything else.
//!   Pivoting makes its size known only during the numeric factorization, so it is bounded
//!   beforehand by the George–Ng structure: for the same column ordering, L fits in the
//!   Householder vectors and U in the R of a QR of A, whose symbolic size faer computes.
//!
//! Both refuse, with [`FactorError::OverBudget`] naming the bytes, before allocating the
//! numeric factor when it would not fit the byte budget, so the caller can fall back and say
//! why. Indices are `u32` (half the bytes of `usize`); matrices with 2³¹ or more rows or
//! entries are refused the same way.
//!
//! A single right-hand side with a supernodal Cholesky factor is solved by
//! [`super::subtree::SubtreeSplit`]: disjoint subtrees of the elimination tree below its top on
//! two threads (`SOLVER_PROBE_WORKERS` of them at most), the same bits on one thread or two.
//!
//! Both count the right-hand sides they have solved with (each is one forward and one backward
//! triangular solve), so callers and tests can state how many passes over the factor a method
//! took. Several right-hand sides can be solved in one call: the solve is bound by reading the
//! factor from memory, so a block of two costs little more than one.
//!
//! The input is a validated square CSR `sprs` matrix. Its CSR arrays are the CSC arrays of
//! Aᵀ, so the LU factors Aᵀ and answers A x = b with a transposed solve: no copy of A is made.

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::cholesky::llt::factor::LltError as DenseLltError;
use faer::sparse::linalg::cholesky::supernodal::SupernodalLltRef;
use faer::sparse::linalg::cholesky::{
    factorize_symbolic_cholesky, LltRef, SymbolicCholesky, SymbolicCholeskyRaw, SymmetricOrdering,
};
use faer::sparse::linalg::lu::{factorize_symbolic_lu, LuRef, NumericLu, SymbolicLu};
use faer::sparse::linalg::qr::factorize_symbolic_qr;
use faer::sparse::linalg::LuError;
use faer::sparse::{SparseColMatRef, SymbolicSparseColMatRef};
use faer::{Conj, MatMut, Par, Side};
use sprs::CsMat;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::subtree::SubtreeSplit;
use crate::krylov::Workers;

/// Why a sparse factorization was not formed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FactorError {
    /// The factor (values, indices and workspace) would exceed the byte budget.
    OverBudget {
        /// Which factorization.
        what: &'static str,
        /// Bytes it needs (for the LU: an upper bound).
        bytes: u128,
        /// The budget.
        budget: usize,
    },
    /// A non-positive pivot in the Cholesky factorization.
    NotPositiveDefinite {
        /// Column of the pivot (in the permuted order).
        pivot: usize,
    },
    /// The LU found a structurally or numerically zero pivot.
    Singular,
    /// Anything else faer reports (allocation failure).
    Failed(String),
}

impl FactorError {
    /// Whatever else faer reports, kept as its debug text.
    fn failed(e: impl std::fmt::Debug) -> Self {
        FactorError::Failed(format!("{e:?}"))
    }
}

impl std::fmt::Display for FactorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactorError::OverBudget {
                what,
                bytes,
                budget,
            } => write!(
                f,
                "{what} needs {:.0} MB, over the factorization budget of {:.0} MB",
                *bytes as f64 / 1e6,
                *budget as f64 / 1e6
            ),
            FactorError::NotPositiveDefinite { pivot } => {
                write!(
                    f,
                    "sparse Cholesky met a non-positive pivot at step {pivot}"
                )
            }
            FactorError::Singular => write!(f, "sparse LU met a zero pivot"),
            FactorError::Failed(m) => write!(f, "sparse factorization failed: {m}"),
        }
    }
}

/// The CSR pattern of A with `u32` indices (= the CSC pattern of Aᵀ).
struct Pattern {
    n: usize,
    ptr: Vec<u32>,
    idx: Vec<u32>,
}

impl Pattern {
    fn new(a: &CsMat<f64>, what: &'static str, budget: usize) -> Result<Pattern, FactorError> {
        let n = a.rows();
        let limit = i32::MAX as usize;
        if n >= limit || a.nnz() >= limit {
            return Err(FactorError::OverBudget {
                what,
                bytes: u128::MAX,
                budget,
            });
        }
        let ptr = a.proper_indptr().iter().map(|&p| p as u32).collect();
        let idx = a.indices().iter().map(|&j| j as u32).collect();
        Ok(Pattern { n, ptr, idx })
    }

    fn symbolic(&self) -> SymbolicSparseColMatRef<'_, u32> {
        SymbolicSparseColMatRef::new_checked(self.n, self.n, &self.ptr, None, &self.idx)
    }
}

fn check_budget(what: &'static str, bytes: u128, budget: usize) -> Result<(), FactorError> {
    if bytes > budget as u128 {
        Err(FactorError::OverBudget {
            what,
            bytes,
            budget,
        })
    } else {
        Ok(())
    }
}

fn req_bytes(r: StackReq) -> u128 {
    r.size_bytes() as u128
}

/// Sparse LLᵀ of a symmetric positive definite matrix (AMD ordering).
pub(crate) struct SparseCholesky {
    symbolic: SymbolicCholesky<u32>,
    values: Vec<f64>,
    /// Right-hand sides solved so far (an atomic so that `&self` solves can count).
    solves: AtomicUsize,
    /// The two-thread split of single solves (`None`: simplicial factor or no useful split).
    split: Option<SubtreeSplit>,
    /// Threads a single solve may use (the split's arithmetic does not depend on it).
    workers: usize,
}

impl SparseCholesky {
    /// Symbolic analysis, budget check, numeric factorization. `a` must be symmetric (only
    /// its lower triangle is read).
    pub(crate) fn new(a: &CsMat<f64>, budget: usize) -> Result<SparseCholesky, FactorError> {
        const WHAT: &str = "sparse Cholesky (AMD)";
        let pattern = Pattern::new(a, WHAT, budget)?;
        let symbolic = factorize_symbolic_cholesky(
            pattern.symbolic(),
            Side::Lower,
            SymmetricOrdering::Amd,
            Default::default(),
        )
        .map_err(FactorError::failed)?;
        let scratch = symbolic.factorize_numeric_llt_scratch::<f64>(Par::Seq, Default::default());
        let bytes = symbolic.len_val() as u128 * 8 + req_bytes(scratch);
        check_budget(WHAT, bytes, budget)?;
        let mut values = vec![0.0; symbolic.len_val()];
        let mat = SparseColMatRef::new(pattern.symbolic(), a.data());
        let mut mem = MemBuffer::try_new(scratch).map_err(FactorError::failed)?;
        let result = symbolic.factorize_numeric_llt(
            &mut values,
            mat,
            Side::Lower,
            Default::default(),
            Par::Seq,
            MemStack::new(&mut mem),
            Default::default(),
        );
        if let Err(DenseLltError::NonPositivePivot { index }) = result {
            return Err(FactorError::NotPositiveDefinite { pivot: index });
        }
        drop(mem);
        let split = match symbolic.raw() {
            SymbolicCholeskyRaw::Supernodal(s) => SubtreeSplit::new(s),
            SymbolicCholeskyRaw::Simplicial(_) => None,
        };
        Ok(SparseCholesky {
            symbolic,
            values,
            solves: AtomicUsize::new(0),
            split,
            workers: Workers::get().count(),
        })
    }

    /// The same factor solving on `workers` threads (tests compare 1 and 2).
    #[cfg(test)]
    pub(crate) fn with_workers(mut self, workers: usize) -> SparseCholesky {
        self.workers = workers.max(1);
        self
    }

    /// Parts single solves are split into (0: not split).
    #[cfg(test)]
    pub(crate) fn split_parts(&self) -> usize {
        self.split.as_ref().map_or(0, |s| s.parts())
    }

    /// Stored values of L.
    pub(crate) fn factor_nnz(&self) -> usize {
        self.values.len()
    }

    /// Right-hand sides solved so far (each one forward and one backward triangular solve).
    #[cfg(test)]
    pub(crate) fn solves(&self) -> usize {
        self.solves.load(Ordering::Relaxed)
    }

    /// Solves A x = b in place.
    pub(crate) fn solve_in_place(&self, x: &mut [f64]) {
        self.solve_block_in_place(x, 1);
    }

    /// Solves A X = B in place for `ncols` right-hand sides stored column after column in
    /// `x` (length n·ncols): one pass over the factor for all of them.
    pub(crate) fn solve_block_in_place(&self, x: &mut [f64], ncols: usize) {
        let ncols = ncols.max(1);
        if ncols == 1 && self.solve_split(x) {
            self.solves.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let n = x.len() / ncols;
        let req = self.symbolic.solve_in_place_scratch::<f64>(ncols, Par::Seq);
        let mut mem = MemBuffer::new(req);
        LltRef::<'_, u32, f64>::new(&self.symbolic, &self.values).solve_in_place_with_conj(
            Conj::No,
            MatMut::from_column_major_slice_mut(x, n, ncols),
            Par::Seq,
            MemStack::new(&mut mem),
        );
        self.solves.fetch_add(ncols, Ordering::Relaxed);
    }
}

impl SparseCholesky {
    /// One right-hand side through [`SubtreeSplit`], permuted as faer permutes it
    /// (y_i = x_fwd(i), then x_i = y_inv(i)); false (nothing done) without a split.
    fn solve_split(&self, x: &mut [f64]) -> bool {
        let (Some(split), SymbolicCholeskyRaw::Supernodal(sym)) =
            (&self.split, self.symbolic.raw())
        else {
            return false;
        };
        // Any other length is faer's to refuse, as it does.
        if x.len() != self.symbolic.nrows() {
            return false;
        }
        let l = SupernodalLltRef::<'_, u32, f64>::new(sym, &self.values);
        match self.symbolic.perm() {
            Some(perm) => {
                let (fwd, inv) = perm.arrays();
                let mut y: Vec<f64> = fwd.iter().map(|&f| x[f as usize]).collect();
                split.solve(l, &mut y, self.workers);
                for (xi, &i) in x.iter_mut().zip(inv) {
                    *xi = y[i as usize];
                }
            }
            None => split.solve(l, x, self.workers),
        }
        true
    }
}

/// Sparse LU with partial pivoting of Aᵀ (COLAMD ordering), solving with A and Aᵀ.
pub(crate) struct SparseLu {
    symbolic: SymbolicLu<u32>,
    numeric: NumericLu<u32, f64>,
    /// George–Ng upper bound on the factor's bytes, checked against the budget.
    pub(crate) bound_bytes: u128,
}

impl SparseLu {
    /// Symbolic analysis, budget check on the George–Ng bound, numeric factorization.
    pub(crate) fn new(a: &CsMat<f64>, budget: usize) -> Result<SparseLu, FactorError> {
        const WHAT: &str = "sparse LU (COLAMD)";
        let pattern = Pattern::new(a, WHAT, budget)?;
        let qr = factorize_symbolic_qr(pattern.symbolic(), Default::default())
            .map_err(FactorError::failed)?;
        // L ⊆ H and U ⊆ R: values (8 bytes) and row indices (4 bytes) of both.
        let factor_bound = qr.len_val() as u128 * 12;
        drop(qr);
        let symbolic = factorize_symbolic_lu(pattern.symbolic(), Default::default())
            .map_err(FactorError::failed)?;
        let scratch = symbolic.factorize_numeric_lu_scratch::<f64>(Par::Seq, Default::default());
        let bound_bytes = factor_bound + req_bytes(scratch);
        check_budget(WHAT, bound_bytes, budget)?;
        let mut numeric = NumericLu::new();
        let mat = SparseColMatRef::new(pattern.symbolic(), a.data());
        let mut mem = MemBuffer::try_new(scratch).map_err(FactorError::failed)?;
        let result = symbolic.factorize_numeric_lu(
            &mut numeric,
            mat,
            Par::Seq,
            MemStack::new(&mut mem),
            Default::default(),
        );
        match result {
            Ok(_) => {}
            Err(LuError::SymbolicSingular { .. }) => return Err(FactorError::Singular),
            Err(LuError::Generic(e)) => return Err(FactorError::failed(e)),
        }
        drop(mem);
        Ok(SparseLu {
            symbolic,
            numeric,
            bound_bytes,
        })
    }

    /// Solves A X = B in place for `ncols` right-hand sides stored column after column in `x`
    /// (a transposed solve with the factors of Aᵀ).
    pub(crate) fn solve_in_place(&self, x: &mut [f64], ncols: usize) {
        self.solve(x, ncols, true)
    }

    /// Solves Aᵀ X = B in place for `ncols` right-hand sides stored column after column.
    pub(crate) fn solve_transpose_in_place(&self, x: &mut [f64], ncols: usize) {
        self.solve(x, ncols, false)
    }

    fn solve(&self, x: &mut [f64], ncols: usize, transpose: bool) {
        let ncols = ncols.max(1);
        let n = x.len() / ncols;
        let lu = LuRef::<'_, u32, f64>::new_unchecked(&self.symbolic, &self.numeric);
        let rhs = MatMut::from_column_major_slice_mut(x, n, ncols);
        if transpose {
            let req = self
                .symbolic
                .solve_transpose_in_place_scratch::<f64>(ncols, Par::Seq);
            let mut mem = MemBuffer::new(req);
            lu.solve_transpose_in_place_with_conj(Conj::No, rhs, Par::Seq, MemStack::new(&mut mem));
        } else {
            let req = self.symbolic.solve_in_place_scratch::<f64>(ncols, Par::Seq);
            let mut mem = MemBuffer::new(req);
            lu.solve_in_place_with_conj(Conj::No, rhs, Par::Seq, MemStack::new(&mut mem));
        }
    }
}
