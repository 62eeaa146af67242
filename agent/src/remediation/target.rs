//! What the engine reads about a target (a device, a watched process, a `[[service]]` rule's
//! `service:<name>`, or a mount point that is DISK_FULL): its conditions as
//! last read or read afresh, the first policy that matches, and the ladder state kept for it.
//! Reads only: nothing here changes a device.

use std::time::{Duration, SystemTime};

use health_hal::{Condition, ConditionCode};
use tokio_util::sync::CancellationToken;

use super::view::LadderState;
use super::Remediation;
use crate::audit::{Phase, Recorded};
use crate::config::{Policy, PolicyMode};
use crate::device::DeviceProbe;
use crate::model::MaintenanceWindow;

/// Identifies one window (an extension is a new one: its hold is recorded again).
fn maintenance_key(w: &MaintenanceWindow) -> String {
    format!(
        "{}|{}|{:?}|{:?}",
        w.source.as_str(),
        w.by,
        w.started_at,
        w.until
    )
}

impl Remediation {
    /// Targets a task should look after: a matching condition now, or state to keep
    /// (exhausted, recently recovered).
    pub(super) fn targets_with_work(&self) -> Vec<String> {
        let snapshot = self.node.snapshot();
        let mut out = Vec::new();
        for d in &snapshot.devices {
            if self.first_match(&d.identity.id, &d.conditions).is_some() {
                out.push(d.identity.id.clone());
            }
        }
        // Host subjects a step can act on: a watched process (kill-process) and a mount point
        // (DISK_FULL's subject, clean-files). Node-wide maintenance covers both.
        let mut host_subjects: Vec<&str> = snapshot
            .host
            .conditions
            .iter()
            .filter(|c| {
                c.subject.starts_with("process:")
                    || c.subject.starts_with("service:")
                    || c.code == ConditionCode::DiskFull
            })
            .map(|c| c.subject.as_str())
            .collect();
        host_subjects.sort_unstable();
        host_subjects.dedup();
        for s in host_subjects {
            if self.first_match(s, &snapshot.host.conditions).is_some()
                && !out.iter().any(|o| o == s)
            {
                out.push(s.to_string());
            }
        }
        let ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        for (id, l) in ladders.iter() {
            if (l.exhausted.is_some() || l.recovered.is_some()) && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The first policy (in config order, not `off`) with a condition of `target` it matches.
    pub(super) fn first_match(
        &self,
        target: &str,
        conditions: &[Condition],
    ) -> Option<(usize, Condition)> {
        self.policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.mode != PolicyMode::Off)
            .find_map(|(i, p)| {
                conditions
                    .iter()
                    .find(|c| c.subject == target && p.matches.matches(c.code, c.severity, target))
                    .map(|c| (i, c.clone()))
            })
    }

    /// The target's conditions as last read (no fresh read).
    pub(super) fn conditions_of(&self, target: &str) -> Vec<Condition> {
        match self.node.device_status(target) {
            Some(s) => s.conditions.clone(),
            None => self
                .node
                .snapshot()
                .host
                .conditions
                .iter()
                .filter(|c| c.subject == target)
                .cloned()
                .collect(),
        }
    }

    /// A fresh read of a device or a fresh check of a service (processes are rescanned on the
    /// watchdog's own interval, disks on the host monitor's: verification of a host subject
    /// waits for that next measurement), then whether a condition `policy` matches is present.
    pub(super) async fn present_fresh(&self, target: &str, policy: &Policy) -> Option<Condition> {
        if let Some(d) = self.node.device(target) {
            let _ = d.probe(DeviceProbe::ReadNow).await;
        } else if let (Some(name), Some(services)) =
            (target.strip_prefix("service:"), self.node.services())
        {
            services.check_now(name).await;
        }
        self.present(target, policy)
    }

    pub(super) fn present(&self, target: &str, policy: &Policy) -> Option<Condition> {
        self.conditions_of(target)
            .into_iter()
            .find(|c| policy.matches.matches(c.code, c.severity, target))
    }

    pub(super) fn set(&self, target: &str, f: impl FnOnce(&mut super::Ladder)) {
        let mut ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        f(ladders
            .entry(target.to_string())
            .or_insert_with(super::Ladder::new));
    }

    pub(super) fn get<T>(&self, target: &str, f: impl FnOnce(&super::Ladder) -> T) -> Option<T> {
        let ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        ladders.get(target).map(f)
    }

    pub(super) fn blocked(&self, target: &str, state: LadderState, why: impl Into<String>) {
        let why = why.into();
        self.set(target, |l| {
            if l.state != state {
                l.since = SystemTime::now();
            }
            l.state = state;
            l.blocked_by = why;
        });
    }

    /// The maintenance that holds `target` now (its own, SLURM's, or the node's), as what
    /// blocks its ladder.
    pub(super) fn in_maintenance(&self, target: &str) -> Option<(MaintenanceWindow, String)> {
        self.node.maintenance_of(target).map(|w| {
            let why = format!("maintenance: in maintenance {}", w.describe());
            (w, why)
        })
    }

    /// Records, once per window, that a ladder of `policy` on `target` would have started or
    /// gone on but the target is in maintenance (a `skipped` entry naming the window).
    pub(super) async fn note_maintenance(
        &self,
        target: &str,
        policy: &Policy,
        window: &MaintenanceWindow,
        trigger: Option<&Condition>,
    ) {
        let key = maintenance_key(window);
        let mut first = false;
        self.set(target, |l| {
            if l.maintenance_noted != key {
                l.maintenance_noted.clone_from(&key);
                first = true;
            }
        });
        if !first {
            return;
        }
        let mut e = self.entry(target, policy, "maintenance-hold");
        e.args = serde_json::json!({
            "policy": policy.name,
            "source": window.source.as_str(),
            "until": window.until.map(|u| humantime::format_rfc3339_seconds(u).to_string()),
            "by": window.by,
            "window_hash": window.audit_hash,
        });
        if let Some(c) = trigger {
            e.trigger = format!("{}: {}", c.code, c.message);
        }
        e.outcome = Some(Recorded::Refused);
        e.message = format!(
            "policy {} does not act on {target}: in maintenance {}; conditions are still read",
            policy.name,
            window.describe()
        );
        tracing::info!(target: "audit", device = target, policy = %policy.name, "{}", e.message);
        self.append(Phase::Skipped, e).await;
    }

    /// What pauses `target` now, if anything.
    pub(super) fn paused(&self, target: &str) -> Option<String> {
        let now = SystemTime::now();
        if let Some(p) = self.current_node_pause(now) {
            return Some(format!("pause (node, by {}: {})", p.by, p.reason));
        }
        self.get(target, |l| l.paused.clone())
            .flatten()
            .filter(|p| p.until.is_none_or(|u| u > now))
            .map(|p| format!("pause (by {}: {})", p.by, p.reason))
    }

    /// Forgets the recorded hold once `target` is out of maintenance, so a later window is
    /// recorded again.
    pub(super) fn out_of_maintenance(&self, target: &str) {
        if self.get(target, |l| !l.maintenance_noted.is_empty()) == Some(true) {
            self.set(target, |l| l.maintenance_noted.clear());
        }
    }

    pub(super) async fn sleep(&self, cancel: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = self.changed.notified() => true,
            _ = tokio::time::sleep(d) => true,
        }
    }
}
