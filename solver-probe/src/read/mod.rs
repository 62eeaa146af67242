//! Matrix file readers. Under construction.
