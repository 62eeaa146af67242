//! Manual timing check for large inputs (ignored by default). Run with
//! `SOLVER_PROBE_LARGE=/path/file.npz cargo test --release -p solver-probe --test read_large -- --ignored --nocapture`.

use std::path::Path;
use std::time::Instant;

use solver_probe::read::{read_matrix, Budget};
use solver_probe::structure::analyze;

#[test]
#[ignore = "manual timing on a large file named by SOLVER_PROBE_LARGE"]
fn time_large_read() {
    let Some(paths) = std::env::var_os("SOLVER_PROBE_LARGE") else {
        eprintln!("SOLVER_PROBE_LARGE not set");
        return;
    };
    for p in std::env::split_paths(&paths) {
        let t = Instant::now();
        let a = read_matrix(Path::new(&p), &Budget::default()).unwrap_or_else(|e| panic!("{e}"));
        let read = t.elapsed();
        let t = Instant::now();
        let s = analyze(&a);
        eprintln!(
            "{}: n {} nnz {} read {:?} analyze {:?} symmetric {}",
            p.display(),
            s.n,
            s.nnz,
            read,
            t.elapsed(),
            s.symmetric
        );
    }
}
