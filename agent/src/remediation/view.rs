//! What the remediation engine shows: per device, where its ladder stands; per policy, its
//! counts. Plain data, converted to the wire by `crate::wire::convert` and rendered by
//! `agent-ctl remediation`.

use std::time::SystemTime;

/// How one step of a ladder ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// Ran and verified (or, for a step without verification, ran).
    Succeeded,
    /// Ran and failed, or ran and its verification failed.
    Failed,
    TimedOut,
    /// The action path refused it (a safety limit, a lease, the collector unreachable).
    Refused,
    /// The device cannot do it: skipped, never counted as a failure.
    Skipped,
    /// A shadow policy would have taken it; nothing was done.
    Shadow,
    /// Began before a restart with no end on record: counted as failed, never retried.
    Interrupted,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Succeeded => "SUCCEEDED",
            StepOutcome::Failed => "FAILED",
            StepOutcome::TimedOut => "TIMED_OUT",
            StepOutcome::Refused => "REFUSED",
            StepOutcome::Skipped => "SKIPPED",
            StepOutcome::Shadow => "SHADOW",
            StepOutcome::Interrupted => "INTERRUPTED",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// `reset-soft`, `set-power-limit 70%`, ...
    pub action: String,
    pub outcome: StepOutcome,
    /// The action's message and its verification.
    pub message: String,
    pub at: SystemTime,
    /// The action's id in the audit log, when it ran.
    pub action_id: String,
}

/// Where a target's ladder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LadderState {
    /// No matching condition, or nothing to do.
    Idle,
    /// A condition matches; waiting for the policy's `for`.
    Dwell,
    /// A step's action is running.
    Acting,
    /// The action ended; waiting for the condition to clear.
    Verifying,
    /// The condition cleared; waiting for it to stay clear for `hold`.
    Holding,
    /// Something blocks the next step (`blocked_by` says what).
    Waiting,
    /// The last step verified; a return within `healthy_delay` continues the ladder.
    Recovered,
    /// Every step ran and the condition remains (or the device was quarantined).
    Exhausted,
}

impl LadderState {
    pub fn as_str(self) -> &'static str {
        match self {
            LadderState::Idle => "idle",
            LadderState::Dwell => "dwell",
            LadderState::Acting => "acting",
            LadderState::Verifying => "verifying",
            LadderState::Holding => "holding",
            LadderState::Waiting => "waiting",
            LadderState::Recovered => "recovered",
            LadderState::Exhausted => "exhausted",
        }
    }
}

/// A pause of automatic actions, on the node or one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    /// `None`: until resumed.
    pub until: Option<SystemTime>,
    pub reason: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LadderView {
    /// A device id, or `process:<name>:<pid>` for a watched process.
    pub device_id: String,
    /// Empty while no policy matches.
    pub policy: String,
    pub mode: String,
    pub state: LadderState,
    /// 1-based index of the current or last step; 0 before the first.
    pub step: u32,
    pub steps: u32,
    pub step_action: String,
    pub attempts_in_window: u32,
    pub max_attempts: u32,
    /// What keeps the next step from running; empty when nothing does.
    pub blocked_by: String,
    pub last_verification: String,
    /// `CODE: message` of the condition that started the ladder.
    pub trigger: String,
    pub since: SystemTime,
    /// This ladder's steps, oldest first.
    pub history: Vec<StepRecord>,
    pub paused: Option<Pause>,
    /// A ladder is under way (started, not yet recovered or exhausted).
    pub active: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyCounts {
    pub policy: String,
    pub mode: String,
    pub ladders_started: u64,
    pub steps_run: u64,
    pub steps_skipped: u64,
    pub would_act: u64,
    /// Shadow: ladders whose condition cleared by itself within the first step's hold.
    pub cleared_by_itself: u64,
    pub recovered: u64,
    pub exhausted: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemediationReport {
    pub devices: Vec<LadderView>,
    pub policies: Vec<PolicyCounts>,
    /// The whole node's pause.
    pub paused: Option<Pause>,
    pub max_destructive: u32,
    pub destructive_running: u32,
    pub collector_configured: bool,
}
