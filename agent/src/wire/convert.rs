//! Conversions from the agent's and the HAL's plain types to `health.v1` messages: the one
//! place where the two meet (Architecture Invariant 1).

use std::time::SystemTime;

use health_hal as hal;
use health_proto::v1 as pb;
use prost_types::Timestamp;

use crate::action::ActionRecord;
use crate::host::HostStatus;
use crate::model::NodeSnapshot;
use crate::model::{Activity, DeviceStatus, Outcome};

pub fn ts(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

pub fn state(s: hal::HealthState) -> i32 {
    (match s {
        hal::HealthState::Ok => pb::HealthState::Ok,
        hal::HealthState::Unknown => pb::HealthState::Unknown,
        hal::HealthState::Warning => pb::HealthState::Warning,
        hal::HealthState::Critical => pb::HealthState::Critical,
    }) as i32
}

pub fn kind(k: hal::DeviceKind) -> i32 {
    (match k {
        hal::DeviceKind::Loihi2 => pb::DeviceKind::Loihi2,
        hal::DeviceKind::Spinnaker => pb::DeviceKind::Spinnaker,
        hal::DeviceKind::Photonic => pb::DeviceKind::Photonic,
        hal::DeviceKind::AnalogCrossbar => pb::DeviceKind::AnalogCrossbar,
    }) as i32
}

fn severity(s: hal::Severity) -> i32 {
    (match s {
        hal::Severity::Info => pb::Severity::Info,
        hal::Severity::Warning => pb::Severity::Warning,
        hal::Severity::Critical => pb::Severity::Critical,
    }) as i32
}

fn code(c: hal::ConditionCode) -> i32 {
    use hal::ConditionCode as C;
    use pb::ConditionCode as P;
    (match c {
        C::ThermalWarning => P::ThermalWarning,
        C::ThermalCritical => P::ThermalCritical,
        C::PowerOverLimit => P::PowerOverLimit,
        C::CalibrationStale => P::CalibrationStale,
        C::CalibrationDrift => P::CalibrationDrift,
        C::DeviceUnresponsive => P::DeviceUnresponsive,
        C::DeviceMissing => P::DeviceMissing,
        C::LinkDegraded => P::LinkDegraded,
        C::ResetFailed => P::ResetFailed,
        C::IllConditioned => P::IllConditioned,
        C::NotConverging => P::NotConverging,
        C::PrecisionInsufficient => P::PrecisionInsufficient,
        C::HostMemoryHigh => P::HostMemoryHigh,
        C::DiskFull => P::DiskFull,
        C::ProcessStuck => P::ProcessStuck,
        C::HostLoadHigh => P::HostLoadHigh,
        C::DeviceDisabled => P::DeviceDisabled,
        C::DeviceError => P::DeviceError,
        C::TecSetpointDeviation => P::TecSetpointDeviation,
        C::ProcessZombie => P::ProcessZombie,
        C::ProcessMissing => P::ProcessMissing,
        C::AuditLogUnwritable => P::AuditLogUnwritable,
        C::RemediationExhausted => P::RemediationExhausted,
        C::AccessDenied => P::AccessDenied,
        C::ProbeFailed => P::ProbeFailed,
        C::ServiceDown => P::ServiceDown,
        C::ServiceUnhealthy => P::ServiceUnhealthy,
        C::PortNotListening => P::PortNotListening,
        C::LogPattern => P::LogPattern,
        C::HostOomKill => P::HostOomKill,
        C::HostIowaitHigh => P::HostIowaitHigh,
        C::Maintenance => P::Maintenance,
    }) as i32
}

fn quantity(q: hal::Quantity) -> i32 {
    use hal::Quantity as Q;
    use pb::Quantity as P;
    (match q {
        Q::TemperatureCelsius => P::TemperatureCelsius,
        Q::PowerWatts => P::PowerWatts,
        Q::EnergyJoules => P::EnergyJoules,
        Q::VoltageVolts => P::VoltageVolts,
        Q::CurrentAmperes => P::CurrentAmperes,
        Q::FanRpm => P::FanRpm,
        Q::PhaseErrorRadians => P::PhaseErrorRadians,
        Q::OpticalPowerWatts => P::OpticalPowerWatts,
        Q::ConductanceDriftRatio => P::ConductanceDriftRatio,
        Q::StuckCellsRatio => P::StuckCellsRatio,
        Q::EffectiveBits => P::EffectiveBits,
        Q::CalibrationAgeSeconds => P::CalibrationAgeSeconds,
        Q::SetpointCelsius => P::SetpointCelsius,
    }) as i32
}

fn capability(c: hal::Capability) -> i32 {
    use hal::Capability as C;
    use pb::Capability as P;
    (match c {
        C::ResetSoft => P::ResetSoft,
        C::ResetHard => P::ResetHard,
        C::PowerCycle => P::PowerCycle,
        C::Calibrate => P::Calibrate,
        C::SetPowerLimit => P::SetPowerLimit,
        C::EnableDisable => P::EnableDisable,
        C::FaultInjection => P::FaultInjection,
        C::Matvec => P::Matvec,
    }) as i32
}

fn activity(a: Activity) -> i32 {
    (match a {
        Activity::Running => pb::DeviceActivity::Running,
        Activity::Resetting => pb::DeviceActivity::Resetting,
        Activity::Calibrating => pb::DeviceActivity::Calibrating,
        Activity::Disabled => pb::DeviceActivity::Disabled,
        Activity::Failed => pb::DeviceActivity::Failed,
        Activity::Off => pb::DeviceActivity::Off,
    }) as i32
}

pub fn outcome(o: Outcome) -> i32 {
    (match o {
        Outcome::Succeeded => pb::ActionOutcome::Succeeded,
        Outcome::Failed => pb::ActionOutcome::Failed,
        Outcome::TimedOut => pb::ActionOutcome::TimedOut,
        Outcome::Refused => pb::ActionOutcome::Refused,
    }) as i32
}

pub fn condition(c: &hal::Condition) -> pb::Condition {
    pb::Condition {
        code: code(c.code),
        severity: severity(c.severity),
        subject: c.subject.clone(),
        message: c.message.clone(),
        since: Some(ts(c.since)),
        runbook: c.code.runbook().to_string(),
    }
}

pub fn device(d: &DeviceStatus) -> pb::Device {
    let id = &d.identity;
    pb::Device {
        identity: Some(pb::DeviceIdentity {
            id: id.id.clone(),
            kind: kind(id.kind),
            vendor: id.vendor.clone(),
            model: id.model.clone(),
            serial: id.serial.clone(),
            firmware: id.firmware.clone(),
            backend: id.backend.clone(),
            location: id.location.clone(),
        }),
        state: state(d.state),
        activity: activity(d.activity),
        readings: d
            .readings
            .iter()
            .map(|r| pb::Reading {
                sensor: r.sensor.clone(),
                quantity: quantity(r.quantity),
                value: r.value,
                observed_at: Some(ts(r.observed_at)),
            })
            .collect(),
        conditions: d.conditions.iter().map(condition).collect(),
        capabilities: d.capabilities.iter().map(|c| capability(*c)).collect(),
        enabled: d.enabled,
        power_limit_watts: d.power_limit_watts,
        calibration: d.calibration.map(|c| pb::Calibration {
            calibrated_at: Some(ts(c.calibrated_at)),
            temperature_celsius: c.temperature_celsius,
        }),
        last_read_at: d.last_read_at.map(ts),
        consecutive_failures: d.consecutive_failures,
        last_action: d.last_action.as_ref().map(|a| pb::ActionSummary {
            action: a.action.clone(),
            outcome: outcome(a.outcome),
            finished_at: Some(ts(a.finished_at)),
            message: a.message.clone(),
        }),
        known_answer: d.known_answer.as_ref().map(|k| pb::KnownAnswerResult {
            verdict: k.verdict.clone(),
            relative_error: k.relative_error,
            rate: k.rate,
            matvec_error: k.matvec_error,
            steps: k.steps,
            finished_at: Some(ts(k.finished_at)),
            duration_us: k.duration.as_micros() as u64,
            baseline_rate: k.baseline_rate,
            message: k.message.clone(),
        }),
        maintenance: d.maintenance.as_ref().map(maintenance),
    }
}

pub fn maintenance(w: &crate::model::MaintenanceWindow) -> pb::Maintenance {
    pb::Maintenance {
        until: w.until.map(ts),
        reason: w.reason.clone(),
        by: w.by.clone(),
        started_at: Some(ts(w.started_at)),
        audit_hash: w.audit_hash.clone(),
        source: w.source.as_str().to_string(),
    }
}

pub fn host(h: &HostStatus) -> pb::HostHealth {
    pb::HostHealth {
        state: state(h.state),
        cpu_utilization_ratio: h.cpu_utilization_ratio,
        cpu_count: h.cpu_count,
        memory_total_bytes: h.memory_total_bytes,
        memory_available_bytes: h.memory_available_bytes,
        load1: h.load[0],
        load5: h.load[1],
        load15: h.load[2],
        disks: h
            .disks
            .iter()
            .map(|d| pb::Disk {
                mount_point: d.mount_point.clone(),
                total_bytes: d.total_bytes,
                available_bytes: d.available_bytes,
            })
            .collect(),
        conditions: h.conditions.iter().map(condition).collect(),
        observed_at: h.observed_at.map(ts),
        processes: h.processes.iter().map(process).collect(),
        services: h.services.iter().map(service).collect(),
        logs: h.logs.iter().map(log_rule).collect(),
        iowait_ratio: h.iowait_ratio,
        oom_kills_total: h.oom_kills_total,
    }
}

fn log_rule(l: &crate::host::logs::LogRuleStatus) -> pb::LogRuleStatus {
    pb::LogRuleStatus {
        name: l.name.clone(),
        files: l.files.clone(),
        matches_total: l.matches_total,
        matches_in_window: l.matches_in_window,
        last_match: l.last_match.clone(),
        last_match_at: l.last_match_at.map(ts),
        lines_total: l.lines_total,
        bytes_skipped: l.bytes_skipped,
    }
}

pub fn service(s: &crate::host::services::ServiceStatus) -> pb::ServiceStatus {
    let unit = s.unit_state.clone().unwrap_or_default();
    let health = s.health.clone().unwrap_or_default();
    pb::ServiceStatus {
        name: s.name.clone(),
        unit: s.unit.clone().unwrap_or_default(),
        active_state: unit.active_state,
        sub_state: unit.sub_state,
        restarts: unit.restarts,
        health_url: s.health_url.clone().unwrap_or_default(),
        http_status: u32::from(health.status),
        health_error: health.error,
        port: s.port.map_or(0, u32::from),
        listening: s.listening.unwrap_or(false),
        checked_at: s.checked_at.map(ts),
        health_latency_seconds: health.latency.as_secs_f64(),
    }
}

pub fn process(p: &crate::host::procwatch::ProcessInfo) -> pb::ProcessStatus {
    pb::ProcessStatus {
        name: p.name.clone(),
        pid: p.pid as u32,
        ppid: p.ppid.max(0) as u32,
        comm: p.comm.clone(),
        command_line: p.cmdline.clone(),
        state: p.state.to_string(),
        runtime_seconds: p.runtime.as_secs_f64(),
        rss_bytes: p.rss_bytes,
        start_time_ticks: p.start_ticks,
        started_at: Some(ts(p.started_at)),
        cpu_percent: p.cpu_percent,
    }
}

fn process_kill(k: &crate::action::kill::KillReport) -> pb::ProcessKill {
    pb::ProcessKill {
        pid: k.pid,
        signals_sent: k.signals_sent.iter().map(|s| s.to_string()).collect(),
        exited: k.exited,
        before: Some(process(&k.before)),
    }
}

fn file_cleanup(c: &crate::action::clean::CleanupReport) -> pb::FileCleanup {
    pb::FileCleanup {
        rule: c.rule.clone(),
        files: c.files,
        bytes: c.bytes,
        paths: c.paths.clone(),
        truncated: c.truncated,
        errors: c.errors.clone(),
    }
}

pub fn kill_signal(s: i32) -> Option<crate::action::kill::KillSignal> {
    use crate::action::kill::KillSignal;
    match pb::ProcessSignal::try_from(s).ok()? {
        pb::ProcessSignal::Unspecified | pb::ProcessSignal::Term => Some(KillSignal::Term),
        pb::ProcessSignal::Kill => Some(KillSignal::Kill),
    }
}

pub fn snapshot(s: &NodeSnapshot) -> pb::NodeSnapshot {
    pb::NodeSnapshot {
        node: s.node.clone(),
        boot_id: s.boot_id.clone(),
        seq: s.seq,
        taken_at: Some(ts(s.taken_at)),
        state: state(s.state),
        host: Some(host(&s.host)),
        devices: s.devices.iter().map(|d| device(d)).collect(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        agent: Some(pb::AgentStatus {
            uplink_configured: s.agent.uplink_configured,
            uplink_connected: s.agent.uplink_connected,
            reports_sent_total: s.agent.reports_sent_total,
            last_acked_seq: s.agent.last_acked_seq,
            reports_buffered: s.agent.reports_buffered,
            reports_dropped_total: s.agent.reports_dropped_total,
            reconnects_total: s.agent.reconnects_total,
            collector: s.agent.collector.clone(),
            spill_bytes: s.agent.spill_bytes,
            reports_spilled_total: s.agent.reports_spilled_total,
            audit_head: s
                .agent
                .audit_head
                .as_ref()
                .map(|(seq, hash)| pb::AuditHead {
                    seq: *seq,
                    hash: hash.clone(),
                }),
            dropped_ranges: s
                .agent
                .dropped_ranges
                .iter()
                .map(|r| pb::SeqRange {
                    boot_id: r.boot_id.clone(),
                    first_seq: r.first_seq,
                    last_seq: r.last_seq,
                })
                .collect(),
        }),
        recent_actions: s.agent.recent_actions.iter().map(reported_action).collect(),
        maintenance: s.maintenance.as_ref().map(maintenance),
    }
}

/// An action in a report: the record without `device_after` (the report has the devices).
fn reported_action(r: &crate::model::ReportedAction) -> pb::ActionResult {
    pb::ActionResult {
        action_id: r.id.clone(),
        device_id: r.device_id.clone(),
        action: r.action.clone(),
        outcome: outcome(r.outcome),
        message: r.message.clone(),
        started_at: Some(ts(r.started_at)),
        duration_ms: r.duration_ms,
        device_after: None,
        caller: r.caller.clone(),
        process_kill: None,
        audit_hash: r.audit_hash.clone(),
        ..Default::default()
    }
}

pub fn action(r: &ActionRecord) -> pb::ActionResult {
    pb::ActionResult {
        device_after: r.device_after.as_deref().map(device),
        process_kill: r.process_kill.as_ref().map(process_kill),
        file_cleanup: r.file_cleanup.as_ref().map(file_cleanup),
        dry_run: r.dry_run,
        replayed: r.replayed,
        role: r.role.clone(),
        ..reported_action(&crate::model::ReportedAction::from(r))
    }
}

pub fn reset_kind(k: i32) -> Option<hal::ResetKind> {
    match pb::ResetKind::try_from(k).ok()? {
        pb::ResetKind::Soft => Some(hal::ResetKind::Soft),
        pb::ResetKind::Hard => Some(hal::ResetKind::Hard),
        pb::ResetKind::PowerCycle => Some(hal::ResetKind::PowerCycle),
        pb::ResetKind::Unspecified => None,
    }
}

pub fn fault_kind(k: i32) -> Option<hal::FaultKind> {
    match pb::FaultKind::try_from(k).ok()? {
        pb::FaultKind::Overheat => Some(hal::FaultKind::Overheat),
        pb::FaultKind::Hang => Some(hal::FaultKind::Hang),
        pb::FaultKind::Drift => Some(hal::FaultKind::Drift),
        pb::FaultKind::FailingReset => Some(hal::FaultKind::FailingReset),
        pb::FaultKind::Vanish => Some(hal::FaultKind::Vanish),
        pb::FaultKind::Clear => Some(hal::FaultKind::Clear),
        pb::FaultKind::Unspecified => None,
    }
}

fn remediation_step(s: &crate::remediation::view::StepRecord) -> pb::RemediationStep {
    pb::RemediationStep {
        action: s.action.clone(),
        outcome: s.outcome.as_str().to_string(),
        message: s.message.clone(),
        at: Some(ts(s.at)),
        action_id: s.action_id.clone(),
    }
}

fn remediation_device(l: &crate::remediation::view::LadderView) -> pb::RemediationDevice {
    pb::RemediationDevice {
        device_id: l.device_id.clone(),
        policy: l.policy.clone(),
        mode: l.mode.clone(),
        state: l.state.as_str().to_string(),
        step: l.step,
        steps: l.steps,
        step_action: l.step_action.clone(),
        attempts_in_window: l.attempts_in_window,
        max_attempts: l.max_attempts,
        blocked_by: l.blocked_by.clone(),
        last_verification: l.last_verification.clone(),
        trigger: l.trigger.clone(),
        since: Some(ts(l.since)),
        history: l.history.iter().map(remediation_step).collect(),
        paused: l.paused.is_some(),
        paused_until: l.paused.as_ref().and_then(|p| p.until).map(ts),
        active: l.active,
    }
}

fn policy_stats(c: &crate::remediation::view::PolicyCounts) -> pb::PolicyStats {
    pb::PolicyStats {
        policy: c.policy.clone(),
        mode: c.mode.clone(),
        ladders_started: c.ladders_started,
        steps_run: c.steps_run,
        steps_skipped: c.steps_skipped,
        would_act: c.would_act,
        cleared_by_itself: c.cleared_by_itself,
        recovered: c.recovered,
        exhausted: c.exhausted,
    }
}

/// The engine's report: `paused_until` unset means paused until resumed (or not paused).
pub fn remediation(r: &crate::remediation::view::RemediationReport) -> pb::RemediationStatus {
    pb::RemediationStatus {
        devices: r.devices.iter().map(remediation_device).collect(),
        policies: r.policies.iter().map(policy_stats).collect(),
        paused: r.paused.is_some(),
        paused_until: r.paused.as_ref().and_then(|p| p.until).map(ts),
        paused_reason: r
            .paused
            .as_ref()
            .map_or(String::new(), |p| p.reason.clone()),
        max_destructive: r.max_destructive,
        destructive_running: r.destructive_running,
        collector_configured: r.collector_configured,
    }
}
