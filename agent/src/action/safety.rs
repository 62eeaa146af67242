//! Action safety that does not depend on what the action is: one action at a time per target,
//! a cooldown between actions, a cap on resets per hour, and idempotency keys so that a
//! retried request returns the first result instead of acting twice.
//!
//! [`crate::action::Actions`] consults these for every gated action before anything is
//! written or touched; a refusal names the limit and when the action will be allowed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DeviceSafety;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct TargetState {
    /// The action running on the target now, if any.
    busy: Option<String>,
    last_end: Option<Instant>,
    /// Start times of resets within the last hour.
    resets: VecDeque<Instant>,
}

/// What the gate needs to know about an action.
pub struct GateRequest<'a> {
    pub target: &'a str,
    pub action: &'a str,
    /// Who asked (an operator's identity, `policy:<name>`): named when the target is busy.
    pub caller: &'a str,
    pub is_reset: bool,
    /// Part of an action already admitted (a calibration after a reset): no cooldown.
    pub follow_up: bool,
    pub limits: DeviceSafety,
}

#[derive(Default)]
pub struct Gate {
    targets: Mutex<HashMap<String, TargetState>>,
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Held while an admitted action runs; dropping it frees the target and starts the cooldown.
pub struct Reservation {
    gate: Arc<Gate>,
    target: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut t = self.gate.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = t.get_mut(&self.target) {
            s.busy = None;
            s.last_end = Some(Instant::now());
        }
    }
}

impl Gate {
    /// Checks the limits; with `reserve`, also marks the target busy and counts the reset.
    fn admit(&self, r: &GateRequest<'_>, reserve: bool) -> Result<(), String> {
        let now = Instant::now();
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let s = targets.entry(r.target.to_string()).or_default();
        if let Some(running) = &s.busy {
            let hint = if running.contains("(by policy:") {
                format!(
                    "; `agent-ctl remediation pause --device {}` stops its ladder after this step",
                    r.target
                )
            } else {
                String::new()
            };
            return Err(format!(
                "busy: {running} is running on {}; one action at a time per device{hint}",
                r.target
            ));
        }
        if !r.follow_up && !r.limits.cooldown.is_zero() {
            if let Some(end) = s.last_end {
                let ready = end + r.limits.cooldown;
                if ready > now {
                    return Err(format!(
                        "cooldown: the last action on {} ended {} ago; the next is allowed in {} (cooldown {})",
                        r.target,
                        human(now - end),
                        human(ready - now),
                        human(r.limits.cooldown)
                    ));
                }
            }
        }
        while s.resets.front().is_some_and(|t| now - *t >= HOUR) {
            s.resets.pop_front();
        }
        if r.is_reset && s.resets.len() >= r.limits.max_resets_per_hour as usize {
            let oldest = s.resets.front().copied().unwrap_or(now);
            return Err(format!(
                "rate limit: {} resets of {} in the last hour (max_resets_per_hour {}); the next is allowed in {}",
                s.resets.len(),
                r.target,
                r.limits.max_resets_per_hour,
                human((oldest + HOUR).saturating_duration_since(now))
            ));
        }
        if reserve {
            s.busy = Some(format!("{} (by {})", r.action, r.caller));
            if r.is_reset {
                s.resets.push_back(now);
            }
        }
        Ok(())
    }

    /// Every check, nothing reserved (a dry run).
    pub fn check(&self, r: &GateRequest<'_>) -> Result<(), String> {
        self.admit(r, false)
    }

    pub fn reserve(self: &Arc<Self>, r: &GateRequest<'_>) -> Result<Reservation, String> {
        self.admit(r, true)?;
        Ok(Reservation {
            gate: self.clone(),
            target: r.target.to_string(),
        })
    }
}

/// Results by idempotency key, for `ttl`, at most `max` keys.
pub struct Idempotency<T> {
    ttl: Duration,
    max: usize,
    slots: Mutex<HashMap<String, Slot<T>>>,
}

struct Slot<T> {
    fingerprint: String,
    at: Instant,
    result: watch::Receiver<Option<T>>,
}

pub enum Claim<T> {
    /// First use of the key: run the action, then [`Idempotency::finish`].
    New(watch::Sender<Option<T>>),
    /// The key was used for the same request: wait for (or take) its result.
    Replay(watch::Receiver<Option<T>>),
    /// The key was used for a different request.
    Conflict(String),
}

impl<T: Clone> Idempotency<T> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Idempotency {
            ttl,
            max,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers a finished request from before this run (read back from the audit log), as
    /// if it had finished `age` ago.
    pub fn restore(&self, key: &str, fingerprint: &str, result: T, age: Duration) {
        let Some(at) = Instant::now().checked_sub(age) else {
            return;
        };
        let (tx, rx) = watch::channel(Some(result));
        drop(tx);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.insert(
            key.to_string(),
            Slot {
                fingerprint: fingerprint.to_string(),
                at,
                result: rx,
            },
        );
    }

    pub fn claim(&self, key: &str, fingerprint: &str) -> Claim<T> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, s| now - s.at < self.ttl);
        if let Some(s) = slots.get(key) {
            return if s.fingerprint == fingerprint {
                Claim::Replay(s.result.clone())
            } else {
                Claim::Conflict(s.fingerprint.clone())
            };
        }
        if slots.len() >= self.max {
            // Bounded: the oldest key goes first.
            if let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            {
                slots.remove(&oldest);
            }
        }
        let (tx, rx) = watch::channel(None);
        slots.insert(
            key.to_string(),
            Slot {
                fingerprint: fingerprint.to_string(),
                at: now,
                result: rx,
            },
        );
        Claim::New(tx)
    }

    /// Publishes the result to waiting retries; `keep = false` forgets the key (a request
    /// refused before it ran may be retried for real).
    pub fn finish(&self, key: &str, tx: watch::Sender<Option<T>>, result: T, keep: bool) {
        if !keep {
            self.slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
        }
        let _ = tx.send(Some(result));
    }
}

/// Waits for the first request's result.
pub async fn replayed<T: Clone>(mut rx: watch::Receiver<Option<T>>) -> Option<T> {
    rx.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|v| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(limits: DeviceSafety, is_reset: bool) -> GateRequest<'static> {
        GateRequest {
            target: "d",
            action: "reset-soft",
            caller: "uid 1000",
            is_reset,
            follow_up: false,
            limits,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn busy_cooldown_and_hourly_limit_refuse_with_the_wait() {
        let limits = DeviceSafety {
            cooldown: Duration::from_secs(30),
            max_resets_per_hour: 2,
        };
        let gate = Arc::new(Gate::default());
        let r = gate.reserve(&req(limits, true)).unwrap();
        let busy = gate.check(&req(limits, true)).unwrap_err();
        assert!(
            busy.starts_with("busy: reset-soft (by uid 1000) is running on d"),
            "{busy}"
        );
        assert!(!busy.contains("remediation pause"), "{busy}");
        drop(r);
        // A policy's step names the policy and how to stop its ladder.
        let policy = GateRequest {
            caller: "policy:unresponsive",
            ..req(
                DeviceSafety {
                    cooldown: Duration::ZERO,
                    max_resets_per_hour: 100,
                },
                false,
            )
        };
        let other = Arc::new(Gate::default());
        let held = other.reserve(&policy).unwrap();
        let busy = other.check(&policy).unwrap_err();
        assert!(
            busy.contains("(by policy:unresponsive)")
                && busy.contains("agent-ctl remediation pause --device d"),
            "{busy}"
        );
        drop(held);
        let e = gate.check(&req(limits, true)).unwrap_err();
        assert!(e.contains("allowed in 30s"), "{e}");
        tokio::time::advance(Duration::from_secs(31)).await;
        drop(gate.reserve(&req(limits, true)).unwrap());
        tokio::time::advance(Duration::from_secs(31)).await;
        let e = gate.check(&req(limits, true)).unwrap_err();
        // The older of the two started 62 s ago: the next is allowed an hour after it.
        assert!(
            e.contains("2 resets") && e.contains("allowed in 58m 58s"),
            "{e}"
        );
        // Not a reset: only the cooldown applies.
        gate.check(&req(limits, false)).unwrap();
        tokio::time::advance(HOUR).await;
        gate.check(&req(limits, true)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_replays_its_result_and_refuses_other_arguments() {
        let idem: Idempotency<u32> = Idempotency::new(Duration::from_secs(600), 2);
        let Claim::New(tx) = idem.claim("k", "reset a") else {
            panic!("new key")
        };
        let Claim::Replay(rx) = idem.claim("k", "reset a") else {
            panic!("replay")
        };
        idem.finish("k", tx, 7, true);
        assert_eq!(replayed(rx).await, Some(7));
        assert!(matches!(idem.claim("k", "reset b"), Claim::Conflict(_)));
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(matches!(idem.claim("k", "reset b"), Claim::New(_)));
        // Bounded.
        let _ = idem.claim("k2", "x");
        let _ = idem.claim("k3", "x");
        assert_eq!(idem.slots.lock().unwrap().len(), 2);
    }
}
