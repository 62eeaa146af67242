//! Maintenance windows as the collector sees them: read from each applied snapshot
//! (`Device.maintenance`, `NodeSnapshot.maintenance`), used by the alert book to suppress the
//! subject's alerts (status SUPPRESSED, `suppressed_by` saying which window), and handed to
//! the silence reconciler (`super::reconciler`) through [`MaintenanceWindows`], which it
//! reads on its own task: ingest only swaps a node's entry under a short lock and wakes it.
//!
//! A window counts while its `until` is in the future on the collector's clock, so a window
//! the agent has not yet ended (or an agent gone quiet) does not suppress past its end.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use health_proto::v1::{Alert, Maintenance, NodeSnapshot};
use tokio::sync::Notify;

/// What a window covers: a device of a node, or the whole node (`device` empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowKey {
    pub node: String,
    pub device: String,
}

/// One window: until when, why, who.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub until: SystemTime,
    pub reason: String,
    pub by: String,
    pub audit_hash: String,
}

/// The longest window the collector honours, whatever an agent reports: above any agent's
/// `max_maintenance` (at most 30 days), so only a bogus `until` is cut short.
const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// A time an agent reported, as one the collector can hold and print: `None` before the
/// epoch or when it cannot be represented, and never later than `MAX_WINDOW` from `now`
/// (formatting a time past year 9999 would panic, and no window lasts that long).
pub fn reported_time(t: Option<prost_types::Timestamp>, now: SystemTime) -> Option<SystemTime> {
    let t = SystemTime::try_from(t?).ok()?;
    t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(t.min(now + MAX_WINDOW))
}

/// A scheduler's window (a SLURM drain or maintenance reservation) has no end of its own: it
/// holds while the agent reports it. Its silence ends at the next multiple of this at least
/// one step ahead, so it is extended every few minutes rather than on every report, and ends
/// by itself soon after the agent stops reporting it (or is expired when it does).
const HELD_WINDOW_STEP: Duration = Duration::from_secs(600);

fn held_until(now: SystemTime) -> SystemTime {
    let step = HELD_WINDOW_STEP.as_secs();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs((secs / step + 2) * step)
}

fn window_of(m: &Maintenance, now: SystemTime) -> Option<Window> {
    let until = match m.until {
        None if m.source == "slurm" => held_until(now),
        until => reported_time(until, now)?,
    };
    (until > now).then(|| Window {
        until,
        reason: m.reason.clone(),
        by: m.by.clone(),
        audit_hash: m.audit_hash.clone(),
    })
}

/// The windows in force in a snapshot at `now`.
pub fn windows_of(
    node: &str,
    snapshot: &NodeSnapshot,
    now: SystemTime,
) -> BTreeMap<WindowKey, Window> {
    let mut windows = BTreeMap::new();
    if let Some(w) = snapshot
        .maintenance
        .as_ref()
        .and_then(|m| window_of(m, now))
    {
        let key = WindowKey {
            node: node.to_string(),
            device: String::new(),
        };
        windows.insert(key, w);
    }
    for device in &snapshot.devices {
        let (Some(identity), Some(m)) = (&device.identity, &device.maintenance) else {
            continue;
        };
        if let Some(w) = window_of(m, now) {
            let key = WindowKey {
                node: node.to_string(),
                device: identity.id.clone(),
            };
            windows.insert(key, w);
        }
    }
    windows
}

/// Why an alert is suppressed, or `None`: the whole node's window first, else its device's.
/// `"loihi-0 in maintenance until 2026-12-07T08:00:00Z: firmware update (by uid 0)"`.
pub fn suppression(windows: &BTreeMap<WindowKey, Window>, alert: &Alert) -> Option<String> {
    let node = WindowKey {
        node: alert.node.clone(),
        device: String::new(),
    };
    let (subject, window) = match windows.get(&node) {
        Some(w) => (alert.node.as_str(), w),
        None => {
            let device = if alert.device.is_empty() {
                &alert.subject
            } else {
                &alert.device
            };
            let key = WindowKey {
                node: alert.node.clone(),
                device: device.clone(),
            };
            (device.as_str(), windows.get(&key)?)
        }
    };
    let until = humantime::format_rfc3339_seconds(window.until);
    let reason = if window.reason.is_empty() {
        "no reason given"
    } else {
        &window.reason
    };
    let by = if window.by.is_empty() {
        "unknown"
    } else {
        &window.by
    };
    Some(format!(
        "{subject} in maintenance until {until}: {reason} (by {by})"
    ))
}

/// The fleet's windows, per node, as of each node's last applied snapshot.
#[derive(Debug, Default)]
pub struct MaintenanceWindows {
    nodes: Mutex<BTreeMap<String, BTreeMap<WindowKey, Window>>>,
    changed: Notify,
}

impl MaintenanceWindows {
    /// A node's windows from its latest snapshot; wakes the reconciler if they changed.
    pub fn set(&self, node: &str, windows: BTreeMap<WindowKey, Window>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = match nodes.get(node) {
            Some(old) => *old != windows,
            None => !windows.is_empty(),
        };
        if windows.is_empty() {
            nodes.remove(node);
        } else {
            nodes.insert(node.to_string(), windows);
        }
        drop(nodes);
        if changed {
            self.changed.notify_one();
        }
    }

    /// A node the fleet forgot: its windows are gone.
    pub fn forget(&self, node: &str) {
        self.set(node, BTreeMap::new());
    }

    /// The node's windows (for NODE_STALE, which has no snapshot to read them from).
    pub fn of_node(&self, node: &str) -> BTreeMap<WindowKey, Window> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.get(node).cloned().unwrap_or_default()
    }

    /// Every window of the fleet.
    pub fn all(&self) -> BTreeMap<WindowKey, Window> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .values()
            .flat_map(|w| w.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    /// Resolves once the windows changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slurm_drain_is_a_window_held_while_reported_in_ten_minute_steps() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_123);
        let m = Maintenance {
            reason: "SLURM state drained".into(),
            by: "slurm".into(),
            source: "slurm".into(),
            ..Maintenance::default()
        };
        let w = window_of(&m, now).unwrap();
        assert!(w.until >= now + HELD_WINDOW_STEP && w.until <= now + 2 * HELD_WINDOW_STEP);
        assert_eq!(
            window_of(&m, now + Duration::from_secs(1)).unwrap().until,
            w.until
        );
        let operator_without_end = Maintenance {
            source: "operator".into(),
            ..m
        };
        assert!(window_of(&operator_without_end, now).is_none());
    }

    #[test]
    fn a_bogus_until_from_an_agent_is_refused_or_cut_never_formatted_as_is() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        assert_eq!(reported_time(ts(-5), now), None);
        assert_eq!(reported_time(None, now), None);
        let far = reported_time(ts(i64::MAX / 4), now);
        assert!(far.is_some_and(|t| t <= now + MAX_WINDOW), "{far:?}");
        let m = Maintenance {
            until: ts(400_000_000_000),
            reason: "r".into(),
            ..Maintenance::default()
        };
        let w = window_of(&m, now).unwrap();
        assert_eq!(w.until, now + MAX_WINDOW);
        let alert = Alert {
            node: "n1".into(),
            device: "d".into(),
            ..Alert::default()
        };
        let windows = BTreeMap::from([(
            WindowKey {
                node: "n1".into(),
                device: String::new(),
            },
            w,
        )]);
        assert!(suppression(&windows, &alert).is_some());
    }
    use health_proto::v1::{Device, DeviceIdentity};
    use std::time::Duration;

    fn maintenance(until: SystemTime) -> Maintenance {
        Maintenance {
            until: Some(until.into()),
            reason: "firmware update".into(),
            by: "uid 0".into(),
            ..Maintenance::default()
        }
    }

    fn alert(node: &str, subject: &str, device: &str) -> Alert {
        Alert {
            node: node.into(),
            subject: subject.into(),
            device: device.into(),
            ..Alert::default()
        }
    }

    #[test]
    fn a_device_window_suppresses_its_alerts_and_a_node_window_all() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let until = now + Duration::from_secs(3600);
        let mut snapshot = NodeSnapshot {
            devices: vec![Device {
                identity: Some(DeviceIdentity {
                    id: "loihi-0".into(),
                    ..DeviceIdentity::default()
                }),
                maintenance: Some(maintenance(until)),
                ..Device::default()
            }],
            ..NodeSnapshot::default()
        };
        let windows = windows_of("n1", &snapshot, now);
        assert_eq!(windows.len(), 1);
        let why = suppression(&windows, &alert("n1", "loihi-0", "loihi-0")).unwrap();
        assert!(
            why.starts_with("loihi-0 in maintenance until ")
                && why.ends_with(": firmware update (by uid 0)"),
            "{why}"
        );
        assert_eq!(
            suppression(&windows, &alert("n1", "loihi-1", "loihi-1")),
            None
        );
        assert_eq!(suppression(&windows, &alert("n1", "host", "")), None);
        assert_eq!(
            suppression(&windows, &alert("n2", "loihi-0", "loihi-0")),
            None
        );

        snapshot.maintenance = Some(maintenance(until));
        let windows = windows_of("n1", &snapshot, now);
        assert!(suppression(&windows, &alert("n1", "host", ""))
            .unwrap()
            .starts_with("n1 in maintenance"));
        // A window past its until no longer counts.
        assert!(windows_of("n1", &snapshot, until).is_empty());
    }

    #[tokio::test]
    async fn a_change_wakes_the_reader_and_the_same_windows_do_not() {
        let windows = MaintenanceWindows::default();
        let key = WindowKey {
            node: "n1".into(),
            device: String::new(),
        };
        let w = Window {
            until: SystemTime::now() + Duration::from_secs(60),
            reason: String::new(),
            by: String::new(),
            audit_hash: String::new(),
        };
        windows.set("n1", BTreeMap::from([(key.clone(), w.clone())]));
        windows.changed().await;
        windows.set("n1", BTreeMap::from([(key.clone(), w)]));
        let again = tokio::time::timeout(Duration::from_millis(20), windows.changed()).await;
        assert!(again.is_err(), "no change, no wake-up");
        assert_eq!(windows.all().len(), 1);
        windows.forget("n1");
        windows.changed().await;
        assert!(windows.all().is_empty());
    }
}
