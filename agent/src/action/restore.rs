//! Idempotency keys across a restart: the keys of the last minutes are read back from the
//! audit log's tail before the API serves anyone, so a client's retry after an agent restart
//! returns the first result instead of acting twice.

use std::time::SystemTime;

use super::path::IDEMPOTENCY_TTL;
use super::{fingerprint, ActionError, ActionRecord, Actions};
use crate::audit::{Phase, Record, Recorded};
use crate::model::Outcome;

impl Actions {
    /// Remembers the idempotency keys of recent actions from the audit log (entries of a run
    /// before this one, oldest first), so a retry that arrives after an agent restart is not
    /// run a second time. An action that began and has no end on record was cut off by the
    /// stop: a retry of it is refused rather than guessed at.
    pub fn restore_idempotency(&self, records: &[Record]) {
        let now = SystemTime::now();
        let mut restored = 0;
        for r in records {
            let e = &r.entry;
            let key = &e.idempotency_key;
            if key.is_empty()
                || !matches!(
                    r.phase,
                    Phase::Begin | Phase::End | Phase::DryRun | Phase::Interrupted
                )
            {
                continue;
            }
            let Some(age) = humantime::parse_rfc3339_weak(&r.time)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
            else {
                continue;
            };
            if age >= IDEMPOTENCY_TTL {
                continue;
            }
            let dry_run = r.phase == Phase::DryRun;
            // A maintenance start's end entry adds the window's `until` to the arguments the
            // request had; the fingerprint is of the request.
            let mut args = e.args.clone();
            if e.action == crate::maintenance::STARTED {
                if let Some(o) = args.as_object_mut() {
                    o.remove("until");
                }
            }
            let fp = fingerprint(
                crate::auth::principal_of(&e.caller),
                &e.target,
                &e.action,
                &args,
                dry_run,
            );
            let result = match r.phase {
                Phase::Begin | Phase::Interrupted => Err(ActionError::NotPossible(format!(
                    "idempotency_key {key:?}: the first request ({} on {}, action {}) began before the agent restarted and its end is not on record; check the device and use a new key",
                    e.action, e.target, e.action_id
                ))),
                _ => Ok(ActionRecord {
                    id: e.action_id.clone(),
                    device_id: e.target.clone(),
                    action: e.action.clone(),
                    caller: e.caller.clone(),
                    role: e.role.clone(),
                    outcome: match e.outcome {
                        Some(Recorded::Succeeded) => Outcome::Succeeded,
                        Some(Recorded::Failed) => Outcome::Failed,
                        Some(Recorded::TimedOut) => Outcome::TimedOut,
                        _ => Outcome::Refused,
                    },
                    message: e.message.clone(),
                    started_at: now - age,
                    duration_ms: e.duration_ms.unwrap_or(0),
                    device_after: None,
                    process_kill: None,
                    file_cleanup: None,
                    dry_run,
                    replayed: false,
                    audit_hash: r.hash.clone().unwrap_or_default(),
                }),
            };
            // A later entry for the same key (the end after its begin) replaces the earlier.
            self.idempotency.restore(key, &fp, result, age);
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(target: "audit", entries = restored, "idempotency keys restored from the audit log");
        }
    }
}
