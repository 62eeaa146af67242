//! Turns SIGTERM and SIGINT into one graceful shutdown.
//!
//! The first signal cancels the shared token: the listener closes, every Report and Watch
//! stream ends, the sweeper stops. Later signals are only logged, so an impatient second
//! Ctrl-C cannot interrupt the shutdown half-way; the drain itself is bounded by the server.

use std::io;

use health_daemon::systemd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Installs the signal handlers (failing now, not at the first signal) and returns the task
/// that waits for them.
pub fn on_signal(shutdown: CancellationToken) -> io::Result<JoinHandle<()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                Some(()) = terminate.recv() => "SIGTERM",
                Some(()) = interrupt.recv() => "SIGINT",
                else => return,
            };
            if first {
                first = false;
                tracing::info!(signal = name, "shutting down");
                systemd::stopping();
                shutdown.cancel();
            } else {
                tracing::info!(signal = name, "already shutting down");
            }
        }
    }))
}
