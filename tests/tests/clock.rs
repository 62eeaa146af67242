//! Wall-clock jumps (an NTP step, an operator's `date -s`) on a running agent and on a running
//! collector, on the real binaries. The jump is made with libfaketime (Debian package
//! `faketime`), preloaded into the one process under test: its CLOCK_REALTIME follows an offset
//! read from a file on every call (`FAKETIME_NO_CACHE`), which the test rewrites mid-run, while
//! CLOCK_MONOTONIC stays real (`FAKETIME_DONT_FAKE_MONOTONIC`), as with an NTP step. Each test
//! first checks that the jump really reached the process (the wall time it writes on its data),
//! then that nothing an on-call engineer relies on moved with it: reports keep flowing, every
//! seq arrives exactly once, no node goes stale, no alert fires or resolves, and pending `for`
//! durations are measured on the monotonic clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use health_e2e::{
    device, eventually, has_code, reporting_config, Agent, Collector, QUICK_RECONNECT,
};
use health_proto::v1 as pb;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const HOUR: i64 = 3600;
/// The report interval of the agents here.
const REPORT_INTERVAL: Duration = Duration::from_millis(200);

/// The faked wall clock of one process: an offset in a file libfaketime reads on every call.
struct FakeWallClock {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl FakeWallClock {
    fn new() -> FakeWallClock {
        assert!(
            Path::new(LIBFAKETIME).is_file(),
            "{LIBFAKETIME} not found: install the Debian package faketime (it brings libfaketime, \
             which the clock-jump tests preload into the agent and the collector)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("faketime.rc");
        let clock = FakeWallClock { dir, file };
        clock.set(0);
        clock
    }

    /// The environment that makes a process read its wall clock from this file.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", LIBFAKETIME),
            (
                "FAKETIME_TIMESTAMP_FILE",
                self.file.to_str().expect("utf-8 path"),
            ),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Sets the process's wall clock to real time + `offset_s`. Written to a temporary file and
    /// renamed over, so a read never sees a half-written offset.
    fn set(&self, offset_s: i64) {
        let tmp = self.dir.path().join("faketime.rc.new");
        std::fs::write(&tmp, format!("{offset_s:+}\n")).expect("write the faketime offset");
        std::fs::rename(&tmp, &self.file).expect("rename the faketime offset into place");
    }
}

/// Seconds between a timestamp and the test's own (real) wall clock.
fn offset_from_real(at: Option<&prost_types::Timestamp>) -> Option<i64> {
    let at = at?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(at.seconds - i64::try_from(now).ok()?)
}

/// Every event the collector's WatchFleet and WatchAlerts streams carry while the test runs.
#[derive(Default)]
struct Watched {
    fleet: Mutex<Vec<pb::NodeSummary>>,
    alerts: Mutex<Vec<pb::Alert>>,
}

/// Subscribes to both streams; the tasks end when the collector goes away.
async fn watch(collector: &Collector) -> Arc<Watched> {
    let watched = Arc::new(Watched::default());
    let mut fleet = collector
        .client()
        .await
        .watch_fleet(pb::WatchFleetRequest {})
        .await
        .expect("WatchFleet")
        .into_inner();
    let mut alerts = collector
        .client()
        .await
        .watch_alerts(pb::WatchAlertsRequest {})
        .await
        .expect("WatchAlerts")
        .into_inner();
    let w = Arc::clone(&watched);
    tokio::spawn(async move {
        while let Ok(Some(event)) = fleet.message().await {
            if let Some(node) = event.node {
                w.fleet
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(node);
            }
        }
    });
    let w = Arc::clone(&watched);
    tokio::spawn(async move {
        while let Ok(Some(event)) = alerts.message().await {
            if let Some(alert) = event.alert {
                w.alerts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(alert);
            }
        }
    });
    watched
}

impl Watched {
    fn stale_events(&self, node: &str) -> Vec<pb::NodeSummary> {
        self.fleet
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.node == node && s.stale)
            .cloned()
            .collect()
    }

    /// Alert events about `node`'s devices or the node itself (NODE_STALE); host conditions
    /// (load, memory, disk of the machine running the tests) are left out: they follow the
    /// machine, not the clock.
    fn device_and_node_alerts(&self, node: &str) -> Vec<pb::Alert> {
        self.alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|a| a.node == node && (!a.device.is_empty() || a.subject == "node"))
            .cloned()
            .collect()
    }
}

/// A device's id, state and conditions (code, severity).
type DeviceHealth = (String, i32, Vec<(i32, i32)>);

/// Each device's health: the agent's view of its hardware.
fn device_health(s: &pb::NodeSnapshot) -> Vec<DeviceHealth> {
    let mut out: Vec<_> = s
        .devices
        .iter()
        .map(|d| {
            let id = d
                .identity
                .as_ref()
                .map(|i| i.id.clone())
                .unwrap_or_default();
            let mut conditions: Vec<(i32, i32)> =
                d.conditions.iter().map(|c| (c.code, c.severity)).collect();
            conditions.sort_unstable();
            (id, d.state, conditions)
        })
        .collect();
    out.sort();
    out
}

fn agent_config() -> String {
    reporting_config("200ms", "2s", "200ms", QUICK_RECONNECT)
}

/// Reports keep arriving after a jump, at the report interval: at least `more` new seqs reach
/// the collector (a timer on the wall clock would stop for the hour a backward jump adds), and
/// no burst (one on the wall clock would catch up an hour of reports after a forward jump).
async fn reports_keep_flowing(collector: &Collector, node: &str, more: u64, what: &str) {
    let t0 = Instant::now();
    let from = collector
        .node_summary(node)
        .await
        .expect("the node is known")
        .last_seq;
    let to = eventually(what, Duration::from_secs(30), || async {
        let s = collector.node_summary(node).await?;
        (s.last_seq >= from + more).then_some(s.last_seq)
    })
    .await;
    let elapsed = t0.elapsed();
    eprintln!("{what}: seq {from} -> {to} in {elapsed:?}");
    // Generous: the report loop fires once per interval, and may have a report in hand.
    let most = 2 * (elapsed.as_millis() / REPORT_INTERVAL.as_millis()) as u64 + 10;
    assert!(
        to - from <= most,
        "{what}: {} reports in {elapsed:?} at one per {REPORT_INTERVAL:?}: a burst",
        to - from
    );
}

/// Jumps `whose` wall clock one hour forward, back to real time (a backward step of one hour),
/// then one more hour back, behind `other`'s. After each jump, waits until `observed_offset`
/// (seconds between a wall time the process wrote and real time) shows the jump reached the
/// process, then checks that reports keep flowing.
async fn jump_forward_and_back<F, Fut>(
    clock: &FakeWallClock,
    whose: &str,
    other: &str,
    collector: &Collector,
    node: &str,
    mut observed_offset: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<i64>>,
{
    for (offset_s, what) in [
        (HOUR, "forward 1 h".to_string()),
        (0, "back 1 h, to real time".to_string()),
        (-HOUR, format!("back 1 h, behind {other}")),
    ] {
        clock.set(offset_s);
        eventually(
            &format!("the {whose}'s wall clock to jump {what}"),
            Duration::from_secs(10),
            || {
                let observed = observed_offset();
                async move {
                    observed
                        .await
                        .filter(|o| (o - offset_s).abs() < 60)
                        .map(|_| ())
                }
            },
        )
        .await;
        reports_keep_flowing(
            collector,
            node,
            10,
            &format!("reports after the {whose}'s clock jumped {what}"),
        )
        .await;
    }
}

#[tokio::test]
async fn an_agent_whose_wall_clock_jumps_keeps_reporting_every_seq_once_with_its_health_unchanged()
{
    let clock = FakeWallClock::new();
    let node = "clock-agent";
    let collector = Collector::start("stale_after = \"2s\"\n");
    let watched = watch(&collector).await;
    let agent = Agent::with_config_env(
        &agent_config(),
        &["--node", node, "--collector", &collector.url()],
        &clock.env(),
    );
    collector.wait_reports(node, 5).await;
    let before = agent.snapshot().await;
    let before_status = before.agent.clone().expect("agent status");
    let before_alerts = watched.device_and_node_alerts(node).len();

    // The jump reached the agent: the wall time on its snapshots moved by the offset.
    jump_forward_and_back(
        &clock,
        "agent",
        "the collector",
        &collector,
        node,
        || async { offset_from_real(agent.snapshot().await.taken_at.as_ref()) },
    )
    .await;

    // Everything the agent numbered reached the collector exactly once, over one stream.
    let last = agent.snapshot().await;
    let summary = eventually(
        "the collector to have the agent's latest seq",
        Duration::from_secs(15),
        || async {
            let s = collector.node_summary(node).await?;
            (s.last_seq >= last.seq).then_some(s)
        },
    )
    .await;
    assert_eq!(summary.boot_id, before.boot_id, "the same agent process");
    assert_eq!(summary.missing_total, 0, "no gap: {summary:?}");
    assert_eq!(summary.duplicates_total, 0, "nothing twice: {summary:?}");
    assert_eq!(
        summary.reports_total, summary.last_seq,
        "every seq from 1 received once: {summary:?}"
    );
    eprintln!("after the jumps: {summary:?}");
    let status = last.agent.clone().expect("agent status");
    assert!(status.uplink_connected, "{status:?}");
    assert_eq!(status.reports_dropped_total, 0, "{status:?}");
    assert_eq!(
        status.reconnects_total, before_status.reconnects_total,
        "the stream survived the jumps: {status:?}"
    );

    // The agent's view of its devices did not change, and the collector did not see the node
    // go stale or any of its devices' alerts change.
    assert_eq!(device_health(&last), device_health(&before));
    assert!(
        watched.stale_events(node).is_empty(),
        "stale: {:?}",
        watched.stale_events(node)
    );
    let alerts = watched.device_and_node_alerts(node);
    assert_eq!(
        alerts.len(),
        before_alerts,
        "no alert fired or resolved: {:?}",
        &alerts[before_alerts..]
    );
}

#[tokio::test]
async fn a_collector_whose_wall_clock_jumps_neither_stales_nodes_nor_stretches_alert_for() {
    let clock = FakeWallClock::new();
    let node = "clock-collector";
    let hold = Duration::from_secs(4);
    let collector = Collector::start_with_env(
        &format!(
            "stale_after = \"2s\"\n[alerts]\nfor = {{ DEVICE_UNRESPONSIVE = \"{}s\" }}\n",
            hold.as_secs()
        ),
        &clock.env(),
    );
    let watched = watch(&collector).await;
    let agent = Agent::with_config(
        &agent_config(),
        &["--node", node, "--collector", &collector.url()],
    );
    collector.wait_reports(node, 5).await;
    let before_alerts = watched.device_and_node_alerts(node).len();

    // Staleness: a jump either way must not make the node stale (it is judged on the
    // monotonic clock); `stale_after` is 2 s, so a wall-clock judgement would fire at once.
    // The jump reached the collector: the wall time it records a report's arrival at.
    jump_forward_and_back(
        &clock,
        "collector",
        "the agent",
        &collector,
        node,
        || async { offset_from_real(collector.node_summary(node).await?.last_seen.as_ref()) },
    )
    .await;
    let summary = collector.node_summary(node).await.expect("node known");
    assert!(!summary.stale, "{summary:?}");
    assert_eq!(summary.missing_total, 0, "{summary:?}");
    assert_eq!(summary.duplicates_total, 0, "{summary:?}");
    assert!(
        watched.stale_events(node).is_empty(),
        "stale: {:?}",
        watched.stale_events(node)
    );
    assert_eq!(
        watched.device_and_node_alerts(node).len(),
        before_alerts,
        "no alert fired or resolved: {:?}",
        &watched.device_and_node_alerts(node)[before_alerts..]
    );

    // `for`: a hung device's DEVICE_UNRESPONSIVE is pending for 4 s. Jumping the collector's
    // clock two hours forward while it is pending must not fire it early.
    let injected = Instant::now();
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    let is_unresponsive = |a: &pb::Alert| a.device == "loihi-0" && a.name == "DEVICE_UNRESPONSIVE";
    // The condition reaches the collector (the agent says so) before the jump.
    eventually(
        "the agent to report loihi-0 unresponsive",
        Duration::from_secs(15),
        || async {
            let s = agent.snapshot().await;
            device(&s.devices, "loihi-0")
                .is_some_and(|d| has_code(d, pb::ConditionCode::DeviceUnresponsive))
                .then_some(())
        },
    )
    .await;
    clock.set(HOUR);
    let fired = eventually(
        "DEVICE_UNRESPONSIVE to fire after its 4 s",
        Duration::from_secs(30),
        || async {
            watched
                .device_and_node_alerts(node)
                .iter()
                .any(|a| is_unresponsive(a) && a.status == pb::AlertStatus::Firing as i32)
                .then(|| injected.elapsed())
        },
    )
    .await;
    eprintln!("DEVICE_UNRESPONSIVE fired {fired:?} after the fault (for = {hold:?})");
    assert!(
        fired >= hold,
        "fired {fired:?} after the fault, before its `for` of {hold:?}: the forward jump cut it short"
    );

    // A firing alert stays firing across a backward jump of two hours: only the agent's next
    // report without the condition resolves it.
    clock.set(-HOUR);
    reports_keep_flowing(
        &collector,
        node,
        10,
        "reports applied after the collector's clock jumped back 2 h",
    )
    .await;
    let resolved_early: Vec<pb::Alert> = watched
        .device_and_node_alerts(node)
        .into_iter()
        .filter(|a| is_unresponsive(a) && a.status == pb::AlertStatus::Resolved as i32)
        .collect();
    assert!(resolved_early.is_empty(), "{resolved_early:?}");
    agent.ctl_ok(&["reset-device", "loihi-0", "--hard", "--yes"]);
    eventually(
        "DEVICE_UNRESPONSIVE to resolve after the reset",
        Duration::from_secs(30),
        || async {
            watched
                .device_and_node_alerts(node)
                .iter()
                .any(|a| is_unresponsive(a) && a.status == pb::AlertStatus::Resolved as i32)
                .then_some(())
        },
    )
    .await;
    assert!(
        watched.stale_events(node).is_empty(),
        "stale: {:?}",
        watched.stale_events(node)
    );
}
