//! End to end, on the real binaries: a collector and a simulated agent on loopback, driven by
//! agent-ctl and observed through both gRPC APIs.

use std::time::{Duration, Instant, SystemTime};

use health_e2e::{
    device, eventually, has_code, reporting_config, sim_config, Agent, Collector, Fleet,
};
use health_proto::v1 as pb;
use nix::sys::signal::Signal;

const KINDS: [pb::DeviceKind; 4] = [
    pb::DeviceKind::Loihi2,
    pb::DeviceKind::Spinnaker,
    pb::DeviceKind::Photonic,
    pb::DeviceKind::AnalogCrossbar,
];

/// Polls the collector's view of `node`'s device `id` until `ready` holds for it.
async fn device_at_collector(
    collector: &Collector,
    node: &str,
    id: &str,
    what: &str,
    ready: impl Fn(&pb::Device) -> bool,
) -> pb::Device {
    eventually(what, Duration::from_secs(10), || async {
        let devs = collector.fleet_devices(node).await;
        device(devs.iter().filter_map(|f| f.device.as_ref()), id)
            .filter(|d| ready(d))
            .cloned()
    })
    .await
}

fn has_reading(d: &pb::Device, q: pb::Quantity) -> bool {
    d.readings
        .iter()
        .any(|r| r.quantity() == q && r.value.is_finite())
}

#[tokio::test]
async fn collector_shows_all_four_devices_with_temperature_and_power_within_5s() {
    let t0 = Instant::now();
    let fleet = Fleet::simulated("e2e-four", "");
    let devs = eventually(
        "four devices with temperature and power at the collector",
        Duration::from_secs(5),
        || async {
            let devs = fleet.collector.fleet_devices(&fleet.node).await;
            // Every device reports temperatures and power; the SpiNNaker board's BMP has no
            // power measurement (its ADC reads rail voltages only), so for it the rails stand in.
            let complete = devs.len() == 4
                && devs.iter().filter_map(|f| f.device.as_ref()).all(|d| {
                    let bmp = d.identity.as_ref().is_some_and(|i| i.backend == "bmp");
                    let power = if bmp {
                        pb::Quantity::VoltageVolts
                    } else {
                        pb::Quantity::PowerWatts
                    };
                    has_reading(d, pb::Quantity::TemperatureCelsius) && has_reading(d, power)
                });
            complete.then_some(devs)
        },
    )
    .await;
    let kinds: Vec<_> = devs
        .iter()
        .filter_map(|f| f.device.as_ref()?.identity.as_ref().map(|i| i.kind()))
        .collect();
    for k in KINDS {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    println!("all four devices at the collector after {:?}", t0.elapsed());
}

#[tokio::test]
async fn reset_device_changes_the_device_state_and_the_collector_sees_it() {
    let Fleet {
        collector,
        agent,
        node,
    } = Fleet::simulated("e2e-reset", "");
    device_at_collector(
        &collector,
        &node,
        "loihi-0",
        "loihi-0 OK at the collector",
        |d| d.state() == pb::HealthState::Ok,
    )
    .await;

    // Wedge the device, see it critical at the collector, then hard-reset it through agent-ctl.
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    device_at_collector(
        &collector,
        &node,
        "loihi-0",
        "loihi-0 DEVICE_UNRESPONSIVE at the collector",
        |d| {
            d.state() == pb::HealthState::Critical
                && has_code(d, pb::ConditionCode::DeviceUnresponsive)
        },
    )
    .await;

    let stdout = agent.ctl_ok(&["reset-device", "loihi-0", "--hard", "--yes"]);
    assert!(stdout.contains("SUCCEEDED"), "{stdout}");

    let d = device_at_collector(
        &collector,
        &node,
        "loihi-0",
        "loihi-0 back to OK with the reset recorded, at the collector",
        |d| {
            d.state() == pb::HealthState::Ok
                && d.last_action
                    .as_ref()
                    .is_some_and(|a| a.action == "reset-hard")
        },
    )
    .await;
    let a = d.last_action.clone().expect("last action");
    assert_eq!(a.outcome(), pb::ActionOutcome::Succeeded);
    assert!(!has_code(&d, pb::ConditionCode::DeviceUnresponsive));

    // A reset that fails is visible too, as RESET_FAILED, and agent-ctl exits non-zero.
    agent.ctl_ok(&["inject-fault", "spinnaker-0", "failing-reset"]);
    let out = agent.ctl(&["reset-device", "spinnaker-0", "--soft"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
    assert!(err.contains("FAILED"), "{err}");
    device_at_collector(
        &collector,
        &node,
        "spinnaker-0",
        "spinnaker-0 RESET_FAILED at the collector",
        |d| has_code(d, pb::ConditionCode::ResetFailed),
    )
    .await;
}

#[tokio::test]
async fn hung_device_is_unresponsive_within_deadline_plus_1s_while_the_others_keep_updating() {
    let deadline = Duration::from_secs(1);
    let agent = Agent::with_config(&sim_config("500ms", "1s", "500ms"), &["--node", "e2e-hang"]);
    agent.wait_all_devices_read().await;

    let injected = Instant::now();
    agent.ctl_ok(&["inject-fault", "photonic-0", "hang"]);
    // The fault is in place once the command returns; a read may complete while it travels.
    let hung_wall = SystemTime::now();
    // Nominally the deadline plus at most a poll interval; on a loaded machine any scheduling
    // delay adds to that, so the figure is printed and only a bound ten times over is a failure.
    let generous = 10 * (deadline + Duration::from_secs(1));
    let d = eventually("photonic-0 unresponsive", generous, || async {
        let d = agent
            .client()
            .await
            .get_device(pb::GetDeviceRequest {
                id: "photonic-0".into(),
            })
            .await
            .ok()?
            .into_inner();
        has_code(&d, pb::ConditionCode::DeviceUnresponsive).then_some(d)
    })
    .await;
    let took = injected.elapsed();
    eprintln!("photonic-0 unresponsive {took:?} after the hang (deadline {deadline:?})");
    // A hung read is given its whole deadline before the device is called unresponsive.
    assert!(
        took >= deadline,
        "unresponsive after {took:?}, before its deadline {deadline:?}"
    );
    assert_eq!(d.state(), pb::HealthState::Critical);
    let detected_wall = SystemTime::now();

    // The device stays hung across several more deadlines, and every other device is read
    // again after them: the hung read holds up no one else.
    let later = detected_wall + 2 * deadline;
    let devices = eventually(
        "every other device read two deadlines after the hang was detected",
        generous,
        || async {
            let devices = agent.devices().await;
            devices
                .iter()
                .filter(|d| d.identity.as_ref().is_some_and(|i| i.id != "photonic-0"))
                .all(|d| read_at(d).is_some_and(|at| at > later))
                .then_some(devices)
        },
    )
    .await;
    let now = SystemTime::now();
    for d in &devices {
        let id = d
            .identity
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_default();
        let last = read_at(d).expect("read");
        if id == "photonic-0" {
            assert!(
                last <= hung_wall,
                "the hung device has no read after the hang"
            );
            assert!(has_code(d, pb::ConditionCode::DeviceUnresponsive));
        } else {
            let age = now.duration_since(last).unwrap_or_default();
            eprintln!(
                "{id}: last read {age:?} ago, {:?} into the hang",
                last.duration_since(hung_wall).unwrap_or_default()
            );
            assert_eq!(d.state(), pb::HealthState::Ok, "{id}: {:?}", d.conditions);
        }
    }
}

/// When the device was last read, by the agent's wall clock.
fn read_at(d: &pb::Device) -> Option<SystemTime> {
    SystemTime::try_from(d.last_read_at?).ok()
}

#[tokio::test]
async fn killed_agent_becomes_stale_at_the_collector() {
    let Fleet {
        collector,
        agent,
        node,
    } = Fleet::simulated("e2e-stale", "stale_after = \"2s\"\n");
    let listed = |stale: bool| {
        let (collector, node) = (&collector, &node);
        async move {
            collector
                .listed_node(node)
                .await
                .filter(|n| n.stale == stale)
        }
    };
    eventually("node reporting", Duration::from_secs(10), || listed(false)).await;
    agent.proc.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let n = eventually("node STALE", Duration::from_secs(20), || listed(true)).await;
    eprintln!(
        "stale {:?} after the kill (stale_after 2 s)",
        killed.elapsed()
    );
    assert_eq!(
        n.state(),
        pb::HealthState::Unknown,
        "a stale node's data is old: UNKNOWN"
    );
    // Stale no sooner than stale_after after the last report heard (which may be up to a
    // report interval before the kill), by the collector's own clock.
    let seen_stale = SystemTime::now();
    let last_seen = n
        .last_seen
        .and_then(|t| SystemTime::try_from(t).ok())
        .expect("a stale node was seen once");
    let quiet = seen_stale.duration_since(last_seen).unwrap_or_default();
    assert!(
        quiet >= Duration::from_secs(2),
        "stale {quiet:?} after the last report, before stale_after"
    );
    let node = collector.fleet_node(&node).await.expect("get");
    assert!(node.summary.expect("summary").stale);
}

#[tokio::test]
async fn sigterm_stops_the_agent_cleanly_and_removes_its_socket() {
    let mut agent = Agent::simulate(&["--node", "e2e-term"]);
    // A second agent must not steal a live socket.
    let second = std::process::Command::new(health_e2e::bin("health-agent"))
        .args([
            "--simulate",
            "--socket",
            agent.socket.to_str().expect("path"),
        ])
        .output()
        .expect("run second agent");
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already serving"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // A watcher is connected while the agent stops: it must not hold the shutdown open.
    let mut watch = agent.watch_health().await;

    agent.proc.signal(Signal::SIGTERM);
    let t0 = Instant::now();
    // The watcher keeps reading (this runtime stays free) and must see its stream end.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "WatchHealth stream still open 5 s after SIGTERM"
    );
    let status = loop {
        if let Some(status) = agent.proc.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "agent still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(!agent.socket.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn agent_reconnects_after_the_collector_restarts_and_says_so_meanwhile() {
    let Fleet {
        collector,
        agent,
        node,
    } = Fleet::with_agent_config(
        "e2e-reconnect",
        "",
        &reporting_config(
            "500ms",
            "1s",
            "250ms",
            "backoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
        ),
    );
    agent.wait_acked(1).await;

    let addr = collector.addr.clone();
    collector.proc.signal(Signal::SIGKILL);
    drop(collector);
    let a = eventually(
        "uplink reported disconnected",
        Duration::from_secs(10),
        || async {
            let a = agent.status().await;
            (!a.uplink_connected && a.reports_buffered > 0).then_some(a)
        },
    )
    .await;
    assert!(a.reconnects_total >= 1);

    let collector = Collector::start_on(&addr, "");
    let back = collector.wait_reports(&node, 1).await;
    assert_eq!(
        back.missing_total, 0,
        "the buffered reports were delivered in order: no gap"
    );
    let a = eventually("buffer drained", Duration::from_secs(10), || async {
        let a = agent.status().await;
        (a.uplink_connected && a.reports_buffered <= 2).then_some(a)
    })
    .await;
    assert_eq!(a.reports_dropped_total, 0);
}
