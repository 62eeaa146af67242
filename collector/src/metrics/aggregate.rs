//! The fleet aggregates of the default `/metrics` scrape: counts over every node held, labelled
//! only by values from fixed sets (health states, device kinds, condition codes this build
//! knows, severities, priorities), so the page is the same size for ten nodes or ten thousand.
//!
//! Counts of what is held now are gauges. The ingest counters add the counters of forgotten
//! nodes (`fleet::Scraped::forgotten`), so they only go up and `rate()` over them is right.

use std::collections::BTreeMap;
use std::time::SystemTime;

use health_metrics::node;
use health_metrics::Exposition;
use health_proto::v1::{self as pb, AlertEvent};

use crate::fleet::Scraped;

const STATES: [&str; 4] = ["ok", "unknown", "warning", "critical"];
const KINDS: [&str; 5] = [
    "loihi2",
    "spinnaker",
    "photonic",
    "analog_crossbar",
    "unknown",
];
const PRIORITIES: [&str; 4] = ["P0", "P1", "P2", "P3"];

/// Upper bounds of the report-age histogram, seconds: around the default report interval
/// (1 s), `stale_after` (a few report intervals) and `forget_after` (hours).
const AGE_BUCKETS: [f64; 10] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0,
];

/// A condition code from a newer agent that this build cannot name: counted together, so an
/// agent cannot add series to the default scrape by inventing codes.
const OTHER_CODE: &str = "OTHER";

/// Nodes by state, staleness and report age; devices by kind and state; conditions by code and
/// severity; the fleet-wide ingest counters.
pub fn render_fleet(out: &mut Exposition, scraped: &Scraped, now: SystemTime) {
    let mut nodes_by_state = [0u64; STATES.len()];
    let mut stale = 0u64;
    let mut ages = [0u64; AGE_BUCKETS.len()];
    let (mut age_sum, mut aged) = (0.0, 0u64);
    let mut devices = [[0u64; STATES.len()]; KINDS.len()];
    let mut conditions: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    let mut totals = scraped.forgotten;
    for (summary, snapshot) in &scraped.nodes {
        nodes_by_state[state_index(summary.state)] += 1;
        stale += u64::from(summary.stale);
        if let Some(age) = summary.last_seen.as_ref().map(|t| age_seconds(t, now)) {
            if let Some(i) = AGE_BUCKETS.iter().position(|&bound| age <= bound) {
                ages[i] += 1;
            }
            age_sum += age;
            aged += 1;
        }
        totals.reports = totals.reports.saturating_add(summary.reports_total);
        totals.duplicates = totals.duplicates.saturating_add(summary.duplicates_total);
        totals.missing = totals.missing.saturating_add(summary.missing_total);
        let host_conditions = snapshot.host.iter().flat_map(|h| &h.conditions);
        for d in &snapshot.devices {
            let kind = kind_index(d.identity.as_ref().map_or(0, |id| id.kind));
            // A stale node's devices are UNKNOWN: their states are old, as on the node series.
            let state = if summary.stale { 0 } else { d.state };
            devices[kind][state_index(state)] += 1;
        }
        let device_conditions = snapshot.devices.iter().flat_map(|d| &d.conditions);
        for c in host_conditions.chain(device_conditions) {
            let code = pb::ConditionCode::try_from(c.code).map_or(OTHER_CODE, |c| c.as_str_name());
            *conditions
                .entry((code, node::severity_name(c.severity)))
                .or_insert(0) += 1;
        }
    }

    let mut by_state = out.gauge(
        "health_collector_nodes_by_state",
        "Nodes held by health state, as the collector sees them (a stale node is unknown).",
    );
    for (state, count) in STATES.iter().zip(nodes_by_state) {
        by_state.sample(&[("state", state)], count as f64);
    }
    out.gauge(
        "health_collector_nodes_stale",
        "Nodes held that have sent no report for stale_after.",
    )
    .sample(&[], stale as f64);
    let mut cumulative = 0;
    let buckets: Vec<(f64, u64)> = AGE_BUCKETS
        .iter()
        .zip(ages)
        .map(|(&bound, n)| {
            cumulative += n;
            (bound, cumulative)
        })
        .collect();
    out.histogram(
        "health_collector_node_report_age_seconds",
        "Time since each node held last reported, seconds, at the scrape (wall clock).",
    )
    .histogram(&[], &buckets, age_sum, aged);

    let mut by_kind = out.gauge(
        "health_collector_devices",
        "Devices in the latest reports of the nodes held, by kind and health state (devices of \
         a stale node are unknown).",
    );
    for (kind, counts) in KINDS.iter().zip(devices) {
        for (state, count) in STATES.iter().zip(counts) {
            by_kind.sample(&[("kind", kind), ("state", state)], count as f64);
        }
    }
    let mut by_code = out.gauge(
        "health_collector_conditions",
        "Conditions active in the latest reports of the nodes held, by code and severity \
         (codes this collector does not know are OTHER).",
    );
    for ((code, severity), count) in &conditions {
        by_code.sample(&[("code", code), ("severity", severity)], *count as f64);
    }
    render_ingest(out, &totals);
}

fn render_ingest(out: &mut Exposition, totals: &crate::fleet::IngestTotals) {
    out.counter(
        "health_collector_reports_total",
        "Reports received from every node, duplicates included (forgotten nodes' too).",
    )
    .sample(&[], totals.reports as f64);
    out.counter(
        "health_collector_duplicate_reports_total",
        "Reports whose seq was already applied (dropped), over every node.",
    )
    .sample(&[], totals.duplicates as f64);
    out.counter(
        "health_collector_missing_reports_total",
        "Report seqs never received (gaps in a node's sequence), over every node.",
    )
    .sample(&[], totals.missing as f64);
    out.counter(
        "health_collector_nodes_forgotten_total",
        "Nodes removed for having sent no report for forget_after.",
    )
    .sample(&[], totals.nodes as f64);
}

/// Alerts firing, by code and severity (as before) and by priority.
pub fn render_alerts(out: &mut Exposition, firing: &[AlertEvent]) {
    let mut by_code: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
    let mut by_priority = [0u64; PRIORITIES.len() + 1];
    // The watch set also holds alerts suppressed for maintenance: those do not fire.
    let firing_status = pb::AlertStatus::Firing as i32;
    for alert in firing
        .iter()
        .filter_map(|event| event.alert.as_ref())
        .filter(|a| a.status == firing_status)
    {
        *by_code
            .entry((alert.name.as_str(), node::severity_name(alert.severity)))
            .or_insert(0) += 1;
        let p = PRIORITIES
            .iter()
            .position(|p| *p == alert.priority)
            .unwrap_or(PRIORITIES.len());
        by_priority[p] += 1;
    }
    let mut alerts = out.gauge(
        "health_collector_alerts_firing",
        "Alerts firing in the collector's own evaluation (WatchAlerts), by code and severity.",
    );
    for ((code, severity), count) in &by_code {
        alerts.sample(&[("code", code), ("severity", severity)], *count as f64);
    }
    let mut alerts = out.gauge(
        "health_collector_alerts_firing_by_priority",
        "Alerts firing in the collector's own evaluation, by priority (P0 most urgent; other: \
         none from the priority map).",
    );
    for (priority, count) in PRIORITIES.iter().chain(&["other"]).zip(by_priority) {
        alerts.sample(&[("priority", priority)], count as f64);
    }
}

fn state_index(state: i32) -> usize {
    let name = node::state_name(state);
    STATES.iter().position(|s| *s == name).unwrap_or(1)
}

fn kind_index(kind: i32) -> usize {
    let name = node::kind_name(kind);
    KINDS
        .iter()
        .position(|k| *k == name)
        .unwrap_or(KINDS.len() - 1)
}

fn age_seconds(t: &prost_types::Timestamp, now: SystemTime) -> f64 {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // A clock that stepped back reads as just reported, not as a negative age.
    (now - node::seconds(t)).max(0.0)
}
