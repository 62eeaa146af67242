//! `agent-ctl --json` and the status page's JSON API: every message either shows, in one place. Scripts read this
//! output, so it keeps the proto field names, but it is written for them rather than being
//! the protobuf JSON mapping: enum values lose their proto prefix (`OK`, `analog_crossbar`),
//! timestamps are RFC 3339 strings, 64-bit counters are numbers, a device's identity is
//! inlined into the device, and unset fields are `null` rather than left out.
//!
//! Because it is written by hand, a field added to the proto would silently not show here;
//! `agent-ctl/tests/json_fields.rs` walks the proto descriptors and fails for any field this output
//! lacks.

use health_proto::v1 as pb;
use prost_types::Timestamp;
use serde_json::{json, Value};

use crate::names;

fn timestamp(t: &Option<Timestamp>) -> Value {
    match t {
        Some(_) => Value::String(names::time(t)),
        None => Value::Null,
    }
}

fn list<T>(items: &[T], item: impl Fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(item).collect())
}

pub fn condition(c: &pb::Condition) -> Value {
    json!({
        "code": c.code().as_str_name(),
        "severity": names::severity(c.severity()),
        "subject": c.subject,
        "message": c.message,
        "since": timestamp(&c.since),
        "runbook": c.runbook,
    })
}

fn seq_range(r: &pb::SeqRange) -> Value {
    json!({"boot_id": r.boot_id, "first_seq": r.first_seq, "last_seq": r.last_seq})
}

fn reading(r: &pb::Reading) -> Value {
    json!({
        "sensor": r.sensor,
        "quantity": r.quantity().as_str_name().to_ascii_lowercase(),
        "value": r.value,
        "observed_at": timestamp(&r.observed_at),
    })
}

fn known_answer(k: &pb::KnownAnswerResult) -> Value {
    json!({
        "verdict": k.verdict,
        "relative_error": k.relative_error,
        "rate": k.rate,
        "matvec_error": k.matvec_error,
        "steps": k.steps,
        "finished_at": timestamp(&k.finished_at),
        "duration_us": k.duration_us,
        "baseline_rate": k.baseline_rate,
        "message": k.message,
    })
}

/// The identity's fields are inlined: `{"id": …, "kind": …, "state": …}`.
pub fn device(d: &pb::Device) -> Value {
    let i = d.identity.clone().unwrap_or_default();
    json!({
        "id": i.id,
        "kind": names::kind(i.kind()),
        "vendor": i.vendor,
        "model": i.model,
        "serial": i.serial,
        "firmware": i.firmware,
        "backend": i.backend,
        "location": i.location,
        "state": names::state(d.state()),
        "activity": names::activity(d.activity()),
        "enabled": d.enabled,
        "power_limit_watts": d.power_limit_watts,
        "last_read_at": timestamp(&d.last_read_at),
        "consecutive_failures": d.consecutive_failures,
        "calibration": d.calibration.as_ref().map(|c| json!({
            "calibrated_at": timestamp(&c.calibrated_at),
            "temperature_celsius": c.temperature_celsius,
        })),
        "capabilities": d.capabilities().map(|c| c.as_str_name().to_ascii_lowercase()).collect::<Vec<_>>(),
        "readings": list(&d.readings, reading),
        "conditions": list(&d.conditions, condition),
        "last_action": d.last_action.as_ref().map(|a| json!({
            "action": a.action,
            "outcome": names::outcome(a.outcome()),
            "finished_at": timestamp(&a.finished_at),
            "message": a.message,
        })),
        "known_answer": d.known_answer.as_ref().map(known_answer),
        "maintenance": d.maintenance.as_ref().map(maintenance),
    })
}

/// A maintenance window; `until` is null for SLURM's (it lasts while SLURM holds it).
pub fn maintenance(m: &pb::Maintenance) -> Value {
    json!({
        "until": timestamp(&m.until),
        "reason": m.reason,
        "by": m.by,
        "started_at": timestamp(&m.started_at),
        "audit_hash": m.audit_hash,
        "source": m.source,
    })
}

/// `agent-ctl maintenance`: every window in force and the result of a start or end.
pub fn maintenance_status(s: &pb::MaintenanceStatus) -> Value {
    json!({
        "windows": list(&s.windows, |w| json!({
            "subject": w.subject,
            "maintenance": w.maintenance.as_ref().map(maintenance),
        })),
        "result": s.result.as_ref().map(action),
        "max_maintenance_seconds": s.max_maintenance_seconds,
    })
}

pub fn diagnostics(r: &pb::RunDiagnosticsResponse) -> Value {
    json!({
        "device_id": r.device_id,
        "state": names::state(r.state()),
        "checks_passed": r.checks_passed,
        "findings": list(&r.findings, condition),
        "duration_ms": r.duration_ms,
    })
}

fn agent_status(a: &pb::AgentStatus) -> Value {
    json!({
        "uplink_configured": a.uplink_configured,
        "uplink_connected": a.uplink_connected,
        "reports_sent_total": a.reports_sent_total,
        "last_acked_seq": a.last_acked_seq,
        "reports_buffered": a.reports_buffered,
        "reports_dropped_total": a.reports_dropped_total,
        "reconnects_total": a.reconnects_total,
        "collector": a.collector,
        "spill_bytes": a.spill_bytes,
        "reports_spilled_total": a.reports_spilled_total,
        "dropped_ranges": list(&a.dropped_ranges, seq_range),
        "audit_head": a.audit_head.as_ref().map(|h| json!({"seq": h.seq, "hash": h.hash})),
    })
}

/// `load1`, `load5` and `load15` are one array: `"load": [1.0, 0.5, 0.2]`.
fn host(h: &pb::HostHealth) -> Value {
    json!({
        "state": names::state(h.state()),
        "cpu_utilization_ratio": h.cpu_utilization_ratio,
        "cpu_count": h.cpu_count,
        "memory_total_bytes": h.memory_total_bytes,
        "memory_available_bytes": h.memory_available_bytes,
        "load": [h.load1, h.load5, h.load15],
        "disks": list(&h.disks, |d| json!({
            "mount_point": d.mount_point, "total_bytes": d.total_bytes, "available_bytes": d.available_bytes,
        })),
        "conditions": list(&h.conditions, condition),
        "observed_at": timestamp(&h.observed_at),
        "processes": list(&h.processes, process),
        "services": list(&h.services, service),
        "logs": list(&h.logs, log_rule),
        "iowait_ratio": h.iowait_ratio,
        "oom_kills_total": h.oom_kills_total,
    })
}

pub fn service(s: &pb::ServiceStatus) -> Value {
    json!({
        "name": s.name,
        "unit": s.unit,
        "active_state": s.active_state,
        "sub_state": s.sub_state,
        "restarts": s.restarts,
        "health_url": s.health_url,
        "http_status": s.http_status,
        "health_error": s.health_error,
        "health_latency_seconds": s.health_latency_seconds,
        "port": s.port,
        "listening": s.listening,
        "checked_at": timestamp(&s.checked_at),
    })
}

pub fn log_rule(l: &pb::LogRuleStatus) -> Value {
    json!({
        "name": l.name,
        "files": l.files,
        "matches_total": l.matches_total,
        "matches_in_window": l.matches_in_window,
        "last_match": l.last_match,
        "last_match_at": timestamp(&l.last_match_at),
        "lines_total": l.lines_total,
        "bytes_skipped": l.bytes_skipped,
    })
}

pub fn file_cleanup(c: &pb::FileCleanup) -> Value {
    json!({
        "rule": c.rule,
        "files": c.files,
        "bytes": c.bytes,
        "paths": c.paths,
        "truncated": c.truncated,
        "errors": c.errors,
    })
}

/// `host` is always an object (an agent without host health shows the defaults).
pub fn node(n: &pb::NodeSnapshot) -> Value {
    json!({
        "node": n.node,
        "boot_id": n.boot_id,
        "seq": n.seq,
        "taken_at": timestamp(&n.taken_at),
        "state": names::state(n.state()),
        "agent_version": n.agent_version,
        "agent": n.agent.as_ref().map(agent_status),
        "host": host(&n.host.clone().unwrap_or_default()),
        "devices": list(&n.devices, device),
        "recent_actions": list(&n.recent_actions, action),
        "maintenance": n.maintenance.as_ref().map(maintenance),
    })
}

pub fn action(a: &pb::ActionResult) -> Value {
    json!({
        "action_id": a.action_id,
        "device_id": a.device_id,
        "action": a.action,
        "outcome": names::outcome(a.outcome()),
        "message": a.message,
        "started_at": timestamp(&a.started_at),
        "duration_ms": a.duration_ms,
        "caller": a.caller,
        "role": a.role,
        "dry_run": a.dry_run,
        "replayed": a.replayed,
        "device_after": a.device_after.as_ref().map(device),
        "process_kill": a.process_kill.as_ref().map(process_kill),
        "file_cleanup": a.file_cleanup.as_ref().map(file_cleanup),
        "audit_hash": a.audit_hash,
    })
}

pub fn process(p: &pb::ProcessStatus) -> Value {
    json!({
        "name": p.name,
        "pid": p.pid,
        "ppid": p.ppid,
        "comm": p.comm,
        "command_line": p.command_line,
        "state": p.state,
        "runtime_seconds": p.runtime_seconds,
        "rss_bytes": p.rss_bytes,
        "start_time_ticks": p.start_time_ticks,
        "started_at": timestamp(&p.started_at),
        "cpu_percent": p.cpu_percent,
    })
}

pub fn process_kill(k: &pb::ProcessKill) -> Value {
    json!({
        "pid": k.pid,
        "signals_sent": k.signals_sent,
        "exited": k.exited,
        "before": k.before.as_ref().map(process),
    })
}

pub fn node_summary(n: &pb::NodeSummary) -> Value {
    json!({
        "node": n.node,
        "state": names::state(n.state()),
        "stale": n.stale,
        "last_seen": timestamp(&n.last_seen),
        "boot_id": n.boot_id,
        "last_seq": n.last_seq,
        "device_count": n.device_count,
        "reports_total": n.reports_total,
        "duplicates_total": n.duplicates_total,
        "missing_total": n.missing_total,
        "peer": n.peer,
    })
}

pub fn fleet_node(n: &pb::FleetNode) -> Value {
    json!({
        "summary": n.summary.as_ref().map(node_summary),
        "missing_ranges": list(&n.missing_ranges, |m| json!({
            "range": m.range.as_ref().map(seq_range),
            "source": m.source,
        })),
        "snapshot": n.snapshot.as_ref().map(node),
    })
}

pub fn fleet_device(f: &pb::FleetDevice) -> Value {
    json!({
        "node": f.node,
        "node_stale": f.node_stale,
        "device": f.device.as_ref().map(device),
    })
}

/// The alert's fields are inlined next to `report_sent_at`.
pub fn alert(e: &pb::AlertEvent) -> Value {
    let a = e.alert.clone().unwrap_or_default();
    json!({
        "fingerprint": a.fingerprint,
        "name": a.name,
        "alertname": a.alertname,
        "node": a.node,
        "subject": a.subject,
        "device": a.device,
        "severity": names::severity(a.severity()),
        "status": names::alert_status(a.status()),
        "message": a.message,
        "pending_since": timestamp(&a.pending_since),
        "starts_at": timestamp(&a.starts_at),
        "ends_at": timestamp(&a.ends_at),
        "runbook": a.runbook,
        "priority": a.priority,
        "escalated": a.escalated,
        "escalated_at": timestamp(&a.escalated_at),
        "report_sent_at": timestamp(&e.report_sent_at),
        "silenced_by": a.silenced_by,
        "suppressed_by": a.suppressed_by,
    })
}

pub fn silence(s: &pb::Silence) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers.iter().map(|m| json!({
            "name": m.name,
            "value": m.value,
            "is_regex": m.is_regex,
            "is_equal": m.is_equal,
        })).collect::<Vec<_>>(),
        "starts_at": timestamp(&s.starts_at),
        "ends_at": timestamp(&s.ends_at),
        "created_by": s.created_by,
        "comment": s.comment,
        "state": s.state,
        "audit_hash": s.audit_hash,
        "origin": s.origin,
        "node": s.node,
        "device": s.device,
    })
}

pub fn silences(r: &pb::ListSilencesResponse) -> Value {
    json!({ "silences": r.silences.iter().map(silence).collect::<Vec<_>>() })
}

pub fn history_entry(entry: &pb::HistoryEntry) -> Value {
    json!({
        "kind": names::history_kind(entry.kind()),
        "at": timestamp(&entry.at),
        "node": entry.node,
        "subject": entry.subject,
        "name": entry.name,
        "severity": names::history_severity(entry),
        "status": entry.status,
        "message": entry.message,
        "ended_at": timestamp(&entry.ended_at),
        "id": entry.id,
        "caller": entry.caller,
        "duration_ms": entry.duration_ms,
        "priority": entry.priority,
        "audit_hash": entry.audit_hash,
    })
}

fn remediation_step(s: &pb::RemediationStep) -> Value {
    json!({
        "action": s.action,
        "outcome": s.outcome,
        "message": s.message,
        "at": timestamp(&s.at),
        "action_id": s.action_id,
    })
}

/// `paused_until` is null while paused until resumed (and while not paused).
fn remediation_device(d: &pb::RemediationDevice) -> Value {
    json!({
        "device_id": d.device_id,
        "policy": d.policy,
        "mode": d.mode,
        "state": d.state,
        "step": d.step,
        "steps": d.steps,
        "step_action": d.step_action,
        "attempts_in_window": d.attempts_in_window,
        "max_attempts": d.max_attempts,
        "blocked_by": d.blocked_by,
        "last_verification": d.last_verification,
        "trigger": d.trigger,
        "since": timestamp(&d.since),
        "history": list(&d.history, remediation_step),
        "paused": d.paused,
        "paused_until": timestamp(&d.paused_until),
        "active": d.active,
    })
}

fn policy_stats(p: &pb::PolicyStats) -> Value {
    json!({
        "policy": p.policy,
        "mode": p.mode,
        "ladders_started": p.ladders_started,
        "steps_run": p.steps_run,
        "steps_skipped": p.steps_skipped,
        "would_act": p.would_act,
        "cleared_by_itself": p.cleared_by_itself,
        "recovered": p.recovered,
        "exhausted": p.exhausted,
    })
}

pub fn remediation(s: &pb::RemediationStatus) -> Value {
    json!({
        "devices": list(&s.devices, remediation_device),
        "policies": list(&s.policies, policy_stats),
        "paused": s.paused,
        "paused_until": timestamp(&s.paused_until),
        "paused_reason": s.paused_reason,
        "max_destructive": s.max_destructive,
        "destructive_running": s.destructive_running,
        "collector_configured": s.collector_configured,
    })
}

fn timeline_entry(t: &pb::TimelineEntry) -> Value {
    json!({
        "at": timestamp(&t.at),
        "actor": t.actor,
        "what": t.what,
        "outcome": t.outcome,
        "audit_hash": t.audit_hash,
        "kind": names::history_kind(t.kind()),
        "subject": t.subject,
    })
}

fn incident_note(n: &pb::IncidentNote) -> Value {
    json!({
        "at": timestamp(&n.at),
        "by": n.by,
        "text": n.text,
        "audit_hash": n.audit_hash,
    })
}

/// An incident; also `agent-ctl incident ID --export json`.
pub fn incident(i: &pb::Incident) -> Value {
    json!({
        "id": i.id,
        "node": i.node,
        "open": i.open,
        "opened_at": timestamp(&i.opened_at),
        "resolved_at": timestamp(&i.resolved_at),
        "closed_at": timestamp(&i.closed_at),
        "priority": i.priority,
        "subjects": i.subjects,
        "alerts": i.alerts,
        "detection": i.detection,
        "first_condition_at": timestamp(&i.first_condition_at),
        "time_to_detect_ms": i.time_to_detect_ms,
        "time_to_resolve_ms": i.time_to_resolve_ms,
        "resolution": i.resolution,
        "timeline": list(&i.timeline, timeline_entry),
        "notes": list(&i.notes, incident_note),
        "summary": i.summary,
    })
}
