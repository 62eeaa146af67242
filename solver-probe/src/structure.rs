//! Matrix structure analysis. Under construction.
