//! End-to-end test support (filled in below).
