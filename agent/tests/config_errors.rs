//! `health-agent check-config` and startup on bad configs: non-zero exit, and a message that
//! names the file and the key. Runs the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_health-agent"))
        .args(args)
        .output()
        .expect("run health-agent")
}

/// The stderr of a run that must have refused its config (exit code 2).
fn refused(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    let p = path.to_str().expect("utf-8").to_string();
    let out = agent(&["check-config", &p]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        p,
    )
}

const DEVICE: &str = "[[device]]\nid = \"loihi-0\"\nkind = \"loihi2\"\nbackend = \"sim\"\n";

#[test]
fn missing_file_names_the_file() {
    let err = refused(agent(&["check-config", "/nonexistent/dir/agent.toml"]));
    assert!(
        err.contains("/nonexistent/dir/agent.toml") && err.contains("cannot read"),
        "{err}"
    );
}

/// `check-config` of `text` refuses it, naming the file and each of `named`.
fn refused_naming(text: &str, named: &[&str]) {
    let (code, err, path) = check(text);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&path), "{err}");
    for n in named {
        assert!(err.contains(n), "{n}: {err}");
    }
}

#[test]
fn unknown_key_names_file_and_key() {
    refused_naming(
        &format!("{DEVICE}poll_intervall = \"1s\"\n"),
        &["device[0]", "poll_intervall"],
    );
}

#[test]
fn wrong_type_names_file_key_and_expected_type() {
    refused_naming(
        &format!("{DEVICE}[host]\nmemory_warning_ratio = \"high\"\n"),
        &["host.memory_warning_ratio", "expected a number"],
    );
}

#[test]
fn out_of_range_value_names_file_key_and_range() {
    refused_naming(
        &format!("{DEVICE}deadline = \"20m\"\n"),
        &["device[0].deadline", "between"],
    );
}

#[test]
fn valid_config_passes_and_startup_rejects_a_bad_one() {
    let (code, err, _) = check(DEVICE);
    assert_eq!(code, Some(0), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "report_interval = 5\n").expect("write");
    let err = refused(agent(&["--config", path.to_str().expect("utf-8")]));
    assert!(
        err.contains("bad.toml") && err.contains("report_interval"),
        "{err}"
    );
}

#[test]
fn bad_command_line_overrides_are_named() {
    let err = refused(agent(&["--simulate", "--collector", "collector:7070"]));
    assert!(err.contains("--collector"), "{err}");
}

#[test]
fn shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/agent.toml.example");
    let out = agent(&["check-config", example]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
