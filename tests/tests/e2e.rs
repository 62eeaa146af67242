//! End to end, on the real binaries: a collector and a simulated agent on loopback, driven by
//! agent-ctl and observed through both gRPC APIs.

use std::time::{Duration, Instant, SystemTime};

use health_e2e::{sim_config, Agent, Collector};
use health_proto::v1 as pb;
use nix::sys::signal::Signal;

const KINDS: [pb::DeviceKind; 4] = [
    pb::DeviceKind::Loihi2,
    pb::DeviceKind::Spinnaker,
    pb::DeviceKind::Photonic,
    pb::DeviceKind::AnalogCrossbar,
];

async fn fleet_devices(c: &Collector, node: &str) -> Vec<pb::FleetDevice> {
    let mut client = c.client().await;
    let req = pb::QueryDevicesRequest {
        node: node.to_string(),
        ..Default::default()
    };
    client
        .query_devices(req)
        .await
        .map(|r| r.into_inner().devices)
        .unwrap_or_default()
}

fn has_reading(d: &pb::Device, q: pb::Quantity) -> bool {
    d.readings
        .iter()
        .any(|r| r.quantity() == q && r.value.is_finite())
}

fn device<'a>(devs: &'a [pb::FleetDevice], id: &str) -> Option<&'a pb::Device> {
    devs.iter()
        .filter_map(|f| f.device.as_ref())
        .find(|d| d.identity.as_ref().is_some_and(|i| i.id == id))
}

fn has_code(d: &pb::Device, code: pb::ConditionCode) -> bool {
    d.conditions.iter().any(|c| c.code() == code)
}

/// Polls `check` every 50 ms until it returns Some or `limit` passes.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn collector_shows_all_four_devices_with_temperature_and_power_within_5s() {
    let collector = Collector::start("");
    let t0 = Instant::now();
    let _agent = Agent::simulate(&["--node", "e2e-four", "--collector", &collector.url()]);
    let devs = eventually(
        "four devices with temperature and power at the collector",
        Duration::from_secs(5),
        || async {
            let devs = fleet_devices(&collector, "e2e-four").await;
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
    let collector = Collector::start("");
    let agent = Agent::simulate(&["--node", "e2e-reset", "--collector", &collector.url()]);
    eventually(
        "loihi-0 OK at the collector",
        Duration::from_secs(5),
        || async {
            let devs = fleet_devices(&collector, "e2e-reset").await;
            device(&devs, "loihi-0")
                .filter(|d| d.state() == pb::HealthState::Ok)
                .cloned()
        },
    )
    .await;

    // Wedge the device, see it critical at the collector, then hard-reset it through agent-ctl.
    let out = agent.ctl(&["inject-fault", "loihi-0", "hang"]);
    assert!(
        out.status.success(),
        "inject-fault: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        "loihi-0 DEVICE_UNRESPONSIVE at the collector",
        Duration::from_secs(8),
        || async {
            let devs = fleet_devices(&collector, "e2e-reset").await;
            device(&devs, "loihi-0")
                .filter(|d| {
                    d.state() == pb::HealthState::Critical
                        && has_code(d, pb::ConditionCode::DeviceUnresponsive)
                })
                .cloned()
        },
    )
    .await;

    let out = agent.ctl(&["reset-device", "loihi-0", "--hard", "--yes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reset-device: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SUCCEEDED"), "{stdout}");

    let d = eventually(
        "loihi-0 back to OK with the reset recorded, at the collector",
        Duration::from_secs(5),
        || async {
            let devs = fleet_devices(&collector, "e2e-reset").await;
            device(&devs, "loihi-0")
                .filter(|d| {
                    d.state() == pb::HealthState::Ok
                        && d.last_action
                            .as_ref()
                            .is_some_and(|a| a.action == "reset-hard")
                })
                .cloned()
        },
    )
    .await;
    let a = d.last_action.clone().expect("last action");
    assert_eq!(a.outcome(), pb::ActionOutcome::Succeeded);
    assert!(!has_code(&d, pb::ConditionCode::DeviceUnresponsive));

    // A reset that fails is visible too, as RESET_FAILED, and agent-ctl exits non-zero.
    assert!(agent
        .ctl(&["inject-fault", "spinnaker-0", "failing-reset"])
        .status
        .success());
    let out = agent.ctl(&["reset-device", "spinnaker-0", "--soft"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
    assert!(err.contains("FAILED"), "{err}");
    eventually(
        "spinnaker-0 RESET_FAILED at the collector",
        Duration::from_secs(5),
        || async {
            let devs = fleet_devices(&collector, "e2e-reset").await;
            device(&devs, "spinnaker-0")
                .filter(|d| has_code(d, pb::ConditionCode::ResetFailed))
                .cloned()
        },
    )
    .await;
}

#[tokio::test]
async fn hung_device_is_unresponsive_within_deadline_plus_1s_while_the_others_keep_updating() {
    let deadline = Duration::from_secs(1);
    let agent = Agent::with_config(&sim_config("500ms", "1s", "500ms"), &["--node", "e2e-hang"]);
    let mut client = agent.client().await;
    eventually("first reads", Duration::from_secs(5), || {
        let mut c = client.clone();
        async move {
            let d = c
                .list_devices(pb::ListDevicesRequest {})
                .await
                .ok()?
                .into_inner()
                .devices;
            d.iter().all(|d| d.last_read_at.is_some()).then_some(())
        }
    })
    .await;

    let injected = Instant::now();
    let injected_wall = SystemTime::now();
    let out = agent.ctl(&["inject-fault", "photonic-0", "hang"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = eventually(
        "photonic-0 unresponsive",
        deadline + Duration::from_secs(3),
        || {
            let mut c = client.clone();
            async move {
                let d = c
                    .get_device(pb::GetDeviceRequest {
                        id: "photonic-0".into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                has_code(&d, pb::ConditionCode::DeviceUnresponsive).then_some(d)
            }
        },
    )
    .await;
    let took = injected.elapsed();
    assert!(
        took <= deadline + Duration::from_secs(1),
        "unresponsive after {took:?}, deadline {deadline:?}"
    );
    assert_eq!(d.state(), pb::HealthState::Critical);

    // Keep the device hung across several more deadlines: the others must keep reading fresh.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let devices = client
        .list_devices(pb::ListDevicesRequest {})
        .await
        .expect("list")
        .into_inner()
        .devices;
    let now = SystemTime::now();
    for d in &devices {
        let id = d
            .identity
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_default();
        let last = SystemTime::try_from(d.last_read_at.expect("read")).expect("time");
        if id == "photonic-0" {
            assert!(
                last <= injected_wall,
                "the hung device has no read after the hang"
            );
            assert!(has_code(d, pb::ConditionCode::DeviceUnresponsive));
        } else {
            let age = now.duration_since(last).unwrap_or_default();
            assert!(
                age < Duration::from_millis(1500),
                "{id} last read {age:?} ago: it stopped updating"
            );
            assert_eq!(d.state(), pb::HealthState::Ok, "{id}: {:?}", d.conditions);
        }
    }
}

#[tokio::test]
async fn killed_agent_becomes_stale_at_the_collector() {
    let collector = Collector::start("stale_after = \"2s\"\n");
    let agent = Agent::simulate(&["--node", "e2e-stale", "--collector", &collector.url()]);
    let mut client = collector.client().await;
    eventually("node reporting", Duration::from_secs(5), || {
        let mut c = client.clone();
        async move {
            let n = c
                .list_nodes(pb::ListNodesRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes;
            n.into_iter().find(|n| n.node == "e2e-stale" && !n.stale)
        }
    })
    .await;
    agent.proc.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let n = eventually("node STALE", Duration::from_secs(6), || {
        let mut c = client.clone();
        async move {
            let n = c
                .list_nodes(pb::ListNodesRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes;
            n.into_iter().find(|n| n.node == "e2e-stale" && n.stale)
        }
    })
    .await;
    assert_eq!(
        n.state(),
        pb::HealthState::Unknown,
        "a stale node's data is old: UNKNOWN"
    );
    assert!(
        killed.elapsed() >= Duration::from_millis(1500),
        "not stale before stale_after"
    );
    let node = client
        .get_node(pb::GetFleetNodeRequest {
            node: "e2e-stale".into(),
        })
        .await
        .expect("get")
        .into_inner();
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
    let mut client = agent.client().await;
    let mut watch = client
        .watch_health(pb::WatchHealthRequest {})
        .await
        .expect("watch")
        .into_inner();
    assert!(watch.message().await.expect("first snapshot").is_some());

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
    let collector = Collector::start("");
    let addr = collector.addr.clone();
    let agent = Agent::with_config(
        &format!(
            "{}\n[uplink]\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
            sim_config("500ms", "1s", "250ms")
        ),
        &["--node", "e2e-reconnect", "--collector", &collector.url()],
    );
    let client = agent.client().await;
    eventually("uplink connected", Duration::from_secs(5), || {
        let mut c = client.clone();
        async move {
            let n = c.get_node(pb::GetNodeRequest {}).await.ok()?.into_inner();
            n.agent
                .filter(|a| a.uplink_connected && a.last_acked_seq > 0)
        }
    })
    .await;

    collector.proc.signal(Signal::SIGKILL);
    drop(collector);
    let a = eventually(
        "uplink reported disconnected",
        Duration::from_secs(5),
        || {
            let mut c = client.clone();
            async move {
                let n = c.get_node(pb::GetNodeRequest {}).await.ok()?.into_inner();
                n.agent
                    .filter(|a| !a.uplink_connected && a.reports_buffered > 0)
            }
        },
    )
    .await;
    assert!(a.reconnects_total >= 1);

    let collector = Collector::start_on(&addr, "");
    let cc = collector.client().await;
    let node = eventually(
        "node back at the restarted collector",
        Duration::from_secs(5),
        || {
            let mut c = cc.clone();
            async move {
                let n = c
                    .list_nodes(pb::ListNodesRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .nodes;
                n.into_iter()
                    .find(|n| n.node == "e2e-reconnect" && n.last_seq > 0)
            }
        },
    )
    .await;
    assert_eq!(
        node.missing_total, 0,
        "the buffered reports were delivered in order: no gap"
    );
    let a = eventually("buffer drained", Duration::from_secs(5), || {
        let mut c = client.clone();
        async move {
            let n = c.get_node(pb::GetNodeRequest {}).await.ok()?.into_inner();
            n.agent
                .filter(|a| a.uplink_connected && a.reports_buffered <= 2)
        }
    })
    .await;
    assert_eq!(a.reports_dropped_total, 0);
}
