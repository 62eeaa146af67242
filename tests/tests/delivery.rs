//! Delivery guarantees of the uplink, on the real binaries: a collector killed for 30 s loses no
//! report; an outage longer than the buffer is recorded as an explicit missing range; an agent
//! killed while the collector is down delivers its earlier boot's reports from the spill after
//! a restart; a torn spill file is cut back with a warning; and an agent fails over from one
//! collector to another.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::Path;
use std::time::{Duration, Instant};

use health_e2e::{
    eventually, reporting_config, wait_for, Agent, Collector, Fleet, QUICK_RECONNECT,
};
use health_proto::v1 as pb;
use nix::sys::signal::Signal;
use prost::Message as _;

/// An agent config: four simulated devices, reports every 100 ms, quick reconnects.
fn streaming_config(uplink: &str) -> String {
    reporting_config(
        "500ms",
        "1s",
        "100ms",
        &format!("{QUICK_RECONNECT}{uplink}"),
    )
}

fn status(s: &pb::NodeSnapshot) -> pb::AgentStatus {
    s.agent.clone().expect("agent status")
}

/// A collector and an agent with `config` streaming to it, once the collector has
/// acknowledged the agent's first reports.
async fn streaming(node: &str, config: &str) -> Fleet {
    let fleet = Fleet::with_agent_config(node, "", config);
    fleet.agent.wait_acked(5).await;
    fleet
}

/// Kills the collector and waits until the agent says it is disconnected; returns the agent's
/// status then (its last acknowledged seq no longer moves).
async fn kill_collector(collector: Collector, agent: &Agent) -> pb::AgentStatus {
    collector.proc.signal(Signal::SIGKILL);
    drop(collector);
    eventually(
        "the agent to see the collector gone",
        Duration::from_secs(10),
        || async {
            let a = agent.status().await;
            (!a.uplink_connected).then_some(a)
        },
    )
    .await
}

/// Waits until the agent's backlog has drained to the collector and the collector has applied
/// at least `through_seq`; returns the collector's view of the node.
async fn wait_drained(
    collector: &Collector,
    agent: &Agent,
    node: &str,
    through_seq: u64,
    limit: Duration,
) -> pb::FleetNode {
    eventually("the backlog to drain", limit, || async {
        let a = agent.status().await;
        if !(a.uplink_connected && a.reports_buffered <= 2) {
            return None;
        }
        let n = collector.fleet_node(node).await?;
        let s = n.summary.as_ref()?;
        (s.last_seq >= through_seq).then_some(n)
    })
    .await
}

fn ranges(n: &pb::FleetNode) -> Vec<(String, u64, u64, String)> {
    n.missing_ranges
        .iter()
        .map(|m| {
            let r = m.range.clone().expect("range");
            (r.boot_id, r.first_seq, r.last_seq, m.source.clone())
        })
        .collect()
}

#[tokio::test]
async fn a_collector_killed_for_30s_gets_every_report_exactly_once_after_its_restart() {
    // 30 s at 10 reports/s is 300 reports: a memory buffer of 1000 holds them.
    let Fleet {
        collector, agent, ..
    } = streaming("d-30s", &streaming_config("buffer_reports = 1000\n")).await;
    let addr = collector.addr.clone();
    let at_kill = kill_collector(collector, &agent).await;
    let first_unacked = at_kill.last_acked_seq + 1;

    tokio::time::sleep(Duration::from_secs(30)).await;
    let before_restart = agent.snapshot().await;
    let a = status(&before_restart);
    assert!(a.reports_buffered >= 250, "30 s of reports buffered: {a:?}");
    assert_eq!(a.reports_dropped_total, 0);

    let collector = Collector::start_on(&addr, "");
    let n = wait_drained(
        &collector,
        &agent,
        "d-30s",
        before_restart.seq,
        Duration::from_secs(30),
    )
    .await;
    let s = n.summary.clone().expect("summary");
    let applied = s.reports_total - s.duplicates_total;
    // Seqs are applied strictly increasing within a boot and every gap is counted missing, so
    // `applied` reports with no gap ending at last_seq are exactly the run starting here:
    let first_received = s.last_seq + 1 - applied;
    assert_eq!(
        first_received, first_unacked,
        "the new collector's first report is the agent's first unacknowledged one ({s:?})"
    );
    assert_eq!(s.missing_total, 0, "no gap: {s:?} {:?}", ranges(&n));
    assert_eq!(s.duplicates_total, 0, "nothing sent twice to it: {s:?}");
    assert!(n.missing_ranges.is_empty());
    assert!(s.last_seq >= before_restart.seq);
    eprintln!(
        "30 s outage: {} reports delivered after the restart (seq {}..={}), 0 missing, 0 duplicates",
        applied, first_received, s.last_seq
    );
}

#[tokio::test]
async fn an_outage_longer_than_the_buffer_is_recorded_as_an_explicit_missing_range() {
    let Fleet {
        collector, agent, ..
    } = streaming("d-overflow", &streaming_config("buffer_reports = 20\n")).await;
    let addr = collector.addr.clone();
    let at_kill = kill_collector(collector, &agent).await;
    // At 10 reports/s a buffer of 20 overflows after 2 s; wait for ten reports dropped.
    eventually(
        "the buffer to overflow",
        Duration::from_secs(30),
        || async { (agent.status().await.reports_dropped_total >= 10).then_some(()) },
    )
    .await;
    let before_restart = agent.snapshot().await;
    let boot = before_restart.boot_id.clone();

    let collector = Collector::start_on(&addr, "");
    wait_drained(
        &collector,
        &agent,
        "d-overflow",
        before_restart.seq,
        Duration::from_secs(20),
    )
    .await;
    // The collector learns of a drop from the next report the agent builds after it: the
    // oldest buffered report is evicted when the newest enters the buffer, after the newest's
    // snapshot was taken. So wait (bounded) until every seq between the last one acknowledged
    // before the kill and the first one received is recorded missing.
    let (acked_before, c) = (at_kill.last_acked_seq, &collector);
    let n = eventually(
        "the collector to record every report it will never receive",
        Duration::from_secs(10),
        move || async move {
            let n = c.fleet_node("d-overflow").await?;
            let s = n.summary.clone()?;
            let applied = s.reports_total - s.duplicates_total;
            let first_received = s.last_seq + 1 - applied;
            (s.missing_total + acked_before + 1 == first_received).then_some(n)
        },
    )
    .await;
    let s = n.summary.clone().expect("summary");
    let applied = s.reports_total - s.duplicates_total;
    let first_received = s.last_seq + 1 - applied;
    let a = agent.status().await;

    // Everything from the first unacknowledged report up to the first one the new collector
    // received was dropped; the collector records exactly that range, from the agent's word.
    let dropped = (at_kill.last_acked_seq + 1, first_received - 1);
    assert!(
        dropped.1 >= dropped.0 + 9,
        "the buffer overflowed: {dropped:?}"
    );
    assert_eq!(
        ranges(&n),
        vec![(
            boot.clone(),
            dropped.0,
            dropped.1,
            "dropped by agent".to_string()
        )],
        "agent {a:?}\ncollector {s:?}"
    );
    assert_eq!(s.missing_total, dropped.1 - dropped.0 + 1);
    assert_eq!(s.duplicates_total, 0);
    // The agent's own range starts at the same seq. It may end a little later: a report
    // evicted while it was in flight to the new collector is counted dropped by the agent (it
    // was never acknowledged) though the collector did receive it; the collector's view is
    // the one that says what is missing.
    let agent_ranges: Vec<(String, u64, u64)> = a
        .dropped_ranges
        .iter()
        .map(|r| (r.boot_id.clone(), r.first_seq, r.last_seq))
        .collect();
    assert_eq!(agent_ranges.len(), 1, "agent {a:?}\ncollector {s:?}");
    let (agent_boot, agent_first, agent_last) = agent_ranges[0].clone();
    assert_eq!(
        (agent_boot.as_str(), agent_first),
        (boot.as_str(), dropped.0)
    );
    assert!(
        agent_last >= dropped.1 && agent_last <= dropped.1 + 20,
        "agent {a:?}\ncollector {s:?}"
    );
    assert_eq!(a.reports_dropped_total, agent_last - agent_first + 1);

    // agent-ctl shows the range on both sides.
    let out = health_e2e::ctl(&["--collector", &collector.addr, "fleet-node", "d-overflow"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = format!("seq {}..={}", dropped.0, dropped.1);
    assert!(
        text.contains(&line) && text.contains("dropped by agent"),
        "{text}"
    );
    let out = agent.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!("seq {}..={}", agent_first, agent_last);
    assert!(
        text.contains("dropped unsent: boot") && text.contains(&line),
        "{text}"
    );
}

/// The reports in an agent's spill directory, as (boot id, seq), from the record its `head`
/// file names (the first unacknowledged one) on. Read with the layout `agent/src/wire/uplink/spill.rs`
/// documents: `<id>.seg` files of `[u32 length LE][u32 CRC-32 LE][HealthReport]` records, and
/// `head` holding "<segment id> <offset>". A record still being written ends the read.
fn spilled_from_head(dir: &Path) -> Vec<(String, u64)> {
    let Some((head_segment, head_offset)) = std::fs::read_to_string(dir.join("head"))
        .ok()
        .and_then(|t| {
            let (segment, offset) = t.trim().split_once(' ')?;
            Some((segment.parse::<u64>().ok()?, offset.parse::<usize>().ok()?))
        })
    else {
        return Vec::new();
    };
    let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()?;
            (id >= head_segment).then_some((id, path))
        })
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for (id, path) in segments {
        let bytes = std::fs::read(&path).unwrap_or_default();
        let mut at = if id == head_segment { head_offset } else { 0 };
        while let Some(header) = bytes.get(at..at + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let Some(report) = bytes
                .get(at + 8..at + 8 + len)
                .and_then(|payload| pb::HealthReport::decode(payload).ok())
            else {
                return out;
            };
            out.push((report.boot_id, report.seq));
            at += 8 + len;
        }
    }
    out
}

fn spill_config(dir: &Path, buffer: usize) -> String {
    streaming_config(&format!(
        "buffer_reports = {buffer}\nspill_path = \"{}\"\n",
        dir.join("spill").display()
    ))
}

#[tokio::test]
async fn an_agent_killed_during_an_outage_delivers_its_earlier_boots_reports_from_the_spill() {
    let state = tempfile::tempdir().expect("tempdir");
    // A memory buffer of 5: nearly all of the outage's reports exist only on disk.
    let config = spill_config(state.path(), 5);
    let Fleet {
        collector,
        agent: mut first,
        ..
    } = streaming("d-spill", &config).await;
    let (addr, url) = (collector.addr.clone(), collector.url());
    let at_kill = kill_collector(collector, &first).await;
    let last_seen = eventually(
        "the outage's reports to outgrow the memory buffer",
        Duration::from_secs(10),
        || async {
            let s = first.snapshot().await;
            (status(&s).reports_buffered >= 20).then_some(s)
        },
    )
    .await;
    let first_boot = last_seen.boot_id.clone();
    assert!(
        status(&last_seen).spill_bytes > 0,
        "{:?}",
        status(&last_seen)
    );
    // Reports on their way from the main loop to the spill thread are not on disk yet, and the
    // head file is rewritten at most once a second: kill only when the disk says the restart
    // will resume at the first unacknowledged report and has every report seen so far.
    let first_unacked = (first_boot.clone(), at_kill.last_acked_seq + 1);
    let newest_seen = (first_boot.clone(), last_seen.seq);
    wait_for(
        "the spill on disk to run from the first unacknowledged report to the last one seen",
        Duration::from_secs(10),
        || {
            let on_disk = spilled_from_head(&state.path().join("spill"));
            (on_disk.first() == Some(&first_unacked) && on_disk.contains(&newest_seen))
                .then_some(())
        },
    );
    first.proc.signal(Signal::SIGKILL);
    first
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("killed");
    drop(first);

    // The collector is back and watched before the new process starts: a watch opened after
    // the agent had delivered would begin with the node's current state, not its first
    // appearance. Delivery from the spill is proved below: the earlier boot's reports arrive,
    // and only a process that read them from disk could send them.
    let collector = Collector::start_on(&addr, "");
    let mut cc = collector.client().await;
    let mut events = cc
        .watch_fleet(pb::WatchFleetRequest {})
        .await
        .expect("watch fleet")
        .into_inner();
    let second = Agent::with_config(&config, &["--node", "d-spill", "--collector", &url]);
    let second_boot = second.snapshot().await.boot_id.clone();
    assert_ne!(second_boot, first_boot);
    let n = wait_drained(&collector, &second, "d-spill", 3, Duration::from_secs(20)).await;
    let sum = n.summary.clone().expect("summary");
    assert_eq!(
        sum.boot_id, second_boot,
        "the new boot is current, not the backlog"
    );
    assert_eq!(sum.missing_total, 0, "{sum:?} {:?}", ranges(&n));
    assert_eq!(sum.duplicates_total, 0, "{sum:?}");

    // The node first appeared with the earlier boot, at its first unacknowledged report.
    let appeared = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("an event")
        .expect("stream")
        .and_then(|e| e.node)
        .expect("a node");
    assert_eq!(appeared.boot_id, first_boot);
    assert_eq!(appeared.last_seq, at_kill.last_acked_seq + 1);
    // Everything applied that is not the new boot's (seq 1..=last, no gap) is the earlier boot's,
    // a contiguous run from there: it reaches at least the last seq seen before the kill.
    let applied = sum.reports_total - sum.duplicates_total;
    let earlier = applied - sum.last_seq;
    assert!(
        at_kill.last_acked_seq + earlier >= last_seen.seq,
        "earlier boot delivered through seq {} of at least {}",
        at_kill.last_acked_seq + earlier,
        last_seen.seq
    );
    eprintln!(
        "agent restart: {earlier} reports of the earlier boot delivered from the spill (seq {}..={})",
        at_kill.last_acked_seq + 1,
        at_kill.last_acked_seq + earlier
    );
}

#[tokio::test]
async fn a_torn_spill_file_is_cut_back_with_a_warning_and_the_agent_runs() {
    let state = tempfile::tempdir().expect("tempdir");
    // Nothing listens here: every report stays in the spill.
    let nowhere = format!("http://127.0.0.1:{}", health_e2e::free_port());
    let config = spill_config(state.path(), 5);
    let mut first = Agent::with_config(&config, &["--node", "d-torn", "--collector", &nowhere]);
    eventually("reports spilled", Duration::from_secs(10), || async {
        (first.status().await.reports_buffered >= 20).then_some(())
    })
    .await;
    first.proc.signal(Signal::SIGTERM);
    first
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("stopped");
    drop(first);

    // Cut the newest segment in the middle of its last record.
    let dir = state.path().join("spill");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("spill dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    segments.sort();
    let newest = segments.last().expect("a segment with records");
    let len = std::fs::metadata(newest).expect("segment").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .expect("open segment");
    file.set_len(len - 7).expect("truncate");
    drop(file);

    let log = state.path().join("agent.log");
    let second = Agent::with_config_logged(
        &config,
        &["--node", "d-torn", "--collector", &nowhere],
        &log,
    );
    let s = second.snapshot().await;
    assert!(
        status(&s).reports_buffered >= 19,
        "the records before the torn one are kept: {:?}",
        status(&s)
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("torn or corrupt record") && text.contains(&newest.display().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn an_agent_fails_over_to_the_second_collector_when_the_first_dies() {
    let a = Collector::start("");
    let b = Collector::start("");
    // `collectors` is a top-level key: it goes before the tables.
    let config = format!(
        "collectors = [\"{}\", \"{}\"]\n{}",
        a.url(),
        b.url(),
        streaming_config("ack_timeout = \"5s\"\n")
    );
    let agent = Agent::with_config(&config, &["--node", "d-failover"]);
    let streaming = agent.wait_acked(5).await;
    assert_eq!(streaming.collector, a.url());
    assert!(
        b.fleet_node("d-failover").await.is_none(),
        "B idle while A works"
    );

    let a_url = a.url();
    a.proc.signal(Signal::SIGKILL);
    drop(a);
    let at_kill = agent.snapshot().await;
    let t0 = Instant::now();
    let n = eventually("reports at B", Duration::from_secs(10), || async {
        let n = b.fleet_node("d-failover").await?;
        (n.summary.as_ref()?.last_seq > at_kill.seq).then_some(n)
    })
    .await;
    eprintln!(
        "failover: reports newer than the kill at B after {:?}",
        t0.elapsed()
    );
    let s = n.summary.expect("summary");
    assert_eq!(s.missing_total, 0, "{s:?}");
    assert_eq!(s.duplicates_total, 0, "{s:?}");
    let out = agent.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains(&format!("collector {}", b.url())) && text.contains("uplink connected"),
        "{text}"
    );
    assert!(!text.contains(&a_url), "{text}");
}
