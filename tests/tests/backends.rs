//! Hardware backends configured in the agent's TOML, end to end through the real binaries:
//! a vendor-tool plugin device, and the SCPI bench the `--simulate` default talks to.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::os::unix::fs::PermissionsExt;

use health_e2e::Agent;

/// A vendor tool as a site would write one: JSON readings on stdout, exit 0.
const TOOL: &str = r#"#!/bin/sh
case "$1" in
  read) echo '{"version":1,"identity":{"vendor":"Acme","model":"XB-9","serial":"42","firmware":"1.2"},"readings":[{"sensor":"die","quantity":"temperature_celsius","value":51.5},{"sensor":"card","quantity":"power_watts","value":7.25}]}' ;;
  reset) echo '{"version":1,"message":"reset done"}' ;;
  *) echo "unknown operation $1" >&2; exit 2 ;;
esac
"#;

#[test]
fn a_plugin_device_reports_its_readings_and_resets_through_its_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("xbar-tool");
    std::fs::write(&tool, TOOL).expect("write tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = format!(
        "[[device]]\nid = \"xbar-7\"\nkind = \"analog_crossbar\"\nbackend = \"plugin\"\n[device.plugin]\ncommand = \"{}\"\nread = [\"read\"]\nreset_soft = [\"reset\"]\n",
        tool.display()
    );
    let agent = Agent::with_config(&cfg, &["--node", "e2e-plugin"]);
    let json = agent.ctl_until(&["--json", "device", "xbar-7"], |json| {
        json.contains("\"value\":51.5")
    });
    assert!(
        json.contains("\"value\":51.5") && json.contains("\"value\":7.25"),
        "{json}"
    );
    assert!(
        json.contains("\"model\":\"XB-9\"") && json.contains("\"backend\":\"plugin\""),
        "{json}"
    );
    agent.ctl_ok(&["reset-device", "xbar-7", "--soft"]);
    let out = agent.ctl(&["reset-device", "xbar-7", "--hard", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no reset_hard operation configured"
    );
}

#[test]
fn the_simulate_default_reads_the_photonic_bench_over_scpi() {
    let agent = Agent::simulate(&["--node", "e2e-scpi"]);
    let json = agent.ctl_until(&["--json", "device", "photonic-0"], |json| {
        json.contains("optical_power_watts")
    });
    assert!(json.contains("\"backend\":\"scpi\""), "{json}");
    assert!(
        json.contains("optical_power_watts") && json.contains("setpoint_celsius"),
        "{json}"
    );
    assert!(
        json.contains("127.0.0.1:"),
        "location is the loopback instrument: {json}"
    );
    // A thermal recalibration through the real client settles on the simulated TEC: the
    // embedded default's calibration policy makes the first ("never calibrated"); an
    // operator's, once that one is on record, the second.
    let shown = agent.ctl_until(&["--json", "device", "photonic-0"], |j| {
        j.contains("\"calibrated_at\"") && j.contains("\"activity\":\"RUNNING\"")
    });
    assert!(shown.contains("\"calibrated_at\""), "{shown}");
    agent.ctl_ok(&["calibrate", "photonic-0"]);
}

fn write(root: &std::path::Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write fixture");
}

#[test]
fn a_loihi2_host_and_a_discovered_pci_card_from_a_sysfs_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = dir.path().join("sys");
    // What `sensors | grep -A5 loihi` and /sys/class/power_supply/loihi2 read on a Loihi 2 host.
    write(&sys, "class/hwmon/hwmon3/name", "loihi2\n");
    write(&sys, "class/hwmon/hwmon3/temp1_input", "61250\n");
    write(&sys, "class/hwmon/hwmon3/temp1_label", "chip\n");
    write(&sys, "class/power_supply/loihi2/energy_now", "1000000\n");
    // An analog crossbar PCIe card whose link trained at half width.
    let card = "bus/pci/devices/0000:03:00.0";
    write(&sys, &format!("{card}/vendor"), "0x1e52\n");
    write(&sys, &format!("{card}/device"), "0x0001\n");
    write(&sys, &format!("{card}/class"), "0x120000\n");
    write(
        &sys,
        &format!("{card}/current_link_speed"),
        "16.0 GT/s PCIe\n",
    );
    write(&sys, &format!("{card}/max_link_speed"), "16.0 GT/s PCIe\n");
    write(&sys, &format!("{card}/current_link_width"), "8\n");
    write(&sys, &format!("{card}/max_link_width"), "16\n");
    // nx_driver_server's port on the board host.
    let board = std::net::TcpListener::bind("127.0.0.1:0").expect("bind board host");
    let cfg = format!(
        "sysfs_root = \"{root}\"\n\
         [[device]]\nid = \"loihi-0\"\nkind = \"loihi2\"\nbackend = \"loihi2\"\n\
         [device.loihi2]\nboard_host = \"{board}\"\nhwmon = \"loihi2\"\npower_supply = \"loihi2\"\n\
         [[discover]]\nkind = \"analog_crossbar\"\nid_prefix = \"xbar-\"\npci = \"1e52:0001\"\n\
         [discover.sysfs]\nroot = \"{root}\"\n",
        root = sys.display(),
        board = board.local_addr().expect("addr"),
    );
    let agent = Agent::with_config(&cfg, &["--node", "e2e-sysfs"]);
    let text = agent.ctl_until(&["devices"], |text| {
        text.contains("61.2") && text.contains("LINK_DEGRADED")
    });
    assert!(text.contains("loihi-0") && text.contains("61.2"), "{text}");
    assert!(
        text.contains("xbar-0") && text.contains("LINK_DEGRADED"),
        "{text}"
    );
    let json = agent.ctl_ok(&["--json", "device", "xbar-0"]);
    assert!(
        json.contains("\"backend\":\"sysfs\"") && json.contains("0000:03:00.0"),
        "{json}"
    );
}
