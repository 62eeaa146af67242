//! agent-ctl against a running simulated agent: output formats and exit codes.

use health_e2e::{ctl, Agent, Fleet};

#[test]
fn tables_json_and_exit_codes() {
    let agent = Agent::simulate(&["--node", "e2e-ctl"]);
    let out = agent.ctl(&["devices"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("DEVICE"), "{table}");
    for id in ["loihi-0", "spinnaker-0", "photonic-0", "xbar-0"] {
        assert!(table.contains(id), "{id} in {table}");
    }

    let out = agent.ctl(&["--json", "device", "xbar-0"]);
    assert!(out.status.success());
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("\"id\":\"xbar-0\"") && json.contains("\"kind\":\"analog_crossbar\""),
        "{json}"
    );

    agent.ctl_ok(&["set-power-limit", "xbar-0", "6"]);
    let out = agent.ctl(&["--json", "device", "xbar-0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"power_limit_watts\":6.0"));

    let out = agent.ctl(&["disable", "loihi-0"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&agent.ctl(&["device", "loihi-0"]).stdout)
            .contains("DEVICE_DISABLED")
    );
    agent.ctl_ok(&["enable", "loihi-0"]);

    // The embedded default's calibration policy calibrates photonic-0 by itself at start
    // ("never calibrated"); an operator's calibration while it runs would be refused as
    // busy, so wait for the policy's to be on record first.
    let shown = agent.ctl_until(&["--json", "device", "photonic-0"], |j| {
        j.contains("\"calibrated_at\"") && j.contains("\"activity\":\"RUNNING\"")
    });
    assert!(
        shown.contains("\"calibrated_at\""),
        "the calibration policy never calibrated photonic-0: {shown}"
    );
    agent.ctl_ok(&["calibrate", "photonic-0"]);

    // Failures: one line on stderr, exit 1.
    for (args, expect) in [
        (vec!["device", "nope"], "nope"),
        (vec!["calibrate", "spinnaker-0"], "does not support"),
        (vec!["set-power-limit", "xbar-0", "-3"], "watts"),
        (vec!["inject-fault", "xbar-0", "melt"], "melt"),
    ] {
        let out = agent.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }

    let out = agent.ctl(&["--json", "watch", "--count", "2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let out = agent.ctl(&["actions"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("set-power-limit 6 W") && text.contains("calibrate"),
        "{text}"
    );

    // Usage errors exit 2; an unreachable agent exits 1 naming the socket.
    assert_eq!(
        ctl(&["reset-device", "loihi-0"]).status.code(),
        Some(2),
        "needs --soft|--hard|--power-cycle"
    );
    let out = ctl(&["--endpoint", "unix:///nonexistent/agent.sock", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.sock"));
}

#[test]
fn alerts_from_an_overheating_device_reach_agent_ctl_through_the_collector() {
    // THERMAL_WARNING is held for 1 min by default; this test is about the path, not holding.
    let Fleet {
        collector, agent, ..
    } = Fleet::simulated(
        "e2e-alerts",
        "[alerts]\nfor = { THERMAL_WARNING = \"0s\" }\n",
    );
    agent.ctl_ok(&["inject-fault", "loihi-0", "overheat"]);
    // Cooling has failed: the chip passes 80 degC within seconds, and the collector fires.
    // The host's own alerts (a full disk, a loaded machine) may come first: read every line
    // `agent-ctl alerts` prints for up to 20 s, then stop it (by pid).
    let child = std::process::Command::new(health_e2e::bin("agent-ctl"))
        .args(["--collector", &collector.addr, "--json", "alerts"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run agent-ctl alerts");
    let mut watcher = health_e2e::Proc {
        child,
        name: "agent-ctl",
    };
    let stdout = watcher.child.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut fired = None;
    while fired.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = received.recv_timeout(left) else {
            break;
        };
        if line.contains("\"subject\":\"loihi-0\"")
            && line.contains("THERMAL_")
            && line.contains("\"status\":\"FIRING\"")
        {
            fired = Some(line);
        }
    }
    drop(watcher);
    let line = fired.expect("a THERMAL alert for loihi-0 within 20 s");
    assert!(line.contains("e2e-alerts"), "{line}");
    let hot: String = ["warning", "critical"]
        .into_iter()
        .map(|state| {
            let out = ctl(&[
                "--collector",
                &collector.addr,
                "fleet-devices",
                "--node",
                "e2e-alerts",
                "--state",
                state,
            ]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert!(hot.contains("loihi-0"), "{hot}");
}
