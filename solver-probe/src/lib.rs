//! Solver probe: matrix readers, conditioning and convergence analysis of the PDE systems the
//! analog solvers on these hosts are given.
//!
//! This crate is a workspace member only. Its content (readers, estimators, Krylov solvers,
//! reports and the `solver-probe` CLI) is specified by its own issue; until then it exports
//! nothing, so that nothing can call a probe that does not exist.
//!
//! **Architecture Invariant:** synchronous, pure computation plus file readers: no tokio, no gRPC.
