//! The single path every mutating action takes: reset, calibrate, power limit, enable/disable,
//! fault injection and killing a watched process. It checks that the device exists and has the capability, runs the
//! action on the device's supervisor (which serializes actions per device and bounds each by a
//! deadline), and records who asked, what happened and how long it took.
//!
//! Authorization, rate limits and the persistent hash-chained audit log attach here (their own
//! issue); today the record is kept in memory for `ListActions` and written to the log under
//! the `audit` target. No other module calls a device's mutating methods.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use health_hal::FaultKind;

use crate::node::Node;
use crate::procwatch::kill::{KillReport, KillRequest};
use crate::supervisor::{DeviceAction, DeviceStatus, Outcome};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Requested {
    Device(DeviceAction),
    InjectFault(FaultKind),
    /// Signal a watched process (see `procwatch::kill`).
    KillProcess(KillRequest),
}

impl Requested {
    pub fn describe(&self) -> String {
        match self {
            Requested::Device(a) => a.describe(),
            Requested::InjectFault(f) => format!("inject-fault {}", f.as_str()),
            Requested::KillProcess(k) => k.describe(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub id: String,
    pub device_id: String,
    pub action: String,
    pub caller: String,
    pub outcome: Outcome,
    pub message: String,
    pub started_at: SystemTime,
    pub duration_ms: u64,
    pub device_after: Option<Arc<DeviceStatus>>,
    /// For a process kill: the signals sent and whether the process exited.
    pub process_kill: Option<KillReport>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ActionError {
    #[error("no device {0:?} on this node")]
    NoSuchDevice(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotPossible(String),
}

const KEEP_RECORDS: usize = 1000;

/// Records an action as interrupted if its task is dropped before the action ends: at
/// shutdown, the runtime drops tasks still running once the shutdown bound has passed. Every
/// "action requested" line is then followed by either "action finished" or "action
/// interrupted" in the audit log.
struct InterruptedGuard {
    id: String,
    device_id: String,
    action: String,
    t0: Instant,
    armed: bool,
}

impl InterruptedGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InterruptedGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(
                target: "audit",
                id = %self.id, device = %self.device_id, action = %self.action,
                outcome = "INTERRUPTED", duration_ms = self.t0.elapsed().as_millis() as u64,
                "action interrupted: the agent stopped before the action ended; the device state is unknown until the next read"
            );
        }
    }
}

pub struct Actions {
    node: Arc<Node>,
    next_id: AtomicU64,
    recent: Mutex<VecDeque<ActionRecord>>,
    /// Finished actions by device, kind and outcome, for `/metrics` (`crate::metrics`).
    pub counts: crate::metrics::ActionCounts,
    /// Actions whose task has not ended (recorded) yet; shutdown waits for none (bounded).
    in_flight: tokio::sync::watch::Sender<usize>,
}

/// Counts an action task as in flight until it ends, however it ends.
struct InFlight(tokio::sync::watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Actions {
    /// Resolves once no action task is running: every accepted action has ended and been
    /// recorded. The daemon waits for this (within its shutdown bound) after the supervisors
    /// stop, so an action that finished at shutdown is recorded as finished.
    pub async fn wait_idle(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn new(node: Arc<Node>) -> Actions {
        Actions {
            node,
            next_id: AtomicU64::new(1),
            recent: Mutex::new(VecDeque::new()),
            in_flight: tokio::sync::watch::channel(0).0,
            counts: Default::default(),
        }
    }

    /// Runs one action. Errors are refusals before anything touched the device; every call
    /// that reaches this path, refused or not, leaves a record.
    ///
    /// The action runs on its own task: once accepted it runs to its end and is recorded, even
    /// if the caller goes away (a client timeout, Ctrl-C) while it is queued or running.
    pub async fn run(
        self: &Arc<Self>,
        caller: &str,
        device_id: &str,
        req: Requested,
    ) -> Result<ActionRecord, ActionError> {
        let this = self.clone();
        let (caller, device_id) = (caller.to_string(), device_id.to_string());
        self.in_flight.send_modify(|n| *n += 1);
        let in_flight = InFlight(self.in_flight.clone());
        tokio::spawn(async move {
            let _in_flight = in_flight;
            this.run_recorded(&caller, &device_id, req).await
        })
        .await
        .unwrap_or_else(|e| {
            Err(ActionError::NotPossible(format!(
                "the action task failed: {e}"
            )))
        })
    }

    async fn run_recorded(
        &self,
        caller: &str,
        device_id: &str,
        req: Requested,
    ) -> Result<ActionRecord, ActionError> {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let id = format!(
            "{}-{}",
            &self.node.boot_id[..8],
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        tracing::info!(
            target: "audit",
            id = %id, caller = %caller, device = %device_id, action = %req.describe(),
            "action requested"
        );
        let interrupted = InterruptedGuard {
            id: id.clone(),
            device_id: device_id.to_string(),
            action: req.describe(),
            t0,
            armed: true,
        };
        let mut process_kill = None;
        let result = match req {
            Requested::KillProcess(k) => self.kill_process(&k, &mut process_kill).await,
            _ => self.check_and_run(device_id, req).await,
        };
        interrupted.disarm();
        let (outcome, message) = match &result {
            Ok(r) => r.clone(),
            Err(e) => (Outcome::Refused, e.to_string()),
        };
        let record = ActionRecord {
            id,
            device_id: device_id.to_string(),
            action: req.describe(),
            caller: caller.to_string(),
            outcome,
            message,
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            device_after: self.node.device(device_id).map(|d| d.status()),
            process_kill,
        };
        tracing::info!(
            target: "audit",
            id = %record.id, caller = %record.caller, device = %record.device_id, action = %record.action,
            outcome = record.outcome.as_str(), duration_ms = record.duration_ms, message = %record.message,
            "action finished"
        );
        self.counts
            .record(&record, self.node.device(device_id).is_some());
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == KEEP_RECORDS {
                recent.pop_front();
            }
            recent.push_back(record.clone());
        }
        self.node.note_action(&record);
        result.map(|_| record)
    }

    async fn check_and_run(
        &self,
        device_id: &str,
        req: Requested,
    ) -> Result<(Outcome, String), ActionError> {
        let dev = self
            .node
            .device(device_id)
            .ok_or_else(|| ActionError::NoSuchDevice(device_id.to_string()))?;
        match req {
            Requested::InjectFault(fault) => {
                let inj = dev.injector.as_ref().ok_or_else(|| {
                    ActionError::NotPossible(format!("{device_id} is not a simulated device: faults can only be injected into simulated devices"))
                })?;
                inj.inject(fault);
                let active: Vec<_> = inj.active().iter().map(|f| f.as_str()).collect();
                Ok((
                    Outcome::Succeeded,
                    format!("active faults: [{}]", active.join(", ")),
                ))
            }
            Requested::KillProcess(_) => Err(ActionError::InvalidArgument(
                "a process is not a device: use KillProcess".to_string(),
            )),
            Requested::Device(action) => {
                if let DeviceAction::SetPowerLimit(w) = action {
                    if !w.is_finite() || w <= 0.0 {
                        return Err(ActionError::InvalidArgument(format!(
                            "watts: expected a positive number, got {w}"
                        )));
                    }
                }
                if let Some(cap) = action.capability() {
                    // Checked against the current status: a backend may learn a capability on
                    // its first read (a writable power cap found by sysfs).
                    if !dev.status().capabilities.contains(&cap) {
                        return Err(ActionError::NotPossible(format!(
                            "{device_id} does not support {}",
                            action.describe()
                        )));
                    }
                }
                Ok(dev.run(action).await)
            }
        }
    }

    /// Kills a watched process: checked against the `[[process]]` rules and the process as it
    /// is now, then signalled with a bounded wait for its exit.
    async fn kill_process(
        &self,
        req: &KillRequest,
        report: &mut Option<KillReport>,
    ) -> Result<(Outcome, String), ActionError> {
        let watch = self.node.processes().ok_or_else(|| {
            ActionError::NotPossible(
                "no [[process]] rules are configured: the agent signals only processes it watches"
                    .to_string(),
            )
        })?;
        let info = crate::procwatch::kill::verify(&watch.rules, req).await?;
        let (outcome, message, done) = crate::procwatch::kill::execute(info, req).await;
        *report = Some(done);
        Ok((outcome, message))
    }

    /// The most recent records, newest first.
    pub fn recent(&self, limit: usize, device_id: Option<&str>) -> Vec<ActionRecord> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter(|r| device_id.is_none_or(|d| r.device_id == d))
            .take(limit)
            .cloned()
            .collect()
    }
}
