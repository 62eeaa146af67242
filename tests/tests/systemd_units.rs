//! The unit files and sysusers snippets in `systemd/`, checked by systemd's own tools (Debian
//! package `systemd`): `systemd-analyze verify` on each unit (with ExecStart pointed at the
//! binaries this build made, since verify checks that they exist), `systemd-analyze security
//! --offline` with an exposure threshold, and `systemd-sysusers` creating the users in a
//! private root. None of this needs a running systemd.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use health_e2e::bin;

fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} not found on PATH: install the Debian package `systemd` (apt-get install systemd)")
    })
}

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The unit, under its own name in `dir`, with `/usr/bin/<daemon>` replaced by `exe`.
fn unit_copy(dir: &Path, daemon: &str, exe: &Path) -> PathBuf {
    let name = format!("{daemon}.service");
    let original = std::fs::read_to_string(units_dir().join(&name)).expect("read the unit file");
    let from = format!("/usr/bin/{daemon}");
    assert!(original.contains(&from), "{name} starts {from}");
    let path = dir.join(&name);
    std::fs::write(&path, original.replace(&from, &exe.display().to_string()))
        .expect("write the unit copy");
    path
}

fn verify(unit: &Path) -> Output {
    run(Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no", "--generators=no"])
        .arg(unit))
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    for daemon in ["health-agent", "health-collector"] {
        let unit = unit_copy(dir.path(), daemon, &bin(daemon));
        let out = verify(&unit);
        assert!(out.status.success(), "{daemon}: {}", text(&out));
        assert!(
            text(&out).trim().is_empty(),
            "{daemon}: verify warns: {}",
            text(&out)
        );
    }
    // The check is real: a unit whose binary is missing fails it.
    let broken = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(
        broken.path(),
        "health-agent",
        Path::new("/nonexistent/health-agent"),
    );
    let out = verify(&unit);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/health-agent"),
        "{}",
        text(&out)
    );
}

#[test]
fn units_are_hardened_below_the_recorded_exposure() {
    let dir = tempfile::tempdir().expect("tempdir");
    // docs/reliability.md records 2.2 (agent) and 1.2 (collector); a change that loosens the
    // sandbox past these fails here.
    for (daemon, threshold) in [("health-agent", "22"), ("health-collector", "12")] {
        let unit = unit_copy(dir.path(), daemon, &bin(daemon));
        let out = run(Command::new(tool("systemd-analyze"))
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(&unit));
        assert!(out.status.success(), "{daemon}: {}", text(&out));
        let report = text(&out);
        assert!(
            report.contains(&format!("Overall exposure level for {daemon}.service")),
            "{report}"
        );
        let unit_text = std::fs::read_to_string(&unit).expect("unit");
        for line in [
            "Type=notify",
            "WatchdogSec=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "ReadWritePaths=",
            "CapabilityBoundingSet=",
            &format!("User={daemon}"),
        ] {
            assert!(
                unit_text.lines().any(|l| l.starts_with(line)),
                "{daemon}: {line}"
            );
        }
    }
}

#[test]
fn sysusers_snippets_create_the_service_users() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    let out = run(Command::new(tool("systemd-sysusers"))
        .arg(format!("--root={}", root.path().display()))
        .arg(units_dir().join("sysusers.d/health-agent.conf"))
        .arg(units_dir().join("sysusers.d/health-collector.conf")));
    assert!(out.status.success(), "{}", text(&out));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("passwd");
    for (user, home) in [
        ("health-agent", "/var/lib/health-agent"),
        ("health-collector", "/var/lib/health-collector"),
    ] {
        let entry = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("{user} in {passwd}"));
        let uid: u32 = entry
            .split(':')
            .nth(2)
            .and_then(|u| u.parse().ok())
            .expect("uid");
        assert!(uid > 0 && uid < 1000, "{user} is a system user: {entry}");
        assert!(
            entry.contains(home) && entry.ends_with("nologin"),
            "{entry}"
        );
    }
}
