//! The remediation leases on the real collector binary over real gRPC on 127.0.0.1: a small
//! `[leases]` budget granted, refused and freed by AcquireLease / ReleaseLease, the circuit
//! breaker opening on a storm, bad requests named, and the grant and refusal counters on the
//! collector's `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use health_proto::v1::collector_client::CollectorClient;
use health_proto::v1::{
    AcquireLeaseRequest, Device, DeviceIdentity, DeviceKind, HealthReport, LeaseDecision,
    NodeSnapshot, ReleaseLeaseRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const STEP: Duration = Duration::from_secs(10);

/// The collector process, killed (by its pid, through `Child`) when the test ends; its log is
/// printed on a failure.
struct Collector {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
    metrics: SocketAddr,
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

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + STEP;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listening on {addr} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the collector with this `[leases]` table and `/metrics` on.
fn start_collector(test: &str, leases: &str) -> Collector {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("collector-leases")
        .join(test);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let config = dir.join("collector.toml");
    let (addr, metrics) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!("listen = \"{addr}\"\nmetrics_listen = \"{metrics}\"\n[leases]\n{leases}"),
    )
    .expect("write the config");
    let log = dir.join("collector.log");
    let child = Command::new(env!("CARGO_BIN_EXE_health-collector"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("create the log file"))
        .spawn()
        .expect("start health-collector");
    let collector = Collector {
        child,
        log,
        addr,
        metrics,
    };
    wait_listening(addr);
    wait_listening(metrics);
    collector
}

async fn client(collector: &Collector) -> CollectorClient<Channel> {
    tokio::time::timeout(
        STEP,
        CollectorClient::connect(format!("http://{}", collector.addr)),
    )
    .await
    .expect("connect within 10 s")
    .expect("connect")
}

/// Reports one node with `devices` devices and waits for the ack: the collector then holds
/// them, and the window budget is a share of them.
async fn hold_devices(client: &mut CollectorClient<Channel>, node: &str, devices: usize) {
    let snapshot = NodeSnapshot {
        node: node.to_string(),
        boot_id: "boot-a".to_string(),
        seq: 1,
        devices: (0..devices)
            .map(|i| Device {
                identity: Some(DeviceIdentity {
                    id: format!("d{i}"),
                    kind: DeviceKind::Loihi2 as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (reports, outbound) = mpsc::channel(1);
    let mut acks = client
        .report(ReceiverStream::new(outbound))
        .await
        .expect("open the report stream")
        .into_inner();
    reports
        .send(HealthReport {
            node: node.to_string(),
            boot_id: "boot-a".to_string(),
            seq: 1,
            sent_at: Some(std::time::SystemTime::now().into()),
            snapshot: Some(snapshot),
        })
        .await
        .expect("send the report");
    let ack = tokio::time::timeout(STEP, acks.message())
        .await
        .expect("ack within 10 s")
        .expect("ack stream ok")
        .expect("an ack");
    assert_eq!(ack.acked_seq, 1);
}

fn ask(node: &str, device: &str, request_id: &str) -> AcquireLeaseRequest {
    AcquireLeaseRequest {
        node: node.to_string(),
        device: device.to_string(),
        policy: "thermal".to_string(),
        action: "reset-hard".to_string(),
        request_id: request_id.to_string(),
    }
}

async fn acquire(
    client: &mut CollectorClient<Channel>,
    request: AcquireLeaseRequest,
) -> LeaseDecision {
    tokio::time::timeout(STEP, client.acquire_lease(request))
        .await
        .expect("an answer within 10 s")
        .expect("AcquireLease answers (a refusal is not an error)")
        .into_inner()
}

async fn release(client: &mut CollectorClient<Channel>, lease_id: &str, node: &str) -> bool {
    tokio::time::timeout(
        STEP,
        client.release_lease(ReleaseLeaseRequest {
            lease_id: lease_id.to_string(),
            node: node.to_string(),
            outcome: "SUCCEEDED".to_string(),
        }),
    )
    .await
    .expect("an answer within 10 s")
    .expect("ReleaseLease answers")
    .into_inner()
    .released
}

/// `GET /metrics` over HTTP/1.1; the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    stream.set_read_timeout(Some(STEP)).expect("read timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of one sample (`name{labels}` exactly as exposed), or a panic showing the lease
/// lines of the scrape.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or_else(|| {
            let leases: Vec<&str> = metrics.lines().filter(|l| l.contains("lease")).collect();
            panic!("no {series} in the scrape:\n{}", leases.join("\n"))
        })
}

#[tokio::test]
async fn max_concurrent_leases_are_granted_then_refused_until_one_is_released() {
    let collector = start_collector("max-concurrent", "max_concurrent = 2\nmax_fraction = 1.0\n");
    let mut client = client(&collector).await;
    // Ten devices held at max_fraction 1.0: only max_concurrent binds.
    hold_devices(&mut client, "n1", 10).await;

    let first = acquire(&mut client, ask("n1", "d0", "r0")).await;
    assert!(first.granted, "{}", first.reason);
    assert!(!first.lease_id.is_empty());
    assert_eq!(first.ttl_ms, 600_000, "the default ttl of 10m");
    assert_eq!(first.window_budget, 10);
    let second = acquire(&mut client, ask("n1", "d1", "r1")).await;
    assert!(second.granted, "{}", second.reason);
    assert_eq!((second.active, second.max_concurrent), (2, 2));

    let third = acquire(&mut client, ask("n1", "d2", "r2")).await;
    assert!(!third.granted);
    assert!(third.lease_id.is_empty());
    assert!(
        third.reason.starts_with("max_concurrent 2 reached"),
        "{}",
        third.reason
    );
    assert!(!third.breaker_open);

    // A retry of the first request (its reply lost) gets the same lease, not a new one.
    let retry = acquire(&mut client, ask("n1", "d0", "r0")).await;
    assert!(retry.granted, "{}", retry.reason);
    assert_eq!(retry.lease_id, first.lease_id);

    assert!(release(&mut client, &first.lease_id, "n1").await);
    assert!(
        !release(&mut client, &first.lease_id, "n1").await,
        "released once"
    );
    let fourth = acquire(&mut client, ask("n1", "d2", "r2")).await;
    assert!(fourth.granted, "{}", fourth.reason);
    assert_ne!(fourth.lease_id, first.lease_id);

    let metrics = scrape(collector.metrics);
    assert_eq!(sample(&metrics, "health_collector_lease_grants_total"), 3.0);
    assert_eq!(
        sample(
            &metrics,
            "health_collector_lease_refusals_total{reason=\"max_concurrent\"}"
        ),
        1.0
    );
    for reason in ["window", "breaker", "busy"] {
        let series = format!("health_collector_lease_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&metrics, &series), 0.0, "{series}");
    }
    assert_eq!(sample(&metrics, "health_collector_leases_active"), 2.0);
    assert_eq!(sample(&metrics, "health_collector_lease_breaker_open"), 0.0);
}

#[tokio::test]
async fn more_devices_failing_than_the_window_budget_open_the_breaker() {
    let collector = start_collector("breaker", "max_fraction = 0.5\ncooldown = \"1h\"\n");
    let mut client = client(&collector).await;
    // Four devices at 0.5: two leases per window; a third device asking is a storm.
    hold_devices(&mut client, "n1", 4).await;
    for device in ["d0", "d1"] {
        let granted = acquire(&mut client, ask("n1", device, "r")).await;
        assert!(granted.granted, "{}", granted.reason);
        assert_eq!(granted.window_budget, 2);
    }
    let busy = acquire(&mut client, ask("n1", "d0", "another-step")).await;
    assert!(
        busy.reason.starts_with("device n1/d0 already holds lease"),
        "{}",
        busy.reason
    );
    let storm = acquire(&mut client, ask("n1", "d2", "r")).await;
    assert!(!storm.granted && storm.breaker_open, "{storm:?}");
    assert!(
        storm
            .reason
            .starts_with("circuit breaker open: 3 devices asked"),
        "{}",
        storm.reason
    );
    assert!(
        storm.reason.contains("1h after the storm ends"),
        "{}",
        storm.reason
    );
    // While it is open, nobody gets a lease, not even a device that asked before the storm.
    let after = acquire(&mut client, ask("n1", "d1", "next-step")).await;
    assert!(!after.granted && after.breaker_open, "{after:?}");

    let metrics = scrape(collector.metrics);
    assert_eq!(sample(&metrics, "health_collector_lease_breaker_open"), 1.0);
    assert_eq!(sample(&metrics, "health_collector_lease_grants_total"), 2.0);
    assert_eq!(
        sample(
            &metrics,
            "health_collector_lease_refusals_total{reason=\"breaker\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            "health_collector_lease_refusals_total{reason=\"busy\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn bad_lease_requests_are_invalid_argument_naming_the_field() {
    let collector = start_collector("invalid", "");
    let mut client = client(&collector).await;
    let status = client
        .acquire_lease(ask("n1", "", "r"))
        .await
        .expect_err("no device");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("AcquireLeaseRequest.device: expected a non-empty string"),
        "{}",
        status.message()
    );
    let status = client
        .release_lease(ReleaseLeaseRequest {
            lease_id: "lease-1".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("no node");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("ReleaseLeaseRequest.node"),
        "{}",
        status.message()
    );
    // An unknown lease is fine: nothing to free.
    assert!(!release(&mut client, "lease-0-1", "n1").await);
}
