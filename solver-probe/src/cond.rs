//! Condition number estimation. Under construction.
