//! systemd service notifications for `Type=notify` units with `WatchdogSec=`.
//!
//! READY=1 once the daemon accepts connections (units ordered after it start only then),
//! STOPPING=1 when a shutdown begins, WATCHDOG=1 from a loop whose stalling means the daemon is
//! wedged, so that systemd restarts it.
//!
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op. A failure to notify is logged,
//! never fatal: a daemon's job is its devices or its fleet, not the init system.

use std::time::Duration;

use sd_notify::NotifyState;

/// The shortest ping interval handed out: a `WatchdogSec=` below 100 ms would otherwise make a
/// daemon spin on pings.
const SHORTEST_PING_INTERVAL: Duration = Duration::from_millis(50);

/// The daemon is listening and serving.
pub fn ready() {
    notify(&[NotifyState::Ready], "READY=1");
}

/// A shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping], "STOPPING=1");
}

/// The daemon is alive; sent from the loop whose progress proves it.
pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog], "WATCHDOG=1");
}

/// How often to send [`watchdog_ping`], if systemd expects pings from this process: half the
/// configured timeout, as systemd recommends, so one late ping is not yet a restart.
pub fn watchdog_ping_interval() -> Option<Duration> {
    let mut usec = 0_u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some((Duration::from_micros(usec) / 2).max(SHORTEST_PING_INTERVAL))
    } else {
        None
    }
}

fn notify(state: &[NotifyState<'_>], what: &str) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, notification = what, "could not notify systemd");
    }
}
