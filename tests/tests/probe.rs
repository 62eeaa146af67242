//! The solver probe inside the agent: watched problem files become node conditions, and
//! `agent-ctl probe` runs it on demand, only on files under the configured directories.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use health_e2e::Agent;

fn write_hilbert(path: &std::path::Path, n: usize) {
    let mut s = format!(
        "%%MatrixMarket matrix coordinate real general\n{n} {n} {}\n",
        n * n
    );
    for i in 1..=n {
        for j in 1..=n {
            s.push_str(&format!("{i} {j} {:e}\n", 1.0 / (i + j - 1) as f64));
        }
    }
    std::fs::write(path, s).expect("write matrix");
}

#[test]
fn watched_ill_conditioned_problem_becomes_a_condition_and_probe_runs_on_demand() {
    let problems = tempfile::tempdir().expect("tempdir");
    let file = problems.path().join("hilbert10.mtx");
    write_hilbert(&file, 10);
    // The host's own disk must not decide the node state this test checks: a full disk on the
    // machine running the tests would make it CRITICAL (DISK_FULL).
    let cfg = format!(
        "[host]\ndisk_warning_ratio = 1.0\ndisk_critical_ratio = 1.0\n\n[probe]\nwatch = [\"{}/*.mtx\"]\ninterval = \"1s\"\n\n[[device]]\nid = \"loihi-0\"\nkind = \"loihi2\"\nbackend = \"sim\"\n",
        problems.path().display()
    );
    let agent = Agent::with_config(&cfg, &["--node", "e2e-probe"]);
    let status = agent.ctl_until(&["--json", "status"], |status| {
        status.contains("ILL_CONDITIONED")
    });
    assert!(
        status.contains("ILL_CONDITIONED") && status.contains("hilbert10.mtx"),
        "{status}"
    );
    assert!(
        status.contains("\"state\":\"WARNING\""),
        "the node is at least WARNING: {status}"
    );

    let text = agent.ctl_ok(&["probe", file.to_str().expect("utf-8"), "--bits", "16"]);
    assert!(
        text.contains("ILL_CONDITIONED") && text.contains("PRECISION_INSUFFICIENT"),
        "{text}"
    );

    // Outside the configured directories: refused, with a one-line reason.
    let other = tempfile::tempdir().expect("tempdir");
    let outside = other.path().join("x.mtx");
    write_hilbert(&outside, 3);
    let out = agent.ctl(&["probe", outside.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PermissionDenied") && err.contains("x.mtx"),
        "{err}"
    );
}
