//! Krylov solvers. Under construction.
