//! Silences and maintenance suppression through the collector, end to end with the real
//! binaries and a real Alertmanager (Debian's `prometheus-alertmanager`, as in alerting.rs):
//! an operator on the collector's Unix socket creates, lists and expires a silence with
//! agent-ctl and Alertmanager holds it with the right matchers and endsAt; a plain-TCP caller
//! is refused and recorded in the collector's audit log, which verifies; a device in
//! maintenance has its critical alert SUPPRESSED, never in Alertmanager, and a silence on
//! node+device until the window's end, created once a late Alertmanager is up, expired when
//! the maintenance ends (and then the alert fires).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use health_e2e::{ctl, free_port, output_text, wait_for, wait_until, Collector, Proc};
use health_proto::v1 as pb;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

const LIMIT: Duration = Duration::from_secs(30);

fn alertmanager_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus-alertmanager"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/prometheus-alertmanager")).filter(|p| p.is_file()))
        .expect("prometheus-alertmanager not found: install Debian package prometheus-alertmanager")
}

/// A real Alertmanager on `addr` (loopback), clustering off, state in a private directory.
struct Alertmanager {
    _proc: Proc,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start_on(addr: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let child = Command::new(alertmanager_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus-alertmanager");
        let proc = Proc {
            child,
            name: "prometheus-alertmanager",
        };
        wait_until("Alertmanager to be ready", Duration::from_secs(20), || {
            http_get(addr, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        Alertmanager {
            _proc: proc,
            addr: addr.to_string(),
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Vec<Value> {
        match http_get(&self.addr, path) {
            Some((200, body)) => serde_json::from_str::<Vec<Value>>(&body).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn silence(&self, id: &str) -> Option<Value> {
        self.get("/api/v2/silences")
            .into_iter()
            .find(|s| s["id"] == id)
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn time_of(v: &Value) -> SystemTime {
    humantime::parse_rfc3339_weak(v.as_str().unwrap().trim_end_matches('Z')).unwrap()
}

fn matchers(silence: &Value) -> Vec<(String, String, bool, bool)> {
    let mut m: Vec<_> = silence["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["value"].as_str().unwrap().to_string(),
                m["isRegex"].as_bool().unwrap(),
                m["isEqual"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    m.sort();
    m
}

#[test]
fn an_operators_silence_reaches_alertmanager_and_a_plain_tcp_caller_is_denied_and_audited() {
    let am = Alertmanager::start_on(&format!("127.0.0.1:{}", free_port()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("collector.sock");
    let audit = dir.path().join("audit.jsonl");
    let config = format!(
        "socket = \"{}\"\naudit_log = \"{}\"\n[alerts]\nalertmanager = [\"http://{}\"]\n",
        socket.display(),
        audit.display(),
        am.addr
    );
    let collector = Collector::start(&config);
    let unix = format!("unix://{}", socket.display());
    wait_until("the collector's socket", LIMIT, || socket.exists());

    let out = ctl(&[
        "--collector",
        &unix,
        "--json",
        "silence",
        "--match",
        "alertname=DeviceOverheating,node=~n1|n2",
        "--match",
        "device!=loihi-9",
        "--for",
        "4h",
        "--comment",
        "replacing the fan",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "active");
    assert_eq!(created["audit_hash"].as_str().unwrap().len(), 64);
    assert!(created["created_by"]
        .as_str()
        .unwrap()
        .starts_with("health-collector (uid "));

    let held = am.silence(&id).expect("the silence is in Alertmanager");
    assert_eq!(held["status"]["state"], "active");
    assert_eq!(
        matchers(&held),
        vec![
            ("alertname".into(), "DeviceOverheating".into(), false, true),
            ("device".into(), "loihi-9".into(), false, false),
            ("node".into(), "n1|n2".into(), true, true),
        ]
    );
    let ends = time_of(&held["endsAt"]);
    let four_hours = SystemTime::now() + Duration::from_secs(4 * 3600);
    assert!(
        ends <= four_hours && ends > four_hours - Duration::from_secs(120),
        "{held}"
    );
    assert_eq!(held["comment"], "replacing the fan");

    let listed = ctl(&["--collector", &unix, "--json", "silences"]);
    assert!(listed.status.success(), "{}", output_text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str()),
        "{listed}"
    );

    // A restarted collector (killed: its stale socket is replaced) adopts the silence from
    // Alertmanager and can still expire it.
    drop(collector);
    let collector = Collector::start(&config);
    let listed = wait_for("the silence adopted after a restart", LIMIT, || {
        let out = ctl(&["--collector", &unix, "--json", "silences"]);
        let listed: Value = serde_json::from_slice(&out.stdout).ok()?;
        listed
            .as_array()?
            .iter()
            .find(|s| s["id"] == id.as_str())
            .cloned()
    });
    assert_eq!(listed["comment"], "replacing the fan");

    // Plain TCP: a reader at most.
    let denied = ctl(&["--collector", &collector.addr, "unsilence", &id]);
    assert!(!denied.status.success());
    let text = output_text(&denied);
    assert!(
        text.contains("PermissionDenied") && text.contains("operator"),
        "{text}"
    );
    assert_eq!(am.silence(&id).unwrap()["status"]["state"], "active");

    let unknown = ctl(&["--collector", &unix, "unsilence", "no-such-id"]);
    assert!(
        output_text(&unknown).contains("NotFound"),
        "{}",
        output_text(&unknown)
    );

    let expired = ctl(&["--collector", &unix, "--json", "unsilence", &id]);
    assert!(expired.status.success(), "{}", output_text(&expired));
    let expired: Value = serde_json::from_slice(&expired.stdout).unwrap();
    assert_eq!(expired["state"], "expired");
    assert_eq!(am.silence(&id).unwrap()["status"]["state"], "expired");

    let log = std::fs::read_to_string(&audit).unwrap();
    let phases: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        phases
            .iter()
            .any(|e| e["phase"] == "denied" && e["what"] == "ExpireSilence"),
        "{log}"
    );
    assert!(phases
        .iter()
        .any(|e| e["what"] == "CreateSilence" && e["outcome"] == "succeeded"));
    let verified = ctl(&["audit", "--verify", "--file", audit.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", output_text(&verified));
}

fn report(seq: u64, maintenance_until: Option<SystemTime>) -> pb::HealthReport {
    let critical = pb::Condition {
        code: pb::ConditionCode::ThermalCritical as i32,
        severity: pb::Severity::Critical as i32,
        subject: "loihi-0".into(),
        message: "chip at 101.0 C (critical at 95.0 C)".into(),
        since: Some(SystemTime::now().into()),
        runbook: "power it down".into(),
    };
    let maintenance = maintenance_until.map(|until| pb::Maintenance {
        until: Some(until.into()),
        reason: "fan replacement".into(),
        by: "uid 0".into(),
        audit_hash: "f00d".into(),
        source: "operator".into(),
        ..Default::default()
    });
    pb::HealthReport {
        node: "n1".into(),
        boot_id: "boot-a".into(),
        seq,
        sent_at: Some(SystemTime::now().into()),
        snapshot: Some(pb::NodeSnapshot {
            node: "n1".into(),
            boot_id: "boot-a".into(),
            seq,
            state: pb::HealthState::Critical as i32,
            devices: vec![pb::Device {
                identity: Some(pb::DeviceIdentity {
                    id: "loihi-0".into(),
                    kind: pb::DeviceKind::Loihi2 as i32,
                    ..Default::default()
                }),
                state: pb::HealthState::Critical as i32,
                conditions: vec![critical],
                maintenance,
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

async fn alert_now(
    client: &mut pb::collector_client::CollectorClient<tonic::transport::Channel>,
) -> Option<pb::Alert> {
    let mut stream = client
        .watch_alerts(pb::WatchAlertsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The initial list arrives first; a short bound ends the read once it has.
    let mut found = None;
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
    {
        if let Some(a) = event
            .alert
            .filter(|a| a.node == "n1" && a.name == "THERMAL_CRITICAL")
        {
            found = Some(a);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_suppresses_the_alert_and_holds_a_silence_once_alertmanager_is_up() {
    let am_addr = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let collector = Collector::start(&format!(
        "audit_log = \"{}\"\n[alerts]\nalertmanager = [\"http://{am_addr}\"]\nresend_interval = \"2s\"\n",
        audit.display()
    ));
    let mut client = collector.client().await;
    let (reports, outbound) = tokio::sync::mpsc::channel(8);
    let mut acks = client
        .report(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let until = SystemTime::now() + Duration::from_secs(3600);
    reports.send(report(1, Some(until))).await.unwrap();
    acks.message().await.unwrap().unwrap();

    // Suppressed with Alertmanager down: suppression does not wait for it.
    let alert = alert_now(&mut client).await.expect("the alert is shown");
    assert_eq!(
        alert.status,
        pb::AlertStatus::Suppressed as i32,
        "{alert:?}"
    );
    assert!(
        alert
            .suppressed_by
            .starts_with("loihi-0 in maintenance until ")
            && alert.suppressed_by.ends_with("fan replacement (by uid 0)"),
        "{}",
        alert.suppressed_by
    );

    let am = Alertmanager::start_on(&am_addr);
    let silence = wait_for("the maintenance silence in Alertmanager", LIMIT, || {
        am.get("/api/v2/silences").into_iter().find(|s| {
            s["status"]["state"] == "active" && s["createdBy"] == "health-collector (maintenance)"
        })
    });
    assert_eq!(
        matchers(&silence),
        vec![
            ("device".into(), "loihi-0".into(), false, true),
            ("node".into(), "n1".into(), false, true),
        ]
    );
    let ends = time_of(&silence["endsAt"]);
    let off = ends.duration_since(until).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(1),
        "endsAt {ends:?}, until {until:?}"
    );
    assert_eq!(
        silence["comment"],
        "fan replacement (maintenance by uid 0, audit f00d)"
    );
    let listed = ctl(&["--collector", &collector.addr, "--json", "silences"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["origin"] == "maintenance" && s["device"] == "loihi-0"),
        "{listed}"
    );
    assert!(
        am.get("/api/v2/alerts")
            .iter()
            .all(|a| a["labels"]["node"] != "n1"),
        "a suppressed alert reached Alertmanager"
    );

    // Maintenance over: the silence goes, the alert fires.
    reports.send(report(2, None)).await.unwrap();
    acks.message().await.unwrap().unwrap();
    let id = silence["id"].as_str().unwrap().to_string();
    wait_until("the maintenance silence to expire", LIMIT, || {
        am.silence(&id)
            .is_some_and(|s| s["status"]["state"] == "expired")
    });
    wait_until("the alert to fire in Alertmanager", LIMIT, || {
        am.get("/api/v2/alerts")
            .iter()
            .any(|a| a["labels"]["node"] == "n1" && a["labels"]["code"] == "THERMAL_CRITICAL")
    });
    let alert = alert_now(&mut client).await.expect("the alert is shown");
    assert_eq!(alert.status, pb::AlertStatus::Firing as i32);
    let verified = ctl(&["audit", "--verify", "--file", audit.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", output_text(&verified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_whose_device_goes_into_maintenance_is_resolved_in_alertmanager() {
    let am = Alertmanager::start_on(&format!("127.0.0.1:{}", free_port()));
    let collector = Collector::start(&format!(
        "[alerts]\nalertmanager = [\"http://{}\"]\nresend_interval = \"2s\"\n",
        am.addr
    ));
    let mut client = collector.client().await;
    let (reports, outbound) = tokio::sync::mpsc::channel(8);
    let mut acks = client
        .report(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let in_am = |am: &Alertmanager| {
        am.get("/api/v2/alerts")
            .into_iter()
            .find(|a| a["labels"]["node"] == "n1" && a["labels"]["code"] == "THERMAL_CRITICAL")
    };
    reports.send(report(1, None)).await.unwrap();
    acks.message().await.unwrap().unwrap();
    wait_for("the alert firing in Alertmanager", LIMIT, || in_am(&am));

    reports
        .send(report(
            2,
            Some(SystemTime::now() + Duration::from_secs(600)),
        ))
        .await
        .unwrap();
    acks.message().await.unwrap().unwrap();
    // Resolved there: Alertmanager stops listing it once its endsAt has passed.
    wait_until("the alert to leave Alertmanager", LIMIT, || {
        in_am(&am).is_none()
    });
    let shown = ctl(&[
        "--collector",
        &collector.addr,
        "--json",
        "alerts",
        "--count",
        "1",
    ]);
    assert!(shown.status.success(), "{}", output_text(&shown));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "SUPPRESSED", "{shown}");
    assert!(shown["silenced_by"].as_array().is_some(), "{shown}");
    let text = ctl(&["--collector", &collector.addr, "alerts", "--count", "1"]);
    assert!(
        output_text(&text).contains("SUPPRESSED")
            && output_text(&text).contains("[suppressed: loihi-0 in maintenance"),
        "{}",
        output_text(&text)
    );
}
