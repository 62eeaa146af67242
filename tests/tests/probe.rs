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

/// A watched file the probe cannot read is PROBE_FAILED (the probe's fault, named with the
/// reader's error), never NOT_CONVERGING; and a probe set to the solver's own numbers judges
/// the file at them.
#[test]
fn unreadable_file_is_probe_failed_and_the_solvers_numbers_are_used() {
    let problems = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        problems.path().join("broken.mtx"),
        "%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 not-a-number\n",
    )
    .expect("write");
    // The 1D Laplacian (n = 200): CG needs about n iterations, GMRES(30) far more.
    let n = 200;
    let mut lap = format!(
        "%%MatrixMarket matrix coordinate real general\n{n} {n} {}\n",
        3 * n - 2
    );
    for i in 1..=n {
        lap.push_str(&format!("{i} {i} 2\n"));
        if i < n {
            lap.push_str(&format!("{i} {} -1\n{} {i} -1\n", i + 1, i + 1));
        }
    }
    std::fs::write(problems.path().join("laplace.mtx"), lap).expect("write");
    let cfg = format!(
        "[host]\ndisk_warning_ratio = 1.0\ndisk_critical_ratio = 1.0\n\n[probe]\nwatch = [\"{}/*.mtx\"]\ninterval = \"1s\"\nrtol = 1e-4\nmax_iter = 20\nmethod = \"gmres\"\npreconditioner = \"none\"\n\n[[device]]\nid = \"loihi-0\"\nkind = \"loihi2\"\nbackend = \"sim\"\n",
        problems.path().display()
    );
    let agent = Agent::with_config(&cfg, &["--node", "e2e-probe-failed"]);
    let status = agent.ctl_until(&["--json", "status"], |s| {
        s.contains("PROBE_FAILED") && s.contains("max_iter 20")
    });
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    let conditions = v["host"]["conditions"].as_array().expect("conditions");
    let about = |file: &str| {
        conditions
            .iter()
            .filter(|c| c["subject"].as_str().is_some_and(|s| s.ends_with(file)))
            .map(|c| {
                (
                    c["code"].as_str().unwrap_or("").to_string(),
                    c["message"].to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let broken = about("broken.mtx");
    assert!(
        broken
            .iter()
            .any(|(c, m)| c == "PROBE_FAILED" && m.contains("broken.mtx")),
        "{broken:?}"
    );
    assert!(
        broken.iter().all(|(c, _)| c != "NOT_CONVERGING"),
        "an unreadable file is not a convergence failure: {broken:?}"
    );
    // GMRES(30) without preconditioning cannot bring the Laplacian to 1e-4 in 20 iterations:
    // judged at the solver's own numbers, naming a pair that works.
    let laplace = about("laplace.mtx");
    assert!(
        laplace.iter().any(|(c, m)| c == "NOT_CONVERGING"
            && m.contains("the solver's setting (GMRES(30) + none at rtol 1e-4, max_iter 20)")),
        "{laplace:?}"
    );
}
