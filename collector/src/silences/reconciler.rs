//! Keeps one Alertmanager silence per maintenance window, on its own task.
//!
//! Desired state: the windows of the fleet (`MaintenanceWindows`, updated by ingest, which
//! wakes this task). Actual state: the maintenance silences of the book. [`plan`] compares
//! them: a window with no silence gets one (matchers `node` and, for a device, `device`;
//! `endsAt` = until; comment = reason, who, audit hash); a silence whose window changed its
//! until or reason is re-POSTed with its id (Alertmanager's update); a silence whose window is
//! gone (ended, node forgotten) is DELETEd; one past its until has been ended by Alertmanager
//! itself and is only forgotten. Silences adopted from Alertmanager at start that no window
//! claims within [`ADOPT_GRACE`] are forgotten, never deleted: they may belong to another
//! collector of the fleet, or to a node in maintenance that is powered off and cannot report,
//! and they end by themselves at their `endsAt` (the window's until).
//!
//! While an Alertmanager is down the round fails and is retried with backoff (1 s doubling
//! to 30 s); suppression of the alerts does not wait for any of this (it is the alert book's).
//! Each change is recorded in the collector's audit log, as `health-collector`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use health_proto::v1::SilenceMatcher;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::maintenance::{Window, WindowKey};
use super::matcher::Matcher;
use super::{Held, Origin, Silences, MAINTENANCE_CREATED_BY};
use crate::audit::{AuditLog, Entry, Outcome, Phase};

const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long adopted silences with no window are kept, for their nodes to report.
const ADOPT_GRACE: Duration = Duration::from_secs(120);
/// How far ahead of now a new maintenance silence starts (see `maintenance_silence`).
const STARTS_AHEAD: Duration = Duration::from_millis(500);
/// A round runs at least this often, for windows that pass their until without a report.
const RESYNC: Duration = Duration::from_secs(30);

/// One change to make in Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Create(WindowKey, Window),
    Extend(WindowKey, Window),
    Expire(WindowKey),
    /// Drop from the book without touching Alertmanager (see the module comment).
    Forget(WindowKey),
}

/// What a held maintenance silence is, as far as planning is concerned.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HeldState {
    pub ends_at: SystemTime,
    pub comment: String,
    /// Missing in some Alertmanager (it was down when the silence was made).
    pub incomplete: bool,
    pub adopted: bool,
}

pub(super) fn comment(w: &Window) -> String {
    let reason = if w.reason.is_empty() {
        "maintenance"
    } else {
        &w.reason
    };
    let hash = if w.audit_hash.is_empty() {
        "none"
    } else {
        &w.audit_hash
    };
    format!("{reason} (maintenance by {}, audit {hash})", w.by)
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The steps that bring Alertmanager to the windows, at `now`.
pub(super) fn plan(
    desired: &BTreeMap<WindowKey, Window>,
    held: &BTreeMap<WindowKey, HeldState>,
    now: SystemTime,
    grace_over: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (key, window) in desired.iter().filter(|(_, w)| w.until > now) {
        match held.get(key) {
            None => steps.push(Step::Create(key.clone(), window.clone())),
            Some(h)
                if h.incomplete
                    || millis(h.ends_at) != millis(window.until)
                    || h.comment != comment(window) =>
            {
                steps.push(Step::Extend(key.clone(), window.clone()));
            }
            Some(_) => {}
        }
    }
    for (key, h) in held {
        if desired.get(key).is_some_and(|w| w.until > now) {
            continue;
        }
        if h.ends_at <= now || (h.adopted && grace_over) {
            steps.push(Step::Forget(key.clone()));
        } else if !h.adopted {
            steps.push(Step::Expire(key.clone()));
        }
    }
    steps
}

/// The book entry of a window's silence (ids to be filled in).
pub(super) fn maintenance_silence(key: &WindowKey, w: &Window, count: usize) -> Held {
    let matcher = |name: &str, value: &str| {
        Matcher::new(
            SilenceMatcher {
                name: name.into(),
                value: value.into(),
                is_regex: false,
                is_equal: true,
            },
            0,
        )
    };
    let mut matchers: Vec<Matcher> = matcher("node", &key.node).into_iter().collect();
    if !key.device.is_empty() {
        matchers.extend(matcher("device", &key.device));
    }
    Held {
        ids: vec![None; count],
        matchers,
        // A moment ahead: Alertmanager replaces a startsAt in the past with its own clock's
        // (to the nanosecond), and an update must send the stored startsAt back exactly.
        starts_at: SystemTime::now() + STARTS_AHEAD,
        ends_at: w.until,
        created_by: MAINTENANCE_CREATED_BY.into(),
        comment: comment(w),
        audit_hash: String::new(),
        origin: Origin::Maintenance,
        expired: false,
        adopted: false,
    }
}

/// Starts the reconciler when an Alertmanager is configured.
pub fn spawn(
    silences: Arc<Silences>,
    audit: Option<Arc<AuditLog>>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    silences.client.as_ref()?;
    Some(tokio::spawn(run(silences, audit, shutdown)))
}

async fn run(silences: Arc<Silences>, audit: Option<Arc<AuditLog>>, shutdown: CancellationToken) {
    let started = Instant::now();
    let mut adopted = false;
    let mut backoff = BACKOFF_INITIAL;
    loop {
        let mut failed = false;
        if !adopted {
            match silences.adopt().await {
                Ok(_) => adopted = true,
                Err(error) => {
                    tracing::warn!(%error, "cannot read Alertmanager's silences yet; retrying");
                    failed = true;
                }
            }
        }
        if adopted {
            failed |= round(
                &silences,
                audit.as_deref(),
                started.elapsed() >= ADOPT_GRACE,
            )
            .await;
        }
        let wait = if failed {
            silences.sync_failures.fetch_add(1, Ordering::Relaxed);
            let wait = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            wait
        } else {
            backoff = BACKOFF_INITIAL;
            next_due(&silences).min(RESYNC)
        };
        // While failing, only the backoff wakes it (a change meanwhile stays noted in the
        // Notify's permit), so a busy fleet cannot hammer an Alertmanager that is down.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = silences.windows.changed(), if !failed => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Time until the soonest window ends, so its silence goes at its until (bounded below).
fn next_due(silences: &Silences) -> Duration {
    let now = SystemTime::now();
    silences
        .windows
        .all()
        .values()
        .filter_map(|w| w.until.duration_since(now).ok())
        .min()
        .map_or(RESYNC, |d| d + Duration::from_millis(50))
}

/// One pass; true if any step failed.
async fn round(silences: &Silences, audit: Option<&AuditLog>, grace_over: bool) -> bool {
    let desired = silences.windows.all();
    let held: BTreeMap<WindowKey, HeldState> = silences
        .book()
        .maintenance
        .iter()
        .map(|(k, h)| {
            let state = HeldState {
                ends_at: h.ends_at,
                comment: h.comment.clone(),
                incomplete: h.ids.iter().any(Option::is_none),
                adopted: h.adopted,
            };
            (k.clone(), state)
        })
        .collect();
    let mut failed = false;
    for step in plan(&desired, &held, SystemTime::now(), grace_over) {
        if let Err(error) = apply(silences, audit, &step).await {
            tracing::warn!(%error, ?step, "maintenance silence not synced; retrying with backoff");
            failed = true;
        }
    }
    failed
}

async fn apply(silences: &Silences, audit: Option<&AuditLog>, step: &Step) -> Result<(), String> {
    let Some(client) = &silences.client else {
        return Ok(());
    };
    let count = client.urls().len();
    match step {
        Step::Create(key, w) | Step::Extend(key, w) => {
            let existing = silences.book().maintenance.get(key).cloned();
            let mut held = maintenance_silence(key, w, count);
            if let Some(old) = &existing {
                // The same startsAt, to the millisecond: Alertmanager updates an active
                // silence in place (same id) only when its startsAt is unchanged.
                held.starts_at = old.starts_at;
                held.ids = old.ids.clone();
                held.ids.resize(count, None);
            }
            let mut errors = Vec::new();
            for (i, url) in client.urls().iter().enumerate() {
                match client.post(url, &held.postable(held.ids[i].clone())).await {
                    Ok(id) => held.ids[i] = Some(id),
                    Err(e) => errors.push(e),
                }
            }
            let what = if existing.is_some() {
                "extend"
            } else {
                "create"
            };
            if held.id().is_empty() {
                return Err(errors.join("; "));
            }
            held.audit_hash = record(audit, what, key, &held, &errors).await;
            silences.book().maintenance.insert(key.clone(), held);
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }
        Step::Forget(key) => {
            silences.book().maintenance.remove(key);
            Ok(())
        }
        Step::Expire(key) => {
            let Some(held) = silences.book().maintenance.get(key).cloned() else {
                return Ok(());
            };
            let errors = silences.delete_everywhere(client, &held.ids).await;
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            record(audit, "expire", key, &held, &errors).await;
            silences.book().maintenance.remove(key);
            Ok(())
        }
    }
}

/// Writes the collector's own audit entry for a maintenance silence; its hash, or empty.
async fn record(
    audit: Option<&AuditLog>,
    what: &str,
    key: &WindowKey,
    held: &Held,
    errors: &[String],
) -> String {
    let Some(audit) = audit else {
        return String::new();
    };
    let entry = Entry {
        who: super::CREATED_BY.into(),
        role: "collector".into(),
        what: format!("maintenance-silence-{what}"),
        args: json!({
            "node": key.node,
            "device": key.device,
            "id": held.id(),
            "ends_at": super::rfc3339(held.ends_at),
            "comment": held.comment,
        }),
        outcome: Some(Outcome::Succeeded),
        message: errors.join("; "),
    };
    match audit.append(Phase::Change, entry).await {
        Ok(appended) => appended.hash,
        Err(error) => {
            tracing::error!(target: "audit", %error, "could not record a maintenance silence");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(device: &str) -> WindowKey {
        WindowKey {
            node: "n1".into(),
            device: device.into(),
        }
    }

    fn window(until: SystemTime) -> Window {
        Window {
            until,
            reason: "firmware".into(),
            by: "uid 0".into(),
            audit_hash: "abc".into(),
        }
    }

    fn held_for(w: &Window) -> HeldState {
        HeldState {
            ends_at: w.until,
            comment: comment(w),
            incomplete: false,
            adopted: false,
        }
    }

    #[test]
    fn a_window_is_created_extended_then_expired() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = window(t0 + Duration::from_secs(3600));
        let desired = BTreeMap::from([(key("loihi-0"), w.clone())]);
        let none = BTreeMap::new();
        assert_eq!(
            plan(&desired, &none, t0, false),
            vec![Step::Create(key("loihi-0"), w.clone())]
        );
        // In step: nothing to do.
        let held = BTreeMap::from([(key("loihi-0"), held_for(&w))]);
        assert!(plan(&desired, &held, t0, false).is_empty());
        // A later until: the same silence is updated.
        let longer = window(t0 + Duration::from_secs(7200));
        let desired2 = BTreeMap::from([(key("loihi-0"), longer.clone())]);
        assert_eq!(
            plan(&desired2, &held, t0, false),
            vec![Step::Extend(key("loihi-0"), longer)]
        );
        // Ended: expired.
        assert_eq!(
            plan(&BTreeMap::new(), &held, t0, false),
            vec![Step::Expire(key("loihi-0"))]
        );
        // Past its until on the collector's clock, even if still reported: Alertmanager has
        // ended it by itself (a DELETE would be answered "already expired"); forgotten.
        assert_eq!(
            plan(&desired, &held, t0 + Duration::from_secs(3600), false),
            vec![Step::Forget(key("loihi-0"))]
        );
    }

    #[test]
    fn a_silence_missing_in_one_alertmanager_is_posted_again() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = window(t0 + Duration::from_secs(60));
        let desired = BTreeMap::from([(key(""), w.clone())]);
        let mut state = held_for(&w);
        state.incomplete = true;
        let held = BTreeMap::from([(key(""), state)]);
        assert_eq!(
            plan(&desired, &held, t0, false),
            vec![Step::Extend(key(""), w)]
        );
    }

    #[test]
    fn adopted_silences_wait_for_the_grace_before_they_go() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = window(t0 + Duration::from_secs(60));
        let mut state = held_for(&w);
        state.adopted = true;
        let held = BTreeMap::from([(key(""), state)]);
        assert!(plan(&BTreeMap::new(), &held, t0, false).is_empty());
        assert_eq!(
            plan(&BTreeMap::new(), &held, t0, true),
            vec![Step::Forget(key(""))],
            "left to end by itself: it may be another collector's"
        );
        // Ours, past its until: Alertmanager has ended it; nothing to delete.
        let mut ours = held_for(&w);
        ours.ends_at = t0;
        let held = BTreeMap::from([(key(""), ours)]);
        assert_eq!(
            plan(&BTreeMap::new(), &held, t0, false),
            vec![Step::Forget(key(""))]
        );
    }

    #[test]
    fn the_comment_carries_reason_who_and_audit_hash() {
        let w = window(SystemTime::UNIX_EPOCH);
        assert_eq!(comment(&w), "firmware (maintenance by uid 0, audit abc)");
        let held = maintenance_silence(&key("loihi-0"), &w, 2);
        let names: Vec<&str> = held.matchers.iter().map(|m| m.spec.name.as_str()).collect();
        assert_eq!(names, ["node", "device"]);
        assert_eq!(held.ids.len(), 2);
        assert_eq!(maintenance_silence(&key(""), &w, 1).matchers.len(), 1);
    }
}
