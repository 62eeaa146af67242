//! The composed Loihi 2 backend against what a Loihi 2 host exposes: a fixture sysfs tree with
//! the board's hwmon chip and power-supply energy counter, the board host on a loopback TCP
//! port, and a vendor tool script for reset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use health_hal::loihi::{Loihi2Config, Loihi2Host};
use health_hal::plugin::PluginConfig;
use health_hal::{ConditionCode, Device, Quantity, ResetKind};

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn fixture(root: &Path) {
    write(root, "class/hwmon/hwmon3/name", "loihi2\n");
    write(root, "class/hwmon/hwmon3/temp1_input", "61250\n");
    write(root, "class/hwmon/hwmon3/temp1_label", "chip\n");
    write(root, "class/hwmon/hwmon3/power1_input", "11500000\n");
    write(root, "class/hwmon/hwmon3/power1_label", "board\n");
    write(root, "class/power_supply/loihi2/energy_now", "1000000\n");
    write(root, "class/power_supply/loihi2/online", "1\n");
}

fn tool(dir: &Path) -> PluginConfig {
    let script = dir.join("loihi-tool");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\n  reset) echo \"$2\" > \"$(dirname \"$0\")/reset-called\"; echo '{\"version\":1}' ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg: PluginConfig = toml_like(&script);
    cfg.reset_soft = Some(vec!["reset".into(), "soft".into()]);
    cfg
}

/// A PluginConfig with only the command set, built through serde as the agent would.
fn toml_like(script: &Path) -> PluginConfig {
    serde_json::from_value(serde_json::json!({ "command": script })).unwrap()
}

#[tokio::test]
async fn reads_board_sensors_and_host_checks_and_resets_through_the_vendor_tool() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    fixture(&sys);
    let board = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = Loihi2Config::new(board.local_addr().unwrap().to_string());
    cfg.hwmon = Some("loihi2".into());
    cfg.power_supply = Some("loihi2".into());
    cfg.vendor = Some(tool(dir.path()));
    let host = Loihi2Host::new("loihi-0", cfg, sys.clone()).unwrap();

    let s = host.read().await.unwrap();
    let temp = s
        .readings
        .iter()
        .find(|r| r.quantity == Quantity::TemperatureCelsius)
        .unwrap();
    assert!((temp.value - 61.25).abs() < 1e-9, "{temp:?}");
    assert!(s
        .readings
        .iter()
        .any(|r| r.quantity == Quantity::PowerWatts && (r.value - 11.5).abs() < 1e-9));
    assert!(s
        .readings
        .iter()
        .any(|r| r.quantity == Quantity::EnergyJoules));
    assert!(s.powered);
    assert!(s.conditions.is_empty(), "{:?}", s.conditions);

    assert!(host
        .capabilities()
        .contains(&health_hal::Capability::ResetSoft));
    host.reset(ResetKind::Soft).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("reset-called"))
            .unwrap()
            .trim(),
        "soft"
    );
    assert!(matches!(
        host.reset(ResetKind::Hard).await,
        Err(health_hal::HalError::Unsupported(_))
    ));

    // The board host stops answering: unresponsive, and not powered as far as we can tell.
    drop(board);
    let s = host.read().await.unwrap();
    assert!(!s.powered);
    assert!(
        s.conditions
            .iter()
            .any(|c| c.code == ConditionCode::DeviceUnresponsive),
        "{:?}",
        s.conditions
    );
    // The sensors still report beside it.
    assert!(s
        .readings
        .iter()
        .any(|r| r.quantity == Quantity::TemperatureCelsius));

    // The hwmon chip vanishes (driver unbound): a DEVICE_MISSING condition, not a lost read.
    std::fs::remove_dir_all(sys.join("class/hwmon/hwmon3")).unwrap();
    std::fs::remove_dir_all(sys.join("class/power_supply/loihi2")).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(5), host.read())
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.conditions
            .iter()
            .any(|c| c.code == ConditionCode::DeviceMissing),
        "{:?}",
        s.conditions
    );
}
