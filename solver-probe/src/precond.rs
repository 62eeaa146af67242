//! Preconditioners. Under construction.
