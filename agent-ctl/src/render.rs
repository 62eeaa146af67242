//! How agent-ctl prints for people: aligned tables and text (`--json` for scripts is
//! `health_view::json`). Enum values are printed without their proto prefix (`OK`, not
//! `HEALTH_STATE_OK`) in both.

use std::time::SystemTime;

use health_proto::v1 as pb;
use prost_types::Timestamp;

pub use health_view::names::{activity, alert_status, kind, outcome, severity, state, time};

/// `CRITICAL THERMAL_CRITICAL: 91.0 degC`: a condition without its subject.
/// The codes of the conditions about `subject`, comma-separated, or `-`.
pub(crate) fn codes_about(subject: &str, conditions: &[pb::Condition]) -> String {
    let c: Vec<_> = conditions
        .iter()
        .filter(|c| c.subject == subject)
        .map(|c| c.code().as_str_name())
        .collect();
    if c.is_empty() {
        "-".to_string()
    } else {
        c.join(",")
    }
}

pub fn condition_line(c: &pb::Condition) -> String {
    format!(
        "{} {}: {}",
        severity(c.severity()),
        c.code().as_str_name(),
        c.message
    )
}

/// Seconds since a timestamp, for "age" columns.
fn age(t: &Option<Timestamp>) -> String {
    let Some(t) = t else { return "-".to_string() };
    match SystemTime::try_from(*t)
        .ok()
        .and_then(|st| SystemTime::now().duration_since(st).ok())
    {
        Some(d) => format!("{:.1}s", d.as_secs_f64()),
        None => "0.0s".to_string(),
    }
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn readings_of(d: &pb::Device, q: pb::Quantity) -> impl Iterator<Item = f64> + '_ {
    d.readings
        .iter()
        .filter(move |r| r.quantity() == q)
        .map(|r| r.value)
}

fn max_temp(d: &pb::Device) -> String {
    readings_of(d, pb::Quantity::TemperatureCelsius)
        .reduce(f64::max)
        .map_or("-".into(), |v| format!("{v:.1}"))
}

fn power(d: &pb::Device) -> String {
    let mut it = readings_of(d, pb::Quantity::PowerWatts).peekable();
    if it.peek().is_none() {
        return "-".into();
    }
    format!("{:.2}", it.sum::<f64>())
}

fn condition_codes(cs: &[pb::Condition]) -> String {
    if cs.is_empty() {
        return "-".into();
    }
    cs.iter()
        .map(|c| c.code().as_str_name().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn id(d: &pb::Device) -> (&str, pb::DeviceKind) {
    d.identity
        .as_ref()
        .map_or(("?", pb::DeviceKind::Unspecified), |i| {
            (i.id.as_str(), i.kind())
        })
}

pub fn devices_table(devices: &[pb::Device]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            let (id, k) = id(d);
            vec![
                id.to_string(),
                kind(k),
                state(d.state()),
                activity(d.activity()),
                max_temp(d),
                power(d),
                age(&d.last_read_at),
                condition_codes(&d.conditions),
            ]
        })
        .collect();
    table(
        &[
            "DEVICE",
            "KIND",
            "STATE",
            "ACTIVITY",
            "TEMP_C",
            "POWER_W",
            "READ_AGO",
            "CONDITIONS",
        ],
        &rows,
    )
}

pub fn node_text(n: &pb::NodeSnapshot) -> String {
    let mut out = format!(
        "node {}  state {}  boot {}  seq {}  at {}\n",
        n.node,
        state(n.state()),
        n.boot_id,
        n.seq,
        time(&n.taken_at)
    );
    match &n.agent {
        Some(a) if a.uplink_configured => out.push_str(&format!(
            "uplink {}  acked seq {}  buffered {}  dropped {}  reconnects {}\n",
            if a.uplink_connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            a.last_acked_seq,
            a.reports_buffered,
            a.reports_dropped_total,
            a.reconnects_total
        )),
        _ => out.push_str("uplink not configured (no collector)\n"),
    }
    if let Some(a) = n.agent.as_ref().filter(|a| a.uplink_configured) {
        out.push_str(&uplink_detail_text(a));
    }
    if let Some(m) = &n.maintenance {
        out.push_str(&crate::maintenance::line("node", m));
    }
    for d in &n.devices {
        if let (Some(m), Some(i)) = (&d.maintenance, &d.identity) {
            out.push_str(&crate::maintenance::line(&i.id, m));
        }
    }
    if let Some(h) = &n.host {
        let gib = (1u64 << 30) as f64;
        out.push_str(&format!(
            "host {}  cpu {:.0} % of {}  load {:.2} {:.2} {:.2}  memory {:.1}/{:.1} GiB available\n",
            state(h.state()),
            h.cpu_utilization_ratio * 100.0,
            h.cpu_count,
            h.load1,
            h.load5,
            h.load15,
            h.memory_available_bytes as f64 / gib,
            h.memory_total_bytes as f64 / gib,
        ));
        for c in &h.conditions {
            out.push_str(&format!("  {}\n", condition_line(c)));
        }
        if !h.processes.is_empty() {
            out.push_str(&format!(
                "processes: {} watched (agent-ctl processes)\n",
                h.processes.len()
            ));
        }
        out.push_str(&format!(
            "iowait {:.0} %  OOM kills {} since boot\n",
            h.iowait_ratio * 100.0,
            h.oom_kills_total
        ));
        for l in &h.logs {
            out.push_str(&log_rule_line(l));
        }
    }
    out.push('\n');
    out.push_str(&devices_table(&n.devices));
    let conditions: Vec<_> = n.devices.iter().flat_map(|d| d.conditions.iter()).collect();
    if !conditions.is_empty() {
        out.push('\n');
        for c in conditions {
            out.push_str(&format!(
                "{} {} {}: {}\n",
                severity(c.severity()),
                c.subject,
                c.code().as_str_name(),
                c.message
            ));
        }
    }
    out
}

/// One `[[log]]` rule: its counts, what it follows, and its last match.
fn log_rule_line(l: &pb::LogRuleStatus) -> String {
    let files = match l.files.len() {
        0 => "no file yet".to_string(),
        1 => l.files.join(""),
        n => format!("{n} files"),
    };
    let mut line = format!(
        "log {}: {} matching in window, {} total, {} lines read from {files}",
        l.name, l.matches_in_window, l.matches_total, l.lines_total
    );
    if l.bytes_skipped > 0 {
        line.push_str(&format!(", {} bytes skipped", l.bytes_skipped));
    }
    if !l.last_match.is_empty() {
        line.push_str(&format!("; last: {}", l.last_match));
    }
    line.push('\n');
    line
}

pub fn device_text(d: &pb::Device) -> String {
    let mut out = String::new();
    if let Some(i) = &d.identity {
        out.push_str(&format!(
            "{}  {}  {} {}  serial {}  firmware {}\nbackend {}  location {}\n",
            i.id,
            kind(i.kind()),
            i.vendor,
            i.model,
            i.serial,
            i.firmware,
            i.backend,
            i.location
        ));
    }
    out.push_str(&format!(
        "state {}  activity {}  enabled {}  power limit {}  last read {}\n",
        state(d.state()),
        activity(d.activity()),
        d.enabled,
        d.power_limit_watts.map_or("-".into(), |w| format!("{w} W")),
        time(&d.last_read_at)
    ));
    if let Some(c) = &d.calibration {
        out.push_str(&format!(
            "calibrated {} at {:.2} degC\n",
            time(&c.calibrated_at),
            c.temperature_celsius
        ));
    }
    if let (Some(m), Some(i)) = (&d.maintenance, &d.identity) {
        out.push_str(&crate::maintenance::line(&i.id, m));
    }
    let caps: Vec<_> = d
        .capabilities()
        .map(|c| c.as_str_name().to_ascii_lowercase())
        .collect();
    out.push_str(&format!("capabilities {}\n", caps.join(", ")));
    if let Some(a) = &d.last_action {
        out.push_str(&format!(
            "last action {} {} at {}: {}\n",
            a.action,
            outcome(a.outcome()),
            time(&a.finished_at),
            a.message
        ));
    }
    if let Some(k) = &d.known_answer {
        out.push_str(&format!(
            "known-answer probe {} at {}: error {:.2e} after {} products, contraction {:.3}/step{}, device product error {:.2e}, {:.1} ms\n",
            k.verdict,
            time(&k.finished_at),
            k.relative_error,
            k.steps,
            k.rate,
            k.baseline_rate
                .map_or(String::new(), |b| format!(" (baseline {b:.3})")),
            k.matvec_error,
            k.duration_us as f64 / 1e3
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .readings
        .iter()
        .map(|r| {
            vec![
                r.sensor.clone(),
                r.quantity().as_str_name().to_ascii_lowercase(),
                format!("{:.6}", r.value),
            ]
        })
        .collect();
    out.push_str(&table(&["SENSOR", "QUANTITY", "VALUE"], &rows));
    if !d.conditions.is_empty() {
        out.push('\n');
        for c in &d.conditions {
            out.push_str(&format!(
                "{} {} since {}: {}\n  runbook: {}\n",
                severity(c.severity()),
                c.code().as_str_name(),
                time(&c.since),
                c.message,
                c.runbook
            ));
        }
    }
    out
}

pub fn action_text(a: &pb::ActionResult) -> String {
    let marks = match (a.dry_run, a.replayed) {
        (true, true) => "[dry run, replayed] ",
        (true, false) => "[dry run] ",
        (false, true) => "[replayed: an earlier request with this idempotency key] ",
        (false, false) => "",
    };
    let mut out = format!(
        "{marks}{} {} {}: {} ({} ms, action {})\n",
        a.device_id,
        a.action,
        outcome(a.outcome()),
        a.message,
        a.duration_ms,
        a.action_id
    );
    if let Some(c) = &a.file_cleanup {
        out.push_str(&file_cleanup_text(c, a.dry_run));
    }
    out
}

/// The files a cleanup removed (or would remove), oldest first, and what it could not remove.
fn file_cleanup_text(c: &pb::FileCleanup, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = format!("{verb} {} file(s), {} bytes:\n", c.files, c.bytes);
    for p in &c.paths {
        out.push_str(&format!("  {p}\n"));
    }
    if c.truncated {
        out.push_str(&format!(
            "  ... and {} more\n",
            c.files.saturating_sub(c.paths.len() as u64)
        ));
    }
    for e in &c.errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

pub fn actions_table(actions: &[pb::ActionResult]) -> String {
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                time(&a.started_at),
                a.device_id.clone(),
                a.action.clone(),
                outcome(a.outcome()),
                format!("{}", a.duration_ms),
                a.caller.clone(),
                a.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "STARTED", "DEVICE", "ACTION", "OUTCOME", "MS", "CALLER", "MESSAGE",
        ],
        &rows,
    )
}

/// The collector in use, the spill and the dropped ranges (one line each when there are any).
fn uplink_detail_text(a: &pb::AgentStatus) -> String {
    let mut out = String::new();
    if !a.collector.is_empty() {
        out.push_str(&format!("collector {}\n", a.collector));
    }
    if a.reports_spilled_total > 0 || a.spill_bytes > 0 {
        out.push_str(&format!(
            "spill {} bytes unacknowledged  {} reports written\n",
            a.spill_bytes, a.reports_spilled_total
        ));
    }
    for r in &a.dropped_ranges {
        out.push_str(&format!(
            "dropped unsent: boot {} seq {}..={}\n",
            r.boot_id, r.first_seq, r.last_seq
        ));
    }
    out
}

pub fn fleet_node_text(n: &pb::FleetNode) -> String {
    let mut out = String::new();
    if let Some(s) = &n.summary {
        out.push_str(&format!(
            "node {}  state {}  stale {}  boot {}  seq {}  peer {}\nreports {}  duplicates {}  missing {}\n",
            s.node,
            state(s.state()),
            if s.stale { "yes" } else { "no" },
            s.boot_id,
            s.last_seq,
            s.peer,
            s.reports_total,
            s.duplicates_total,
            s.missing_total
        ));
    }
    for m in &n.missing_ranges {
        if let Some(r) = &m.range {
            out.push_str(&format!(
                "missing: boot {} seq {}..={} ({} reports, {})\n",
                r.boot_id,
                r.first_seq,
                r.last_seq,
                r.last_seq.saturating_sub(r.first_seq).saturating_add(1),
                m.source
            ));
        }
    }
    if let Some(snap) = &n.snapshot {
        out.push_str(&node_text(snap));
    }
    out
}

pub fn nodes_table(nodes: &[pb::NodeSummary]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                state(n.state()),
                if n.stale { "yes".into() } else { "no".into() },
                format!("{}", n.device_count),
                age(&n.last_seen),
                format!("{}", n.last_seq),
                format!("{}", n.missing_total),
                n.peer.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NODE", "STATE", "STALE", "DEVICES", "SEEN_AGO", "SEQ", "MISSING", "PEER",
        ],
        &rows,
    )
}

pub fn fleet_devices_table(devices: &[pb::FleetDevice]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .filter_map(|f| f.device.as_ref().map(|d| (f, d)))
        .map(|(f, d)| {
            let (id, k) = id(d);
            vec![
                f.node.clone(),
                id.to_string(),
                kind(k),
                state(d.state()),
                max_temp(d),
                power(d),
                condition_codes(&d.conditions),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "DEVICE",
            "KIND",
            "STATE",
            "TEMP_C",
            "POWER_W",
            "CONDITIONS",
        ],
        &rows,
    )
}

pub fn alert_line(e: &pb::AlertEvent) -> String {
    let Some(a) = &e.alert else {
        return String::new();
    };
    let mut line = format!(
        "{} {} {} {} {}/{} {}: {}",
        time(&a.starts_at),
        alert_status(a.status()),
        crate::history::priority(&a.priority, a.escalated),
        severity(a.severity()),
        a.node,
        a.subject,
        a.name,
        a.message
    );
    if !a.suppressed_by.is_empty() {
        line.push_str(&format!(" [suppressed: {}]", a.suppressed_by));
    }
    if !a.silenced_by.is_empty() {
        line.push_str(&format!(" [silenced by {}]", a.silenced_by.join(", ")));
    }
    line + "\n"
}

pub fn diagnostics_text(r: &pb::RunDiagnosticsResponse) -> String {
    let mut out = format!(
        "{}  state {}  in {} ms\n",
        r.device_id,
        state(r.state()),
        r.duration_ms
    );
    for c in &r.checks_passed {
        out.push_str(&format!("  passed: {c}\n"));
    }
    for c in &r.findings {
        out.push_str(&format!(
            "  {}\n    runbook: {}\n",
            condition_line(c),
            c.runbook
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide-cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[0], "A          LONGER");
        assert_eq!(lines[1], "wide-cell  x");
        assert_eq!(lines[2], "y          z");
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(state(pb::HealthState::Critical), "CRITICAL");
        assert_eq!(kind(pb::DeviceKind::AnalogCrossbar), "analog_crossbar");
    }
}
