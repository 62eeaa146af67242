//! Plain data the agent's modules share: what a device, the node and its delivery look like
//! at one instant, and how an action ended. No behaviour beyond small accessors, no protobuf
//! (the wire module converts these), no tokio: everything here can be built in a test.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health_hal::{CalibrationRecord, Capability, Condition, DeviceIdentity, HealthState, Reading};

use crate::host::HostStatus;

/// What the device is doing, as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Running,
    Resetting,
    Calibrating,
    Disabled,
    /// The last reset failed; the device needs an operator.
    Failed,
    /// Powered off (a board whose power controller answers).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "SUCCEEDED",
            Outcome::Failed => "FAILED",
            Outcome::TimedOut => "TIMED_OUT",
            Outcome::Refused => "REFUSED",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionSummary {
    pub action: String,
    pub outcome: Outcome,
    pub finished_at: SystemTime,
    pub message: String,
}

/// Everything known about one device at one instant.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    pub identity: DeviceIdentity,
    pub capabilities: Vec<Capability>,
    pub state: HealthState,
    pub activity: Activity,
    /// Readings of the last successful read; their `observed_at` tells their age.
    pub readings: Vec<Reading>,
    pub conditions: Vec<Condition>,
    pub enabled: bool,
    pub power_limit_watts: Option<f64>,
    pub calibration: Option<CalibrationRecord>,
    pub last_read_at: Option<SystemTime>,
    pub consecutive_failures: u64,
    pub last_action: Option<ActionSummary>,
    /// The last known-answer probe (devices with MATVEC).
    pub known_answer: Option<KnownAnswerSummary>,
    /// Set while the device is in maintenance (an operator's window, or SLURM's); the
    /// supervisor leaves it unset and the node fills it in.
    pub maintenance: Option<MaintenanceWindow>,
}

/// Who put a subject into maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceSource {
    /// `agent-ctl maintenance start`: audited, ends at `until`.
    Operator,
    /// The board's SLURM state (a drain, `maint`, a maintenance reservation): lasts as long as
    /// SLURM says so.
    Slurm,
}

impl MaintenanceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceSource::Operator => "operator",
            MaintenanceSource::Slurm => "slurm",
        }
    }
}

/// A maintenance window on a device or the whole node: while it lasts no policy acts on the
/// subject; its conditions are still read and shown.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    /// When it ends by itself; `None` for SLURM's, which ends when SLURM says so.
    pub until: Option<SystemTime>,
    pub reason: String,
    /// The caller who started (or last extended) it, or `slurm`.
    pub by: String,
    pub started_at: SystemTime,
    /// The audit entry that started or last extended it (empty for SLURM's).
    pub audit_hash: String,
    pub source: MaintenanceSource,
}

impl MaintenanceWindow {
    /// "until 2026-12-07T06:00:00Z, reason \"...\", by uid 1000", for audit messages and
    /// what blocks a ladder.
    pub fn describe(&self) -> String {
        let until = match self.until {
            Some(u) => format!("until {}", humantime::format_rfc3339_seconds(u)),
            None => "while SLURM holds it".to_string(),
        };
        format!("{until}, reason {:?}, by {}", self.reason, self.by)
    }

    /// Whether it still holds at `now`.
    pub fn holds(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// The last probe of a device, as shown on the device (`agent-ctl device`).
#[derive(Debug, Clone, PartialEq)]
pub struct KnownAnswerSummary {
    /// `converged`, `converged-slowly`, `diverged-or-stalled`, or `failed` (device error or
    /// deadline; `message` says which).
    pub verdict: String,
    pub relative_error: f64,
    pub rate: f64,
    pub matvec_error: f64,
    pub steps: u32,
    pub finished_at: SystemTime,
    pub duration: Duration,
    /// The contraction rate of the baseline this probe was judged against.
    pub baseline_rate: Option<f64>,
    pub message: String,
}

/// Counters of the uplink, shared between it and the snapshots that report them.
#[derive(Debug, Default)]
pub struct UplinkStats {
    pub connected: AtomicBool,
    pub sent_total: AtomicU64,
    pub acked_seq: AtomicU64,
    pub buffered: AtomicU64,
    pub dropped_total: AtomicU64,
    pub reconnects_total: AtomicU64,
    /// The collector the uplink streams to, or is trying to reach.
    pub collector: std::sync::Mutex<String>,
    /// Bytes of unacknowledged reports in the spill.
    pub spill_bytes: AtomicU64,
    pub spilled_total: AtomicU64,
    /// The most recent runs of reports dropped unsent, oldest first (bounded by the uplink).
    pub dropped_ranges: std::sync::Mutex<Vec<DroppedRange>>,
}

/// Reports of one boot, `first_seq..=last_seq`, that the agent dropped before delivering them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DroppedRange {
    pub boot_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// The agent's own delivery health, as of one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStatus {
    pub uplink_configured: bool,
    pub uplink_connected: bool,
    pub reports_sent_total: u64,
    pub last_acked_seq: u64,
    pub reports_buffered: u64,
    pub reports_dropped_total: u64,
    pub reconnects_total: u64,
    /// The last few actions run on this node, oldest first, reported so the collector's
    /// history has them (it keeps each action id once).
    pub recent_actions: Vec<ReportedAction>,
    pub collector: String,
    pub spill_bytes: u64,
    pub reports_spilled_total: u64,
    pub dropped_ranges: Vec<DroppedRange>,
    /// (seq, hash) of the newest audit log entry.
    pub audit_head: Option<(u64, String)>,
}

/// An action as reported to the collector: the record without the device read after it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedAction {
    pub id: String,
    pub device_id: String,
    pub action: String,
    pub caller: String,
    pub outcome: Outcome,
    pub message: String,
    pub started_at: SystemTime,
    pub duration_ms: u64,
    /// The audit entry that recorded the result (end, refused, denied, dry-run); empty when
    /// it was not written.
    pub audit_hash: String,
}

#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub node: String,
    pub boot_id: String,
    pub seq: u64,
    pub taken_at: SystemTime,
    pub state: HealthState,
    pub host: Arc<HostStatus>,
    pub devices: Vec<Arc<DeviceStatus>>,
    pub agent: AgentStatus,
    /// Set while the whole node is in maintenance.
    pub maintenance: Option<MaintenanceWindow>,
}

/// How many dropped ranges `AgentStatus` shows (the most recent).
pub const DROPPED_RANGES_SHOWN: usize = 16;

/// Adds dropped reports to the shown ranges, merging runs of consecutive seqs of one boot.
pub fn note_dropped(ranges: &mut Vec<DroppedRange>, keys: &[(String, u64)]) {
    for (boot, seq) in keys {
        match ranges.last_mut() {
            Some(r) if r.boot_id == *boot && r.last_seq + 1 == *seq => r.last_seq = *seq,
            _ => ranges.push(DroppedRange {
                boot_id: boot.clone(),
                first_seq: *seq,
                last_seq: *seq,
            }),
        }
    }
    let excess = ranges.len().saturating_sub(DROPPED_RANGES_SHOWN);
    ranges.drain(..excess);
}
