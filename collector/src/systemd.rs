//! systemd service notifications (`Type=notify`, `WatchdogSec=`).
//!
//! READY=1 is sent once the listener is bound, so units ordered after the collector start only
//! when it accepts connections. WATCHDOG=1 is sent by the sweeper on every sweep: if the
//! runtime wedges, the sweeps stop, the pings stop, and systemd restarts the service.
//! STOPPING=1 is sent when a shutdown signal arrives.
//!
//! Outside systemd (no NOTIFY_SOCKET) every call here is a no-op. A failure to notify is
//! logged, never fatal: the collector's job is the fleet, not the init system.

use std::time::Duration;

use sd_notify::NotifyState;

/// The listener is bound and the services are registered.
pub fn ready() {
    notify(&[NotifyState::Ready], "READY=1");
}

/// A shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping], "STOPPING=1");
}

/// The service is alive; called from the sweeper loop.
pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog], "WATCHDOG=1");
}

/// How often to ping the watchdog, if systemd expects pings for this process: half the
/// configured timeout, as systemd recommends, so one late ping is not yet a restart.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0_u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

fn notify(state: &[NotifyState<'_>], what: &str) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, notification = what, "could not notify systemd");
    }
}
