//! The real collector binary over real gRPC on 127.0.0.1: reports in, acks, duplicates,
//! alerts fired and resolved, new nodes refused beyond max_nodes, and a graceful shutdown on
//! SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use health_proto::v1::collector_client::CollectorClient;
use health_proto::v1::{
    AlertEvent, AlertStatus, Condition, ConditionCode, Device, DeviceIdentity, DeviceKind,
    HealthReport, HealthState, ListNodesRequest, NodeSnapshot, ReportAck, Severity,
    WatchAlertsRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const STEP: Duration = Duration::from_secs(10);

/// The collector process; killed when the test ends, however it ends. On a failure its log
/// is printed, since that is where the reason usually is.
struct Collector {
    child: Child,
    log: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- health-collector log ---\n{log}");
        }
    }
}

/// A port that was free a moment ago (bound by us, then released for the collector).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

fn start_collector(test: &str) -> (Collector, SocketAddr) {
    start_collector_with(test, "")
}

/// Starts the collector with `extra` appended to the test configuration.
fn start_collector_with(test: &str, extra: &str) -> (Collector, SocketAddr) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("collector-grpc")
        .join(test);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!("stale_after = \"30s\"\nsweep_interval = \"100ms\"\n{extra}"),
    )
    .expect("write the config");
    let log = dir.join("collector.log");
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_health-collector"))
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(addr.to_string())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("create the log file"))
        .spawn()
        .expect("start health-collector");
    let collector = Collector { child, log };

    let deadline = Instant::now() + STEP;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "collector not listening on {addr} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (collector, addr)
}

fn report(seq: u64, thermal_warning: bool) -> HealthReport {
    report_from("n1", seq, thermal_warning)
}

fn report_from(node: &str, seq: u64, thermal_warning: bool) -> HealthReport {
    let conditions = if thermal_warning {
        vec![Condition {
            code: ConditionCode::ThermalWarning as i32,
            severity: Severity::Warning as i32,
            subject: "loihi-0".to_string(),
            message: "chip at 86.0 C (warning at 85.0 C)".to_string(),
            since: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            runbook: "check the fans and the airflow".to_string(),
        }]
    } else {
        Vec::new()
    };
    let state = if thermal_warning {
        HealthState::Warning
    } else {
        HealthState::Ok
    };
    HealthReport {
        node: node.to_string(),
        boot_id: "boot-a".to_string(),
        seq,
        sent_at: Some(std::time::SystemTime::now().into()),
        snapshot: Some(NodeSnapshot {
            node: node.to_string(),
            boot_id: "boot-a".to_string(),
            seq,
            state: state as i32,
            devices: vec![Device {
                identity: Some(DeviceIdentity {
                    id: "loihi-0".to_string(),
                    kind: DeviceKind::Loihi2 as i32,
                    ..Default::default()
                }),
                state: state as i32,
                conditions,
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

async fn next_ack(acks: &mut Streaming<ReportAck>) -> ReportAck {
    tokio::time::timeout(STEP, acks.message())
        .await
        .expect("ack within 10 s")
        .expect("ack stream ok")
        .expect("ack stream open")
}

async fn next_alert(alerts: &mut Streaming<AlertEvent>) -> health_proto::v1::Alert {
    tokio::time::timeout(STEP, alerts.message())
        .await
        .expect("alert within 10 s")
        .expect("alert stream ok")
        .expect("alert stream open")
        .alert
        .expect("event carries an alert")
}

#[tokio::test]
async fn reports_are_acked_deduplicated_and_alerted_on() {
    // THERMAL_WARNING is held for 1 min by default; this test is about firing, not holding.
    let (mut collector, addr) =
        start_collector_with("reports", "[alerts]\nfor = { THERMAL_WARNING = \"0s\" }\n");
    let mut client = tokio::time::timeout(STEP, CollectorClient::connect(format!("http://{addr}")))
        .await
        .expect("connect within 10 s")
        .expect("connect");

    let (reports, outbound) = mpsc::channel(8);
    let mut acks = client
        .report(ReceiverStream::new(outbound))
        .await
        .expect("open the report stream")
        .into_inner();

    for (seq, acked) in [(1, 1), (2, 2), (2, 2)] {
        reports
            .send(report(seq, true))
            .await
            .expect("send a report");
        let ack = next_ack(&mut acks).await;
        assert_eq!(ack.boot_id, "boot-a");
        assert_eq!(ack.acked_seq, acked, "ack for seq {seq}");
    }

    let nodes = client
        .list_nodes(ListNodesRequest {})
        .await
        .expect("ListNodes")
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node, "n1");
    assert_eq!(nodes[0].duplicates_total, 1);
    assert_eq!(nodes[0].reports_total, 3);
    assert_eq!(nodes[0].last_seq, 2);
    assert_eq!(nodes[0].state, HealthState::Warning as i32);
    assert!(nodes[0].peer.starts_with("127.0.0.1:"), "{}", nodes[0].peer);

    let mut alerts = client
        .watch_alerts(WatchAlertsRequest {})
        .await
        .expect("WatchAlerts")
        .into_inner();
    let firing = next_alert(&mut alerts).await;
    assert_eq!(firing.fingerprint, "n1/loihi-0/THERMAL_WARNING");
    assert_eq!(firing.name, "THERMAL_WARNING");
    assert_eq!(firing.alertname, "DeviceOverheating");
    assert_eq!(firing.device, "loihi-0");
    assert_eq!(firing.status, AlertStatus::Firing as i32);
    assert_eq!(firing.severity, Severity::Warning as i32);

    reports.send(report(3, false)).await.expect("send a report");
    assert_eq!(next_ack(&mut acks).await.acked_seq, 3);
    let resolved = next_alert(&mut alerts).await;
    assert_eq!(resolved.fingerprint, "n1/loihi-0/THERMAL_WARNING");
    assert_eq!(resolved.status, AlertStatus::Resolved as i32);
    assert!(resolved.ends_at.is_some());

    // SIGTERM: the open streams end and the process exits 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(collector.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    let ended = tokio::time::timeout(STEP, alerts.message())
        .await
        .expect("the alert stream ends within 10 s");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    let deadline = Instant::now() + STEP;
    let exit = loop {
        if let Some(exit) = collector.child.try_wait().expect("poll the collector") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "collector still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn an_invalid_report_ends_the_stream_with_invalid_argument() {
    let (_collector, addr) = start_collector("invalid");
    let mut client = tokio::time::timeout(STEP, CollectorClient::connect(format!("http://{addr}")))
        .await
        .expect("connect within 10 s")
        .expect("connect");
    let (reports, outbound) = mpsc::channel(8);
    let mut acks = client
        .report(ReceiverStream::new(outbound))
        .await
        .expect("open the report stream")
        .into_inner();
    let mut bad = report(1, false);
    bad.boot_id.clear();
    reports.send(bad).await.expect("send a report");
    let status = tokio::time::timeout(STEP, acks.message())
        .await
        .expect("answer within 10 s")
        .expect_err("the stream fails");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("boot_id"), "{}", status.message());
}

/// Opens a Report stream: the sender for reports, the stream of acks.
async fn open_report_stream(
    client: &mut CollectorClient<tonic::transport::Channel>,
) -> (mpsc::Sender<HealthReport>, Streaming<ReportAck>) {
    let (reports, outbound) = mpsc::channel(8);
    let acks = client
        .report(ReceiverStream::new(outbound))
        .await
        .expect("open the report stream")
        .into_inner();
    (reports, acks)
}

#[tokio::test]
async fn a_new_node_beyond_max_nodes_is_refused_with_resource_exhausted() {
    let (_collector, addr) = start_collector_with("max-nodes", "max_nodes = 1\n");
    let mut client = tokio::time::timeout(STEP, CollectorClient::connect(format!("http://{addr}")))
        .await
        .expect("connect within 10 s")
        .expect("connect");

    let (n1, mut n1_acks) = open_report_stream(&mut client).await;
    n1.send(report_from("n1", 1, false))
        .await
        .expect("send a report");
    assert_eq!(next_ack(&mut n1_acks).await.acked_seq, 1);

    let (n2, mut n2_acks) = open_report_stream(&mut client).await;
    n2.send(report_from("n2", 1, false))
        .await
        .expect("send a report");
    let status = tokio::time::timeout(STEP, n2_acks.message())
        .await
        .expect("answer within 10 s")
        .expect_err("the stream fails");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("max_nodes = 1"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("\"n2\""), "{}", status.message());

    // The node already held keeps reporting, on its stream and on a new one.
    n1.send(report_from("n1", 2, false))
        .await
        .expect("send a report");
    assert_eq!(next_ack(&mut n1_acks).await.acked_seq, 2);
    let (n1_again, mut n1_again_acks) = open_report_stream(&mut client).await;
    n1_again
        .send(report_from("n1", 3, false))
        .await
        .expect("send a report");
    assert_eq!(next_ack(&mut n1_again_acks).await.acked_seq, 3);

    let nodes = client
        .list_nodes(ListNodesRequest {})
        .await
        .expect("ListNodes")
        .into_inner()
        .nodes;
    let names: Vec<&str> = nodes.iter().map(|node| node.node.as_str()).collect();
    assert_eq!(names, vec!["n1"]);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let (_collector, addr) = start_collector("standard-services");
    let channel = tokio::time::timeout(
        STEP,
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect(),
    )
    .await
    .expect("connect within 10 s")
    .expect("connect");

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "health.v1.Collector".to_string(),
        })
        .await
        .expect("grpc.health.v1 Check")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = tokio::time::timeout(STEP, responses.message())
        .await
        .expect("reflection answer within 10 s")
        .expect("reflection ok")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"health.v1.Collector".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}
