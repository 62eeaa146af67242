//! Round-trip test: real NumPy/SciPy write matrices (tests/python/write_matrices.sh, which
//! creates a cached venv on first use) and every reader must reproduce the dense values.
//!
//! Set `SOLVER_PROBE_SKIP_PYTHON=1` to skip when neither a venv nor PyPI is available.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::{Path, PathBuf};
use std::process::Command;

use solver_probe::read::{read_matrix, read_vector, Budget};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/write_matrices.sh")
}

/// Expected values are Python repr strings (exact under Rust's correctly rounded parser).
fn num(v: &serde_json::Value) -> f64 {
    v.as_str().expect("string").parse().expect("float repr")
}

#[test]
fn readers_match_numpy_and_scipy() {
    if std::env::var_os("SOLVER_PROBE_SKIP_PYTHON").is_some() {
        eprintln!("skipped: SOLVER_PROBE_SKIP_PYTHON set");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(script())
        .arg(dir.path())
        .output()
        .expect("run write_matrices.sh");
    assert!(
        out.status.success(),
        "write_matrices.sh failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let expected = expected.as_object().expect("object");
    let budget = Budget::default();
    let mut checked = 0;
    for (name, value) in expected {
        let path = dir.path().join(name);
        let rtol = if name.contains("f32") { 1e-6 } else { 0.0 };
        let rows = value.as_array().expect("array");
        if rows.first().is_some_and(|r| r.is_array()) {
            let a = read_matrix(&path, &budget).unwrap_or_else(|e| panic!("{e}"));
            let n = rows.len();
            assert_eq!(a.shape(), (n, n), "{name}");
            let dense = a.to_dense();
            let mut nonzeros = 0;
            for (i, r) in rows.iter().enumerate() {
                let r = r.as_array().expect("row");
                for (j, v) in r.iter().enumerate() {
                    let want = num(v);
                    let got = dense[[i, j]];
                    assert!(
                        (got - want).abs() <= rtol * want.abs(),
                        "{name}: ({i}, {j}) got {got}, expected {want}"
                    );
                    nonzeros += usize::from(want != 0.0);
                }
            }
            // Indices sorted and unique (sprs guarantees it; check the reader respects it).
            for row in a.outer_iterator() {
                assert!(row.indices().windows(2).all(|w| w[0] < w[1]), "{name}");
            }
            assert!(a.nnz() >= nonzeros, "{name}");
        } else {
            let v = read_vector(&path, &budget).unwrap_or_else(|e| panic!("{e}"));
            let want: Vec<f64> = rows.iter().map(num).collect();
            assert_eq!(v, want, "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} files checked");
}
