//! `solver-probe analyze` on real files: findings for known systems, the JSON schema's key
//! fields, and a clear non-zero exit on bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::Path;
use std::process::Command;

fn write_laplacian(path: &Path, n: usize) {
    let mut s = format!(
        "%%MatrixMarket matrix coordinate real symmetric\n{n} {n} {}\n",
        2 * n - 1
    );
    for i in 1..=n {
        s.push_str(&format!("{i} {i} 2\n"));
        if i < n {
            s.push_str(&format!("{} {i} -1\n", i + 1));
        }
    }
    std::fs::write(path, s).unwrap();
}

fn write_hilbert(path: &Path, n: usize) {
    let mut s = format!(
        "%%MatrixMarket matrix coordinate real general\n{n} {n} {}\n",
        n * n
    );
    for i in 1..=n {
        for j in 1..=n {
            s.push_str(&format!("{i} {j} {:e}\n", 1.0 / (i + j - 1) as f64));
        }
    }
    std::fs::write(path, s).unwrap();
}

fn probe(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_solver-probe"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_laplacian_is_healthy_and_its_condition_number_is_the_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lap.mtx");
    write_laplacian(&f, 64);
    let (code, out, err) = probe(&["analyze", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kappa = v["conditioning"]["kappa"].as_f64().unwrap();
    let exact = (std::f64::consts::PI / (2.0 * 65.0)).tan().powi(-2);
    assert!((kappa / exact - 1.0).abs() < 0.01, "{kappa} vs {exact}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{out}");
    assert!(v["convergence"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["reason"] == "CONVERGED_RTOL"));
}

#[test]
fn hilbert_10_is_ill_conditioned_and_too_much_for_a_16_bit_array() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hilbert.mtx");
    write_hilbert(&f, 10);
    let (code, out, err) = probe(&["analyze", f.to_str().unwrap(), "--bits", "16", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(codes.contains(&"ILL_CONDITIONED"), "{codes:?}");
    assert!(codes.contains(&"PRECISION_INSUFFICIENT"), "{codes:?}");
    assert!(
        v["shift"]["sigma"].as_f64().unwrap() > 0.0,
        "a regularizing shift is recommended"
    );
    // The human form says the same.
    let (_, text, _) = probe(&["analyze", f.to_str().unwrap(), "--bits", "16"]);
    assert!(
        text.contains("IllConditioned") && text.contains("1.60"),
        "{text}"
    );
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.mtx");
    std::fs::write(
        &f,
        "%%MatrixMarket matrix coordinate real general\n3 3 1\n0 1 1.0\n",
    )
    .unwrap();
    let (code, _, err) = probe(&["analyze", f.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bad.mtx") && err.trim().lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = probe(&["analyze", "/nonexistent/m.npy"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/m.npy"), "{err}");
}
