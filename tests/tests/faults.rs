//! Faults the agent and the collector survive, one test each, on the real binaries: a device
//! that vanishes while an action is in flight, a collector that accepts connections and never
//! answers, WatchHealth clients that never read, oversize and malformed gRPC messages, 1,000
//! concurrent watchers, and SIGTERM during a reset. (A device read that blocks forever, a
//! SIGKILLed agent and a collector restart are in `e2e.rs`; collector outages and failover in
//! `delivery.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use health_e2e::{
    device, eventually, has_code, output_text, reporting_config, sim_config, Agent, Collector,
};
use health_proto::v1 as pb;
use nix::sys::signal::Signal;

/// Resident memory of a process, from /proc/<pid>/status, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits for a process to exit within `limit`, and returns whether it exited successfully.
fn exits_cleanly(proc: &mut health_e2e::Proc, limit: Duration) -> bool {
    proc.wait_exit(limit)
        .unwrap_or_else(|| panic!("{} still running {limit:?} after SIGTERM", proc.name))
        .success()
}

#[tokio::test]
async fn a_device_that_vanishes_during_a_reset_is_missing_and_the_agent_carries_on() {
    let agent = Agent::with_config(&sim_config("300ms", "1s", "200ms"), &["--node", "f-vanish"]);
    agent.wait_all_devices_read().await;
    // The Loihi simulator's power cycle takes 2.5 s; the device vanishes while it runs.
    let reset = agent.begin_power_cycle("loihi-0");
    agent.ctl_ok(&["inject-fault", "loihi-0", "vanish"]);
    // While the reset is in flight, the agent answers and the other devices keep updating.
    let during = agent.snapshot().await;
    let photonic_during = device(&during.devices, "photonic-0").map(|d| d.last_read_at);
    let reset = reset.join().expect("agent-ctl thread");
    // The call in flight ends within its deadline (the simulator finishes the power cycle; a
    // real backend may fail it), and the device is read right after it: missing.
    let printed = output_text(&reset);
    assert!(reset.status.success(), "{printed}");
    assert!(
        printed.starts_with("loihi-0 reset-power-cycle SUCCEEDED"),
        "{printed}"
    );
    let s = eventually("loihi-0 missing", Duration::from_secs(10), || async {
        let s = agent.snapshot().await;
        device(&s.devices, "loihi-0")
            .is_some_and(|d| has_code(d, pb::ConditionCode::DeviceMissing))
            .then_some(s)
    })
    .await;
    assert_ne!(
        device(&s.devices, "photonic-0").map(|d| d.last_read_at),
        photonic_during,
        "photonic-0 kept being read"
    );
    // The device vanished while the reset was in flight: the audit log has the vanish between
    // the reset's begin and its end.
    let record: Vec<String> = agent
        .audit_entries()
        .iter()
        .filter(|e| e["target"] == "loihi-0")
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            format!(
                "{} {} {}",
                field("phase"),
                field("action"),
                field("outcome")
            )
        })
        .collect();
    assert_eq!(
        record,
        [
            "begin reset-power-cycle ",
            "begin inject-fault vanish ",
            "end inject-fault vanish succeeded",
            "end reset-power-cycle succeeded",
        ],
        "the vanish was injected during the reset"
    );
    // And the action list shows the reset, once, with its outcome.
    let listed: serde_json::Value =
        serde_json::from_str(&agent.ctl_ok(&["--json", "actions", "--device", "loihi-0"]))
            .expect("agent-ctl --json actions prints JSON");
    let resets: Vec<(&str, &str)> = listed
        .as_array()
        .expect("a list of actions")
        .iter()
        .filter(|a| a["action"] == "reset-power-cycle")
        .map(|a| {
            (
                a["device_id"].as_str().unwrap_or_default(),
                a["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(resets, [("loihi-0", "SUCCEEDED")], "{listed}");
}

#[tokio::test]
async fn a_collector_that_accepts_and_never_answers_does_not_hold_the_agent() {
    // Accepts every connection and holds it without a byte in reply.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            held.len()
        })
    };
    let mut agent = Agent::with_config(
        &reporting_config(
            "300ms",
            "1s",
            "100ms",
            "connect_timeout = \"500ms\"\nack_timeout = \"1s\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
        ),
        &["--node", "f-silent", "--collector", &format!("http://{addr}")],
    );
    let a = eventually(
        "reports buffered, uplink down",
        Duration::from_secs(10),
        || async {
            let a = agent.snapshot().await.agent?;
            (!a.uplink_connected && a.reports_buffered >= 20 && a.reconnects_total >= 3)
                .then_some(a)
        },
    )
    .await;
    assert_eq!(a.reports_dropped_total, 0);
    let out = agent.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("uplink DISCONNECTED"),
        "{text}"
    );
    // The node itself is healthy: polling goes on.
    let s = agent.snapshot().await;
    assert!(s.devices.iter().all(|d| d.last_read_at.is_some()));

    agent.proc.signal(Signal::SIGTERM);
    assert!(exits_cleanly(&mut agent.proc, Duration::from_secs(5)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let connections = held.join().expect("listener thread");
    assert!(connections >= 2, "the agent kept trying: {connections}");
}

#[tokio::test]
async fn watchers_that_never_read_do_not_grow_memory_or_stall_another_watcher() {
    let agent = Agent::with_config(&sim_config("300ms", "1s", "100ms"), &["--node", "f-slow"]);
    let pid = agent.proc.pid().as_raw();
    // 50 watchers, each on its own connection, read one snapshot and then nothing.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut c = agent.client().await;
        let mut s = c
            .watch_health(pb::WatchHealthRequest {})
            .await
            .expect("watch")
            .into_inner();
        assert!(s.message().await.expect("first").is_some());
        stalled.push((c, s));
    }
    // Twenty reports (2 s) published past the stalled watchers before the baseline: whatever
    // the agent keeps for a watcher that does not read is in it.
    let stalled_at = agent.snapshot().await.seq;
    let seq_before = eventually(
        "twenty reports past the stalled watchers",
        Duration::from_secs(20),
        || async {
            let seq = agent.snapshot().await.seq;
            (seq >= stalled_at + 20).then_some(seq)
        },
    )
    .await;
    let rss_before = rss_kib(pid);

    // Meanwhile one watcher reads everything.
    let mut live = agent.watch_health().await;
    let mut seqs = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        let m = tokio::time::timeout(Duration::from_secs(2), live.message())
            .await
            .expect("the live watcher is never stalled for 2 s")
            .expect("stream")
            .expect("snapshot");
        seqs.push(m.seq);
    }
    let current = agent.snapshot().await.seq;
    let rss_after = rss_kib(pid);
    let reports = current - seq_before;
    eprintln!(
        "slow watchers: 50 stalled streams, {reports} reports, agent RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(reports >= 50, "{reports} reports in 15 s");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "fresh, in order");
    assert!(
        seqs.len() as u64 >= reports / 2,
        "{} of {reports}",
        seqs.len()
    );
    assert!(
        current - seqs.last().copied().unwrap_or(0) <= 20,
        "the live watcher is current"
    );
    // A queue per watcher would hold 50 x {reports} snapshots (several KiB each) by now.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "agent memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(stalled);
}

#[tokio::test]
async fn a_thousand_concurrent_watchers_all_get_a_snapshot_and_the_agent_stays_responsive() {
    let agent = Agent::with_config(&sim_config("500ms", "1s", "500ms"), &["--node", "f-many"]);
    let t0 = Instant::now();
    // 50 connections x 20 streams.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = agent.client().await;
        for _ in 0..20 {
            let mut c = client.clone();
            tasks.spawn(async move {
                let mut s = c
                    .watch_health(pb::WatchHealthRequest {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                let first = s.message().await.map_err(|e| e.to_string())?;
                let first = first.ok_or("stream ended")?.seq;
                // Hold the stream open until told to stop, reading as snapshots come.
                Ok::<_, String>((first, s))
            });
        }
    }
    let mut open = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), tasks.join_next())
        .await
        .expect("all watchers answered within 60 s")
    {
        open.push(r.expect("task").expect("a watcher got its snapshot"));
    }
    assert_eq!(open.len(), 1000);
    eprintln!(
        "1000 watchers: all had their first snapshot after {:?}",
        t0.elapsed()
    );
    // With all of them open, the agent answers and its snapshots move on.
    let before = agent.snapshot().await.seq;
    let out = agent.ctl(&["status"]);
    assert!(out.status.success());
    eventually("new snapshots", Duration::from_secs(5), || async {
        (agent.snapshot().await.seq > before).then_some(())
    })
    .await;
    // And a watcher opened earlier still gets fresh ones.
    let (first, stream) = &mut open[999];
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a fresh snapshot")
        .expect("stream")
        .expect("snapshot");
    assert!(next.seq > *first);
}

#[tokio::test]
async fn oversize_and_malformed_grpc_messages_are_refused_and_the_servers_keep_serving() {
    let collector = Collector::start("max_message_bytes = 65536\n");
    let mut cc = collector.client().await;
    // A report larger than the collector's limit.
    let big = pb::HealthReport {
        node: "f-big".into(),
        boot_id: "b".into(),
        seq: 1,
        snapshot: Some(pb::NodeSnapshot {
            node: "f-big".into(),
            agent_version: "x".repeat(200_000),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = match cc.report(tokio_stream_once(big)).await {
        Err(status) => status,
        Ok(resp) => {
            let mut acks = resp.into_inner();
            match acks.message().await {
                Err(status) => status,
                Ok(a) => panic!("an oversize report was accepted: {a:?}"),
            }
        }
    };
    assert!(
        matches!(
            refused.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{refused:?}"
    );
    assert!(refused.message().contains("65536"), "{refused:?}");

    // Garbage on the HTTP/2 port: the connection is closed, not served, not crashed on.
    let mut raw = TcpStream::connect(&collector.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\x01\x02garbage\xff\xfe")
        .expect("write garbage");
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                assert!(total < 1 << 20, "the server keeps talking to garbage");
            }
            // Closed with a reset: closed all the same.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed within 5 s: {e}"),
        }
    }
    // A garbage HTTP/2 frame after a valid preface: closed too.
    let mut raw = TcpStream::connect(&collector.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff")
        .expect("write");
    let mut closed = false;
    for _ in 0..100 {
        match raw.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(e) => panic!("no close within 5 s: {e}"),
        }
    }
    assert!(closed);
    // Still serving.
    let mut cc = collector.client().await;
    cc.list_nodes(pb::ListNodesRequest {})
        .await
        .expect("the collector still answers");

    // The agent's own limit, on its Unix socket.
    let agent = Agent::with_config(
        &format!(
            "max_message_bytes = 65536\n{}",
            sim_config("500ms", "1s", "500ms")
        ),
        &["--node", "f-big-agent"],
    );
    let mut ac = agent.client().await;
    let refused = ac
        .get_device(pb::GetDeviceRequest {
            id: "x".repeat(100_000),
        })
        .await
        .expect_err("an oversize request");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{refused:?}"
    );
    let mut raw = std::os::unix::net::UnixStream::connect(&agent.socket).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    raw.write_all(b"\x00garbage\xff\xfe\r\n\r\n")
        .expect("write");
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the agent neither answered nor closed within 5 s: {e}"),
        }
    }
    assert_eq!(agent.snapshot().await.node, "f-big-agent", "still serving");
}

/// A one-report request stream that stays open (so the server's answer is what ends it).
fn tokio_stream_once(
    report: pb::HealthReport,
) -> impl tokio_stream::Stream<Item = pb::HealthReport> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::once(report).chain(tokio_stream::pending())
}

#[tokio::test]
async fn sigterm_during_a_reset_lets_the_reset_finish_and_records_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("agent.log");
    let mut agent = Agent::with_config_logged(
        &sim_config("300ms", "1s", "200ms"),
        &["--node", "f-term-reset"],
        &log,
    );
    agent.wait_all_devices_read().await;
    let reset = agent.begin_power_cycle("loihi-0");
    let t0 = Instant::now();
    agent.proc.signal(Signal::SIGTERM);
    // Bounded by the action deadline plus the read deadline, plus the 1 s runtime bound.
    assert!(exits_cleanly(&mut agent.proc, Duration::from_secs(70)));
    let stopped_after = t0.elapsed();
    let _ = reset.join();
    let text = std::fs::read_to_string(&log).expect("log");
    let finished: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("action finished") || l.contains("action interrupted"))
        .collect();
    assert_eq!(
        finished.len(),
        1,
        "one end record for the one action:\n{text}"
    );
    // The simulator's reset completes within the shutdown bound, so it must say so.
    assert!(
        finished[0].contains("action finished") && finished[0].contains("SUCCEEDED"),
        "{}",
        finished[0]
    );
    // The audit log says the same, durably: the reset's begin, then its end.
    let audit = std::fs::read_to_string(agent.dir.path().join("audit.jsonl")).expect("audit log");
    let phases: Vec<String> = audit
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("audit line is JSON");
            format!(
                "{} {} {}",
                e["phase"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        phases,
        vec![
            "begin reset-power-cycle ".to_string(),
            "end reset-power-cycle succeeded".to_string()
        ],
        "{audit}"
    );
    eprintln!(
        "SIGTERM during a 2.5 s reset: the agent stopped after {stopped_after:?}; {}",
        finished[0]
    );
}
