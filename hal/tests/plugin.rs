//! The vendor-command plugin backend against real processes: the fixture scripts in
//! `tests/fixtures/plugin/` and small `bash -c` programs. Every process here is one these tests
//! started; the hanging ones are checked to be gone, group and all, within a bounded wait.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

mod plugin_support;

use std::time::{Duration, Instant};

use health_hal::plugin::{PluginConfig, PluginDevice, VendorCommand, Verdict};
use health_hal::{
    Capability, ConditionCode, Device, DeviceKind, HalError, Quantity, ResetKind, Severity,
};
use plugin_support::{assert_group_gone, assert_pids_gone, fixture, read_pids};

const SLACK: Duration = Duration::from_secs(2);

fn tool_config(read: &str) -> PluginConfig {
    let mut c = PluginConfig::new(fixture("board-tool.sh"));
    c.read = Some(vec![read.to_string()]);
    c
}

fn device(read: &str) -> PluginDevice {
    PluginDevice::new("loihi-0", DeviceKind::Loihi2, tool_config(read)).unwrap()
}

fn bash(script: &str, deadline: Duration, cap: usize) -> VendorCommand {
    VendorCommand::new("/bin/bash", vec!["-c".into(), script.into()], deadline, cap)
}

// ---- runner ----

#[tokio::test]
async fn exit_codes_0_and_1_are_verdicts() {
    let c = VendorCommand::new(fixture("board-tool.sh"), vec![], SLACK * 5, 65536);
    let out = c.run(&["read".into()], None).await.unwrap();
    assert_eq!(out.verdict, Verdict::Ok);
    assert!(out.stdout.starts_with(b"{\"version\": 1"));
    let out = c.run(&["read-problem-silent".into()], None).await.unwrap();
    assert_eq!(out.verdict, Verdict::Problem);
    assert_eq!(out.stderr_line().as_deref(), Some("fan 2 stalled"));
}

#[tokio::test]
async fn other_exit_codes_and_signals_are_failures_with_the_first_stderr_line() {
    let c = VendorCommand::new(fixture("board-tool.sh"), vec![], SLACK * 5, 65536);
    match c.run(&["unknown".into()], None).await {
        Err(HalError::Failed(m)) => {
            assert!(m.contains("exited with status 3"), "{m}");
            assert!(m.contains("license server unreachable"), "{m}");
            assert!(!m.contains("retrying later"), "only the first line: {m}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    match c.run(&["killed".into()], None).await {
        Err(HalError::Failed(m)) => assert!(m.contains("killed by signal 9"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error() {
    let c = VendorCommand::new("/nonexistent/vendor-tool", vec![], SLACK, 1024);
    match c.run(&[], None).await {
        Err(HalError::Io(m)) => {
            assert!(m.contains("/nonexistent/vendor-tool does not exist"), "{m}")
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[tokio::test]
async fn the_environment_is_cleared_except_path_and_the_c_locale() {
    let c = VendorCommand::new("/usr/bin/env", vec![], SLACK * 5, 65536);
    let out = c.run(&[], None).await.unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('=').next().map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names, ["LANG", "LC_ALL", "PATH"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("LANG=C\n"));
}

#[tokio::test]
async fn stdin_is_fed_and_closed() {
    let c = bash("wc -c", SLACK * 5, 1024);
    let out = c.run(&[], Some(vec![b'x'; 200_000])).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200000");
}

#[tokio::test]
async fn a_tool_that_ignores_its_stdin_still_finishes() {
    let c = bash("echo done", SLACK * 5, 1024);
    let out = c.run(&[], Some(vec![b'x'; 1_000_000])).await.unwrap();
    assert_eq!(out.stdout_line().as_deref(), Some("done"));
}

#[tokio::test]
async fn flooding_stdout_is_a_protocol_error_at_the_cap() {
    let cap = 65536;
    let c = VendorCommand::new(fixture("flood.sh"), vec![], Duration::from_secs(20), cap);
    let start = Instant::now();
    match c.run(&[], None).await {
        Err(HalError::Protocol(m)) => {
            assert!(m.contains("more than 65536 bytes on stdout"), "{m}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    // Stopped at the cap, not after reading the whole megabyte or waiting for the deadline.
    assert!(start.elapsed() < SLACK * 2, "{:?}", start.elapsed());
}

#[tokio::test]
async fn flooding_stderr_is_truncated_not_fatal() {
    let c = bash(
        "head -c 500000 /dev/zero | tr '\\0' e >&2; echo '{\"version\":1}'",
        SLACK * 5,
        4096,
    );
    let out = c.run(&[], None).await.unwrap();
    assert_eq!(out.verdict, Verdict::Ok);
    assert_eq!(out.stderr.len(), 4096);
    assert!(out.stderr_truncated);
    assert_eq!(out.stdout, b"{\"version\":1}\n");
}

#[tokio::test]
async fn on_its_deadline_the_whole_process_group_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let deadline = Duration::from_millis(300);
    let c = VendorCommand::new(
        fixture("hang.sh"),
        vec![pidfile.display().to_string()],
        deadline,
        65536,
    );
    let start = Instant::now();
    let result = c.run(&[], None).await;
    let took = start.elapsed();
    match result {
        Err(HalError::Timeout(m)) => {
            assert!(m.contains("hang.sh") && m.contains("within 300 ms"), "{m}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(took >= deadline && took < deadline + SLACK, "took {took:?}");
    let pids = read_pids(&pidfile, SLACK).await;
    // The leader's pid is the group id.
    assert_group_gone(pids[0], &pids, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dropping_the_call_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    // Its own deadline is far away: only the drop guard can stop it in time.
    let c = VendorCommand::new(
        fixture("hang.sh"),
        vec![pidfile.display().to_string()],
        Duration::from_secs(60),
        65536,
    );
    let outer = Duration::from_millis(300);
    let start = Instant::now();
    let result = tokio::time::timeout(outer, c.run(&[], None)).await;
    assert!(result.is_err(), "the outer deadline should have fired");
    assert!(start.elapsed() < outer + SLACK);
    let pids = read_pids(&pidfile, SLACK).await;
    assert_group_gone(pids[0], &pids, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn helpers_left_behind_by_a_finished_tool_do_not_stall_the_run() {
    // The helper keeps stdout open; without the sweep after the leader exits, the run would
    // wait for it until the deadline.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("helper");
    let script = format!(
        "sleep 300 & echo $! > {}; echo '{{\"version\":1}}'; exit 0",
        pidfile.display()
    );
    let c = bash(&script, Duration::from_secs(20), 1024);
    let start = Instant::now();
    let out = c.run(&[], None).await.unwrap();
    assert!(start.elapsed() < SLACK, "{:?}", start.elapsed());
    assert_eq!(out.verdict, Verdict::Ok);
    let helper: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_pids_gone(&[helper], Duration::from_secs(5)).await;
}

// ---- device ----

#[tokio::test]
async fn a_read_gives_readings_and_the_identity_is_kept() {
    let d = device("read");
    let before = d.identity();
    assert_eq!(before.serial, "");
    assert_eq!(before.backend, "plugin");
    assert!(before.location.ends_with("board-tool.sh"));

    let s = d.read().await.unwrap();
    assert_eq!(s.get("chip0", Quantity::TemperatureCelsius), Some(51.2));
    assert_eq!(s.get("board", Quantity::PowerWatts), Some(18.5));
    assert_eq!(s.get("board", Quantity::EnergyJoules), Some(1234.5));
    assert_eq!(s.power_limit_watts, Some(30.0));
    assert!(s.powered && s.conditions.is_empty());

    let id = d.identity();
    assert_eq!(
        (
            id.vendor.as_str(),
            id.model.as_str(),
            id.serial.as_str(),
            id.firmware.as_str()
        ),
        ("Intel", "Kapoho Point", "KP-0042", "2.1.0")
    );
    assert_eq!((id.id.as_str(), id.kind), ("loihi-0", DeviceKind::Loihi2));

    let plain = device("read-no-identity");
    plain.read().await.unwrap();
    assert_eq!(plain.identity().vendor, "");
}

#[tokio::test]
async fn exit_1_carries_the_reported_conditions() {
    let s = device("read-problem").read().await.unwrap();
    assert_eq!(s.get("chip0", Quantity::TemperatureCelsius), Some(97.0));
    let codes: Vec<_> = s.conditions.iter().map(|c| (c.code, c.severity)).collect();
    assert_eq!(
        codes,
        [
            (ConditionCode::ThermalCritical, Severity::Critical),
            (ConditionCode::LinkDegraded, Severity::Warning)
        ]
    );
    assert_eq!(s.conditions[0].subject, "loihi-0");
    assert!(s.conditions[0].message.contains("97.0 C"));
}

#[tokio::test]
async fn exit_1_without_conditions_is_a_device_error_with_the_message() {
    let s = device("read-problem-silent").read().await.unwrap();
    assert_eq!(s.conditions.len(), 1);
    let c = &s.conditions[0];
    assert_eq!(
        (c.code, c.severity),
        (ConditionCode::DeviceError, Severity::Warning)
    );
    assert!(c.message.contains("fan 2 stalled"), "{}", c.message);
}

#[tokio::test]
async fn exit_3_is_an_unknown_state_failure() {
    match device("unknown").read().await {
        Err(HalError::Failed(m)) => assert!(m.contains("status 3") && m.contains("license"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error_naming_the_path() {
    match device("malformed").read().await {
        Err(HalError::Protocol(m)) => {
            assert!(
                m.contains(r#"readings[1].quantity: unknown quantity "temp""#),
                "{m}"
            )
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    match device("not-json").read().await {
        Err(HalError::Protocol(m)) => assert!(m.contains("expected a JSON report"), "{m}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn a_read_that_hangs_times_out_on_the_plugin_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let mut c = PluginConfig::new(fixture("hang.sh"));
    c.read = Some(vec![pidfile.display().to_string()]);
    c.deadline_ms = 300;
    let d = PluginDevice::new("loihi-0", DeviceKind::Loihi2, c).unwrap();
    let start = Instant::now();
    assert!(matches!(d.read().await, Err(HalError::Timeout(_))));
    assert!(start.elapsed() < Duration::from_millis(300) + SLACK);
    let pids = read_pids(&pidfile, SLACK).await;
    assert_group_gone(pids[0], &pids, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn operations_configured_are_the_capabilities() {
    let mut c = tool_config("read");
    c.reset_soft = Some(vec!["reset".into()]);
    c.reset_hard = Some(vec!["reset-fail".into()]);
    let d = PluginDevice::new("d", DeviceKind::Photonic, c).unwrap();
    assert_eq!(
        d.capabilities(),
        [Capability::ResetSoft, Capability::ResetHard]
    );
    d.reset(ResetKind::Soft).await.unwrap();
    match d.reset(ResetKind::Hard).await {
        Err(HalError::Failed(m)) => assert!(m.contains("board did not come back"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        d.reset(ResetKind::PowerCycle).await,
        Err(HalError::Unsupported(_))
    ));
    assert!(matches!(
        d.set_enabled(false).await,
        Err(HalError::Unsupported(_))
    ));
    assert!(matches!(
        d.matvec(&[1.0]).await,
        Err(HalError::Unsupported(_))
    ));
}

#[tokio::test]
async fn set_power_limit_substitutes_watts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let mut c = tool_config("read");
    c.args = vec!["--log".into(), log.display().to_string()];
    c.set_power_limit = Some(vec![
        "power-limit".into(),
        "--watts".into(),
        "{watts}".into(),
    ]);
    let d = PluginDevice::new("loihi-0", DeviceKind::Loihi2, c).unwrap();
    assert!(d.capabilities().contains(&Capability::SetPowerLimit));
    d.set_power_limit(42.5).await.unwrap();
    d.set_power_limit(30.0).await.unwrap();
    assert!(matches!(
        d.set_power_limit(-1.0).await,
        Err(HalError::InvalidArgument(_))
    ));
    assert!(matches!(
        d.set_power_limit(f64::NAN).await,
        Err(HalError::InvalidArgument(_))
    ));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls, "power-limit --watts 42.5\npower-limit --watts 30\n");
}

#[tokio::test]
async fn enable_and_disable_run_their_operations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let mut c = tool_config("read");
    c.args = vec!["--log".into(), log.display().to_string()];
    c.enable = Some(vec!["reset".into(), "enable".into()]);
    c.disable = Some(vec!["reset-fail".into(), "disable".into()]);
    let d = PluginDevice::new("x", DeviceKind::AnalogCrossbar, c).unwrap();
    assert!(d.capabilities().contains(&Capability::EnableDisable));
    d.set_enabled(true).await.unwrap();
    assert!(matches!(
        d.set_enabled(false).await,
        Err(HalError::Failed(_))
    ));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls, "reset enable\nreset-fail disable\n");
}

#[tokio::test]
async fn calibrate_returns_the_reported_record_or_reads_afterwards() {
    let mut c = tool_config("read");
    c.calibrate = Some(vec!["calibrate".into()]);
    let d = PluginDevice::new("p", DeviceKind::Photonic, c).unwrap();
    let r = d.calibrate().await.unwrap();
    assert_eq!(r.temperature_celsius, 45.5);
    assert_eq!(
        r.calibrated_at,
        std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    );

    let mut c = tool_config("read");
    c.calibrate = Some(vec!["calibrate-silent".into()]);
    let d = PluginDevice::new("p", DeviceKind::Photonic, c).unwrap();
    let r = d.calibrate().await.unwrap();
    assert_eq!(
        r.temperature_celsius, 51.2,
        "hottest temperature of the read after"
    );
}

#[tokio::test]
async fn matvec_round_trips_through_stdin_and_stdout() {
    let mut c = tool_config("read");
    c.matvec = Some(vec!["matvec".into()]);
    let d = PluginDevice::new("xbar-0", DeviceKind::AnalogCrossbar, c).unwrap();
    assert!(d.capabilities().contains(&Capability::Matvec));
    let y = d.matvec(&[1.0, 2.5, -3.0, 0.001]).await.unwrap();
    assert_eq!(y, [2.0, 5.0, -6.0, 0.002]);
    assert_eq!(d.matvec(&[]).await.unwrap(), Vec::<f64>::new());
    assert!(matches!(
        d.matvec(&[f64::INFINITY]).await,
        Err(HalError::InvalidArgument(_))
    ));

    let mut c = tool_config("read");
    c.matvec = Some(vec!["matvec-missing".into()]);
    let d = PluginDevice::new("xbar-0", DeviceKind::AnalogCrossbar, c).unwrap();
    match d.matvec(&[1.0]).await {
        Err(HalError::Protocol(m)) => assert!(m.contains("output: missing"), "{m}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[test]
fn an_invalid_config_is_refused_with_its_key() {
    let c = PluginConfig::new("relative/tool");
    match PluginDevice::new("d", DeviceKind::Loihi2, c) {
        Err(HalError::InvalidArgument(m)) => assert!(m.starts_with("command: expected"), "{m}"),
        Err(other) => panic!("expected InvalidArgument, got {other:?}"),
        Ok(_) => panic!("accepted a relative command"),
    }
    let c = PluginConfig::new("/opt/tool");
    match PluginDevice::new("d", DeviceKind::Loihi2, c) {
        Err(HalError::InvalidArgument(m)) => assert!(m.starts_with("read: expected"), "{m}"),
        Err(other) => panic!("expected InvalidArgument, got {other:?}"),
        Ok(_) => panic!("accepted a config without read"),
    }
}
