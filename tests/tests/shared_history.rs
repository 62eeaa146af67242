//! Collectors sharing one history in PostgreSQL (issue 16), end to end with the real binaries
//! and a real throwaway PostgreSQL server:
//!
//! - failover: an agent moves from collector A (SIGKILLed) to collector B in the middle of an
//!   incident; the shared database holds one incident, each alert transition once, the
//!   condition with its start and end, and any collector (A restarted) answers for it;
//! - outage: PostgreSQL stopped for 30 s under load; the collector keeps ingesting and
//!   alerting, says the history is away (metric and its own alert), and once the database is
//!   back the queue drains and offered = written + dropped + lost, with the transitions made
//!   during the outage in the database.
//!
//! Why end to end: deduplication across collectors and the writer's outage behaviour only
//! show with two real processes on one real database, and with a real server going away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use health_e2e::postgres::PgServer;
use health_e2e::{ctl, free_port, output_text, scrape_metrics, Agent, Collector, QUICK_RECONNECT};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Bound of every wait on the fleet: generous for a loaded 2-core CI machine, and each wait
/// ends as soon as what it waits for holds.
const LIMIT: Duration = Duration::from_secs(30);
/// How long PostgreSQL stays down in the outage test (the figure).
const OUTAGE: Duration = Duration::from_secs(30);
const DEVICE: &str = "loihi-0";

/// Polls `check` every 250 ms (agent-ctl is a process per call) until it returns `Ok`;
/// panics after `limit` with what it waited for and the last thing it saw.
fn poll<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let t0 = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) => assert!(
                t0.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; last seen: {seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `agent-ctl --collector ADDR --json ARGS`: its stdout as one JSON value, or every line as
/// one (ListAlerts prints one object a line); `Err` with what it printed if it failed.
fn try_ctl(addr: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let mut all = vec!["--collector", addr, "--json"];
    all.extend(args);
    let out = ctl(&all);
    if !out.status.success() {
        return Err(format!("agent-ctl {all:?}: {}", output_text(&out)));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect()
}

/// Like [`try_ctl`] for a command that prints one JSON value; panics if it fails.
fn ctl_json(addr: &str, args: &[&str]) -> Value {
    let mut values = try_ctl(addr, args).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(values.len(), 1, "one JSON value from {args:?}: {values:?}");
    values.remove(0)
}

fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// The collector's active alerts (ListAlerts), as agent-ctl prints them.
fn active_alerts(addr: &str) -> Result<Vec<Value>, String> {
    try_ctl(addr, &["alerts", "--once"])
}

fn firing(alerts: &[Value], fingerprint: &str) -> bool {
    alerts
        .iter()
        .any(|a| a["fingerprint"] == fingerprint && a["status"] == "FIRING")
}

/// A node's history entries, newest first (every kind).
fn history(addr: &str, node: &str) -> Vec<Value> {
    array(&ctl_json(
        addr,
        &["history", "--node", node, "--limit", "10000"],
    ))
}

/// How many of a node's history alert entries for `fingerprint` have each status.
fn alert_statuses(entries: &[Value], fingerprint: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e["kind"] == "alert" && e["id"] == fingerprint)
    {
        *counts
            .entry(e["status"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// The value of an unlabelled sample in a `/metrics` scrape.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{name} is not in the scrape:\n{text}"))
}

/// The history counters of one scrape.
#[derive(Debug, Clone, Copy)]
struct HistoryCounts {
    up: f64,
    offered: f64,
    written: f64,
    dropped: f64,
    lost: f64,
    queued: f64,
}

fn history_counts(metrics_addr: &str) -> HistoryCounts {
    let text = scrape_metrics(metrics_addr);
    let m = |name: &str| metric(&text, &format!("health_collector_history_{name}"));
    HistoryCounts {
        up: m("up"),
        offered: m("offered_total"),
        written: m("written_total"),
        dropped: m("dropped_total"),
        lost: m("lost_total"),
        queued: m("queued"),
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A collector's config on the shared database: its name, `/metrics` address, the alert
/// `for`s the tests want (the hang fires after 1 s, so it is PENDING first; the load
/// generator's toggles fire at once, as its accounting expects) and a short incident close.
fn collector_toml(pg: &PgServer, db_url: &str, name: &str, metrics: &str) -> String {
    format!(
        "metrics_listen = \"{metrics}\"\n\
         history_url = \"{db_url}?sslmode=disable\"\n\
         history_password_file = \"{}\"\n\
         collector_name = \"{name}\"\n\
         [alerts]\n\
         for = {{ DEVICE_UNRESPONSIVE = \"1s\", THERMAL_WARNING = \"0s\" }}\n\
         [incidents]\n\
         close_after = \"2s\"\n",
        pg.password_file().display()
    )
}

/// One simulated Loihi board reporting every 200 ms, host thresholds this machine cannot
/// reach (an incident is per node: nothing else on it may fire) and quick reconnects; the ack
/// timeout is long enough that a busy machine does not fail over by itself (the kill does).
/// `collectors` is a top-level key: before the tables.
fn agent_toml(collectors: &[String]) -> String {
    let list: Vec<String> = collectors.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "collectors = [{}]\nreport_interval = \"200ms\"\n\n\
         [host]\ndisk_warning_ratio = 0.9998\ndisk_critical_ratio = 0.9999\n\
         memory_warning_ratio = 0.9998\nmemory_critical_ratio = 0.9999\n\
         load_warning_per_cpu = 1000.0\n\n\
         [uplink]\n{QUICK_RECONNECT}ack_timeout = \"5s\"\n\n\
         [[device]]\nid = \"{DEVICE}\"\nkind = \"loihi2\"\nbackend = \"sim\"\n\
         poll_interval = \"200ms\"\ndeadline = \"500ms\"\n",
        list.join(", ")
    )
}

/// Starts an agent as `node` and pauses its remediation: the test plays the operator, and a
/// policy's reset would end the hang on its own schedule.
fn start_agent(node: &str, collectors: &[String]) -> Agent {
    let agent = Agent::with_config(&agent_toml(collectors), &["--node", node]);
    agent.hands_off();
    agent
}

fn holder(pg: &PgServer, db: &str, node: &str) -> String {
    pg.psql(
        db,
        &format!("SELECT collector FROM holders WHERE node = '{node}'"),
    )
    .unwrap()
    .trim()
    .to_string()
}

/// Transitions of `alert_events` stored twice (see the query). Empty when none is.
fn duplicate_transitions(pg: &PgServer, db: &str) -> String {
    // A transition stored twice shows as the same status and severity twice in a row within
    // one condition spell (fingerprint, since). The same status again after another one is a
    // new episode (health-loadgen's toggling alerts keep their since), not a duplicate.
    pg.psql(
        db,
        "SELECT fingerprint, status, severity, since_ms FROM ( \
           SELECT fingerprint, status, severity, since_ms, \
             lag(status) OVER spell AS prev_status, lag(severity) OVER spell AS prev_severity \
           FROM alert_events WHERE since_ms > 0 \
           WINDOW spell AS (PARTITION BY fingerprint, since_ms ORDER BY id)) AS t \
         WHERE status = prev_status AND severity = prev_severity",
    )
    .unwrap()
}

#[test]
fn an_incident_that_moves_between_collectors_is_one_incident_with_each_event_once() {
    let pg = PgServer::start().unwrap();
    let db = "shared";
    let url = pg.create_database(db).unwrap();
    let (a_addr, a_metrics) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let b_metrics = format!("127.0.0.1:{}", free_port());
    let a_toml = collector_toml(&pg, &url, "a", &a_metrics);
    let a = Collector::start_on(&a_addr, &a_toml);
    let b = Collector::start(&collector_toml(&pg, &url, "b", &b_metrics));
    let node = "shared-failover";
    let fingerprint = format!("{node}/{DEVICE}/DEVICE_UNRESPONSIVE");
    let agent = start_agent(node, &[a.url(), b.url()]);

    // A holds the node (it says so in the shared database), then the board hangs and A's
    // alert fires and is written.
    poll("A to hold the node in holders", LIMIT, || {
        let h = holder(&pg, db, node);
        (h == "a").then_some(()).ok_or(h)
    });
    agent.ctl_ok(&["inject-fault", DEVICE, "hang"]);
    poll("A's FIRING in the shared history", LIMIT, || {
        let seen = alert_statuses(&history(&a_addr, node), &fingerprint);
        seen.contains_key("FIRING")
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });

    // A dies mid-incident; the agent fails over to B, whose alert fires from the same
    // condition (the agent reports its `since`).
    a.proc.signal(Signal::SIGKILL);
    drop(a);
    poll("B to hold the node", LIMIT, || {
        let h = holder(&pg, db, node);
        (h == "b").then_some(()).ok_or(h)
    });
    poll("the alert firing on B", LIMIT, || {
        let alerts = active_alerts(&b.addr)?;
        firing(&alerts, &fingerprint)
            .then_some(())
            .ok_or(format!("{alerts:?}"))
    });

    // The board comes back: the alert resolves on B, and the incident closes.
    agent.ctl_ok(&["inject-fault", DEVICE, "clear"]);
    let incident_id = poll("one closed incident on B", LIMIT, || {
        let list = array(&ctl_json(&b.addr, &["incidents", "--node", node]));
        match list.as_slice() {
            [one] if one["open"] == false => Ok(one["id"].as_str().unwrap().to_string()),
            _ => Err(format!("{list:?}")),
        }
    });
    assert!(
        !firing(&active_alerts(&b.addr).unwrap(), &fingerprint),
        "resolved on B"
    );
    poll("B's history writer to drain", LIMIT, || {
        let c = history_counts(&b_metrics);
        (c.up == 1.0 && c.queued == 0.0)
            .then_some(())
            .ok_or(format!("{c:?}"))
    });

    check_one_incident(&pg, db, &b.addr, node, &fingerprint, &incident_id);

    // A restarted (same config, same address): it has never seen the node, and answers for
    // it all the same, from the shared database.
    let from_b = ctl_json(&b.addr, &["incident", &incident_id]);
    let a = Collector::start_on(&a_addr, &a_toml);
    let listed = array(&ctl_json(&a.addr, &["incidents", "--node", node]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], incident_id.as_str());
    let from_a = ctl_json(&a.addr, &["incident", &incident_id]);
    assert_eq!(from_a, from_b, "any collector gives the same incident");
    assert_eq!(holder(&pg, db, node), "b", "the node stays with B");
}

/// The incident `id` as B tells it, and the rows under it: one incident, each transition of
/// the alert once, the condition with its start and its end.
fn check_one_incident(
    pg: &PgServer,
    db: &str,
    addr: &str,
    node: &str,
    fingerprint: &str,
    id: &str,
) {
    let all = array(&ctl_json(addr, &["incidents"]));
    let ours: Vec<&Value> = all.iter().filter(|i| i["node"] == node).collect();
    assert_eq!(ours.len(), 1, "one incident for the node: {all:?}");

    let incident = ctl_json(addr, &["incident", id]);
    let timeline = array(&incident["timeline"]);
    let alert_what = format!("alert DeviceUnresponsive on {DEVICE}");
    let outcomes = |kind: &str, what: &str| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for t in timeline
            .iter()
            .filter(|t| t["kind"] == kind && t["what"].as_str().unwrap_or("").starts_with(what))
        {
            *counts
                .entry(t["outcome"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
        counts
    };
    let alert = outcomes("alert", &alert_what);
    assert_eq!(alert.get("FIRING"), Some(&1), "{alert:?} in {incident:#}");
    assert_eq!(alert.get("RESOLVED"), Some(&1), "{alert:?} in {incident:#}");
    assert!(
        alert.get("PENDING").is_none_or(|n| *n == 1),
        "{alert:?} in {incident:#}"
    );
    let condition = outcomes("condition", &format!("DEVICE_UNRESPONSIVE on {DEVICE}"));
    assert_eq!(
        condition,
        BTreeMap::from([("began".to_string(), 1), ("ended".to_string(), 1)]),
        "the condition's start and end, once each: {incident:#}"
    );
    assert!(incident["first_condition_at"].is_string(), "{incident:#}");
    assert!(incident["resolved_at"].is_string(), "{incident:#}");
    assert_eq!(incident["open"], false);

    // The history behind it: the same, and the condition is one spell that ended.
    let entries = history(addr, node);
    let statuses = alert_statuses(&entries, fingerprint);
    assert_eq!(statuses.get("FIRING"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("RESOLVED"), Some(&1), "{statuses:?}");
    assert!(
        statuses.get("PENDING").is_none_or(|n| *n == 1),
        "{statuses:?}"
    );
    let spells: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "condition" && e["name"] == "DEVICE_UNRESPONSIVE")
        .collect();
    assert_eq!(spells.len(), 1, "{spells:?}");
    assert!(spells[0]["ended_at"].is_string(), "{spells:?}");
    assert_eq!(spells[0]["at"], incident["first_condition_at"]);

    // And in the database itself: no transition stored twice, anywhere; ours keyed by the
    // condition's real since (the episode check only covers a known since).
    assert_eq!(duplicate_transitions(pg, db), "", "duplicate alert_events");
    let keyed = pg
        .psql(
            db,
            &format!(
                "SELECT count(*), min(since_ms) > 0 FROM alert_events \
                 WHERE fingerprint = '{fingerprint}'"
            ),
        )
        .unwrap();
    assert!(keyed.trim().ends_with("|t"), "{keyed}");
}

/// Runs health-loadgen against `addr` for `seconds` on its own thread; joins to its JSON
/// result (it exits non-zero when its accounting does not add up).
fn loadgen(addr: &str, seconds: u64) -> std::thread::JoinHandle<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_health-loadgen"));
    cmd.args([
        "--collector",
        addr,
        "--agents",
        "20",
        "--devices",
        "4",
        "--duration",
        &seconds.to_string(),
        "--warmup",
        "1",
        "--toggle-fraction",
        "0.25",
        "--node-prefix",
        "lgoutage",
        "--json",
    ])
    .stdin(Stdio::null());
    std::thread::spawn(move || {
        let out = cmd.output().expect("run health-loadgen");
        assert!(
            out.status.success(),
            "health-loadgen failed ({}): {}",
            out.status,
            output_text(&out)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
    })
}

/// The node's reports total at the collector.
fn reports_total(addr: &str, node: &str) -> u64 {
    array(&ctl_json(addr, &["nodes"]))
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["reports_total"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_database_down_for_30_s_under_load_stops_nothing_and_the_counts_add_up() {
    let mut pg = PgServer::start().unwrap();
    let db = "outage";
    let url = pg.create_database(db).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let collector = Collector::start(&collector_toml(&pg, &url, "solo", &metrics));
    let addr = collector.addr.clone();
    let node = "outage-node";
    let fingerprint = format!("{node}/{DEVICE}/DEVICE_UNRESPONSIVE");
    let own_alert = "collector/solo/history/HISTORY_UNAVAILABLE";
    let agent = start_agent(node, &[collector.url()]);
    poll("the history written (the node in holders)", LIMIT, || {
        let h = holder(&pg, db, node);
        (h == "solo").then_some(()).ok_or(h)
    });
    assert_eq!(history_counts(&metrics).up, 1.0);

    // Load across the whole outage: 20 agents x 4 boards at 1 Hz, a quarter toggling an
    // alert on every report, so records keep coming while the database is away.
    let load = loadgen(&addr, OUTAGE.as_secs() + 12);
    poll("the load generator's nodes", LIMIT, || {
        let n = array(&ctl_json(&addr, &["nodes"]))
            .iter()
            .filter(|n| n["node"].as_str().unwrap_or("").starts_with("lgoutage"))
            .count();
        (n == 20).then_some(()).ok_or(format!("{n} nodes"))
    });

    pg.stop().unwrap();
    let down_at = Instant::now();
    let down_ms = now_ms();
    let before = history_counts(&metrics);
    let reports_at_stop = reports_total(&addr, node);

    fault_while_down(&agent, &addr, &metrics, &fingerprint, own_alert);

    // Reports keep being applied for the rest of the outage: the node's count goes on
    // rising (checked each second until the outage has lasted its 30 s).
    let mut last = reports_at_stop;
    while down_at.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(1));
        let now = reports_total(&addr, node);
        assert!(now >= last, "reports_total went back: {last} -> {now}");
        last = now;
    }
    assert!(
        last > reports_at_stop + 20,
        "reports applied during the outage: {reports_at_stop} -> {last}"
    );
    let during = history_counts(&metrics);
    assert_eq!(during.up, 0.0, "{during:?}");
    assert!(
        during.offered > before.offered,
        "records offered while down: {before:?} -> {during:?}"
    );

    pg.restart().unwrap();
    let up_ms = now_ms();
    poll(
        "history_up 1 and HISTORY_UNAVAILABLE resolved",
        LIMIT,
        || {
            let (c, alerts) = (history_counts(&metrics), active_alerts(&addr)?);
            (c.up == 1.0 && !alerts.iter().any(|a| a["fingerprint"] == own_alert))
                .then_some(())
                .ok_or(format!("{c:?} {alerts:?}"))
        },
    );
    let results = load.join().expect("the load generator's thread");
    assert!(
        results["unaccounted"].as_array().is_some_and(Vec::is_empty),
        "every report acknowledged and every alert delivered through the outage: {results}"
    );
    assert_eq!(results["acked"], results["sent"], "{results}");
    let drained = poll("the queue drained", LIMIT, || {
        let c = history_counts(&metrics);
        (c.queued == 0.0).then_some(c).ok_or(format!("{c:?}"))
    });
    eprintln!("history after the outage: {drained:?}");
    assert_eq!(
        drained.offered,
        drained.written + drained.dropped + drained.lost,
        "{drained:?}"
    );
    assert_eq!(
        drained.lost, 0.0,
        "the batch is kept through an outage: {drained:?}"
    );

    check_outage_writes(
        &pg,
        db,
        &addr,
        node,
        &fingerprint,
        (down_ms, up_ms),
        drained,
    );
}

/// While the database is down: the hang still raises its alert, which fires and resolves;
/// the collector says its history is away (metric and its own alert, `own_alert`).
fn fault_while_down(agent: &Agent, addr: &str, metrics: &str, fingerprint: &str, own_alert: &str) {
    agent.ctl_ok(&["inject-fault", DEVICE, "hang"]);
    poll("the alert firing with the database down", LIMIT, || {
        let alerts = active_alerts(addr)?;
        firing(&alerts, fingerprint)
            .then_some(())
            .ok_or(format!("{alerts:?}"))
    });
    poll("history_up 0 and HISTORY_UNAVAILABLE firing", LIMIT, || {
        let (c, alerts) = (history_counts(metrics), active_alerts(addr)?);
        (c.up == 0.0 && firing(&alerts, own_alert))
            .then_some(())
            .ok_or(format!("{c:?} {alerts:?}"))
    });
    agent.ctl_ok(&["inject-fault", DEVICE, "clear"]);
    poll("the alert resolved with the database down", LIMIT, || {
        let alerts = active_alerts(addr)?;
        (!alerts.iter().any(|a| a["fingerprint"] == fingerprint))
            .then_some(())
            .ok_or(format!("{alerts:?}"))
    });
}

/// What was made during the outage (`window`, wall-clock ms) is in the database, unless the
/// collector counted records as dropped.
fn check_outage_writes(
    pg: &PgServer,
    db: &str,
    addr: &str,
    node: &str,
    fingerprint: &str,
    window: (i64, i64),
    counts: HistoryCounts,
) {
    if counts.dropped > 0.0 {
        eprintln!(
            "{} records dropped: the outage's writes may be incomplete",
            counts.dropped
        );
        return;
    }
    let statuses = alert_statuses(&history(addr, node), fingerprint);
    assert_eq!(statuses.get("FIRING"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("RESOLVED"), Some(&1), "{statuses:?}");
    let (from, to) = window;
    let made_while_down = pg
        .psql(
            db,
            &format!(
                "SELECT status FROM alert_events WHERE fingerprint = '{fingerprint}' \
                 AND at_ms BETWEEN {from} AND {to} ORDER BY at_ms, id"
            ),
        )
        .unwrap();
    let made: Vec<&str> = made_while_down.lines().collect();
    assert!(
        made.ends_with(&["FIRING", "RESOLVED"]) && made.len() <= 3,
        "the transitions made while the database was down: {made:?}"
    );
    let spell = pg
        .psql(
            db,
            &format!(
                "SELECT count(*), count(ended_ms) FROM conditions WHERE node = '{node}' \
                 AND code = 'DEVICE_UNRESPONSIVE' AND since_ms BETWEEN {from} AND {to}"
            ),
        )
        .unwrap();
    assert_eq!(spell.trim(), "1|1", "the condition's start and end");
    let load_rows = pg
        .psql(
            db,
            &format!(
                "SELECT count(*) FROM alert_events WHERE node LIKE 'lgoutage%' \
                 AND at_ms BETWEEN {from} AND {to}"
            ),
        )
        .unwrap();
    let load_rows: u64 = load_rows.trim().parse().unwrap();
    assert!(load_rows > 0, "the load's transitions during the outage");
    assert_eq!(duplicate_transitions(pg, db), "", "duplicate alert_events");
}
