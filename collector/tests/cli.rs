//! `health-collector check-config` as an operator runs it: the real binary, real files.
//! Every rejected file must exit non-zero and name the file and the key on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::PathBuf;
use std::process::{Command, Output};

/// Writes `text` to a file named `name` in a directory of its own for this test.
fn config_file(test: &str, name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("collector-cli")
        .join(test);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn check_config(path: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_health-collector"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run health-collector")
}

fn assert_rejected(output: &Output, file_name: &str, key: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "expected failure, stderr: {stderr}"
    );
    assert!(stderr.contains(file_name), "file name missing: {stderr}");
    assert!(
        stderr.contains(&format!(": {key}: ")),
        "key missing: {stderr}"
    );
    stderr
}

#[test]
fn a_missing_file_names_the_path_and_the_os_error() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir/collector.toml");
    let output = check_config(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no-such-dir/collector.toml"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

#[test]
fn an_unknown_key_is_named() {
    let path = config_file("unknown", "unknown-key.toml", "stale_afer = \"10s\"\n");
    let stderr = assert_rejected(&check_config(&path), "unknown-key.toml", "stale_afer");
    assert!(stderr.contains("unknown key"), "{stderr}");
}

#[test]
fn a_wrong_type_names_the_key_and_the_expected_type() {
    let path = config_file("type", "wrong-type.toml", "max_message_bytes = \"4MiB\"\n");
    let stderr = assert_rejected(&check_config(&path), "wrong-type.toml", "max_message_bytes");
    assert!(stderr.contains("expected an integer"), "{stderr}");
}

#[test]
fn an_out_of_range_value_is_rejected() {
    let path = config_file("range", "out-of-range.toml", "stale_after = \"0s\"\n");
    let stderr = assert_rejected(&check_config(&path), "out-of-range.toml", "stale_after");
    assert!(
        stderr.contains("expected a duration between 1s and 1h, found \"0s\""),
        "{stderr}"
    );
}

#[test]
fn forget_after_not_longer_than_stale_after_is_rejected() {
    let path = config_file(
        "forget",
        "forget-too-soon.toml",
        "stale_after = \"10m\"\nforget_after = \"5m\"\n",
    );
    let stderr = assert_rejected(&check_config(&path), "forget-too-soon.toml", "forget_after");
    assert!(
        stderr.contains("expected a duration longer than stale_after (10m), found \"5m\""),
        "{stderr}"
    );
}

#[test]
fn a_valid_file_is_ok() {
    let path = config_file(
        "valid",
        "collector.toml",
        "listen = \"127.0.0.1:7070\"\nstale_after = \"30s\"\nsweep_interval = \"250ms\"\n\
         forget_after = \"7d\"\nmax_nodes = 5000\n\
         max_message_bytes = 8388608\nwatch_buffer = 256\n",
    );
    let output = check_config(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), format!("{}: ok", path.display()));
}

#[test]
fn shipped_example_config_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/collector.toml.example"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_health-collector"))
        .args(["check-config", example])
        .output()
        .expect("run health-collector");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check-config` checks only the form of `[tls]` paths; the service reads the files when it
/// starts, and an unusable one stops the start, naming the key and the file.
#[test]
fn an_unreadable_tls_file_stops_the_start_naming_the_key() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("collector-cli/tls");
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let not_pem = dir.join("not-pem.key");
    std::fs::write(&not_pem, "not a key\n").expect("write");
    let missing = dir.join("missing.pem");
    for (cert, key, expect) in [
        (
            &missing,
            &not_pem,
            format!("tls.cert: cannot read {}", missing.display()),
        ),
        (
            &not_pem,
            &not_pem,
            format!(
                "tls.cert: {}: expected a PEM file with a CERTIFICATE block",
                not_pem.display()
            ),
        ),
    ] {
        let text = format!(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            cert.display(),
            key.display(),
            cert.display()
        );
        let path = config_file("tls", "tls.toml", &text);
        assert!(check_config(&path).status.success(), "the form is valid");
        let mut child = Command::new(env!("CARGO_BIN_EXE_health-collector"))
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run health-collector");
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the collector started with an unusable [tls] file");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains(&expect), "{stderr}");
    }
}
