//! Solver probe: matrix readers, structure and conditioning analysis, Krylov solvers and
//! preconditioners for the PDE systems the analog solvers on these hosts are given.
//!
//! The common currency is a square sparse matrix in CSR form (`sprs::CsMat<f64>`).
//!
//! - [`read`]: `.npy` (dense), `.npz` (SciPy sparse), Matrix Market `.mtx`, with errors that
//!   name the file and what is wrong, and a memory budget checked before allocating.
//! - [`structure`]: symmetry, diagonal dominance, bandwidth, Gershgorin bounds, likely SPD.
//! - [`krylov`] and [`precond`]: CG, GMRES(m), BiCGSTAB; none, Jacobi, ILU(0), IC(0); each run
//!   ends with a PETSc-style [`krylov::ConvergedReason`].
//! - [`cond`]: condition number estimates, naming their method and confidence.
//! - [`known_answer`]: a refinement whose operator products come from a device, checked
//!   against the host's f64 solution (the agent's known-answer device probe).
//!
//! **Architecture Invariant:** synchronous, pure computation plus file readers: no tokio, no
//! gRPC. The agent runs it on a blocking pool under a time and size budget.

pub mod cond;
pub mod known_answer;
pub mod krylov;
pub mod precond;
pub mod read;
pub mod report;
pub mod structure;
#[cfg(test)]
mod test_matrices;
