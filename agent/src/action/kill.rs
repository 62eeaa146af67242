//! Killing a watched process: what on-call does with `kill PID` / `kill -9 PID`, with the
//! checks a person makes before doing it. Called only from [`crate::action::Actions`], so it
//! is recorded like every other action.
//!
//! Guards, in order: never pid 0/1 or the agent itself; the pid must belong to a process that a
//! `[[process]]` rule matches right now (the agent never signals what it does not watch); if
//! the caller gives the start time it saw, the process must still have it (pid reuse); a
//! zombie has already exited and is refused with the parent to signal instead. The start time
//! is checked again right before every signal. Waiting for the exit is bounded: TERM, then
//! (optionally) KILL after `escalate_after`, then a fixed grace.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::action::ActionError;
use crate::config::ProcessRule;
use crate::host::procwatch::scan::{self, Lookup, ProcessInfo};
use crate::model::Outcome;

/// How long to wait for an exit after the last signal.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Bound on one /proc read on the action path.
const READ_DEADLINE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);
pub const ESCALATE_MIN: Duration = Duration::from_millis(100);
pub const ESCALATE_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    Term,
    Kill,
}

impl KillSignal {
    pub fn as_str(self) -> &'static str {
        match self {
            KillSignal::Term => "TERM",
            KillSignal::Kill => "KILL",
        }
    }

    fn nix(self) -> Signal {
        match self {
            KillSignal::Term => Signal::SIGTERM,
            KillSignal::Kill => Signal::SIGKILL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KillRequest {
    pub pid: u32,
    pub signal: KillSignal,
    /// The start time (clock ticks since boot) the caller saw for this pid.
    pub start_ticks: Option<u64>,
    /// With TERM: send KILL if still running after this long.
    pub escalate_after: Option<Duration>,
}

impl KillRequest {
    pub fn describe(&self) -> String {
        let mut s = format!("kill-process {} {}", self.pid, self.signal.as_str());
        if let Some(d) = self.escalate_after {
            s.push_str(&format!(" (KILL after {})", humantime::format_duration(d)));
        }
        s
    }

    /// The record's subject before the process is identified.
    pub fn subject(&self) -> String {
        format!("process:{}", self.pid)
    }
}

/// What the action did, for the record and `ActionResult.process_kill`.
#[derive(Debug, Clone, PartialEq)]
pub struct KillReport {
    pub pid: u32,
    pub signals_sent: Vec<&'static str>,
    pub exited: bool,
    pub before: ProcessInfo,
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ActionError> {
    match tokio::time::timeout(READ_DEADLINE, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ActionError::NotPossible(format!("{what}: {e}"))),
        Err(_) => Err(ActionError::NotPossible(format!(
            "{what}: /proc did not answer within {READ_DEADLINE:?}"
        ))),
    }
}

/// Whether the process that started at `start_ticks` is still running (a zombie has exited).
async fn still_running(pid: i32, start_ticks: u64) -> bool {
    match blocking("reading the process state", move || scan::state_of(pid)).await {
        Ok(Some((state, started))) => started == start_ticks && !matches!(state, 'Z' | 'X'),
        Ok(None) => false,
        // Unreadable: assume it runs, so the outcome does not claim an exit it did not see.
        Err(_) => true,
    }
}

/// Polls until the process is gone or `limit` passes; true if it exited.
async fn wait_exit(pid: i32, start_ticks: u64, limit: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if !still_running(pid, start_ticks).await {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Checks the request against the rules and the process as it is now.
pub async fn verify(rules: &[ProcessRule], req: &KillRequest) -> Result<ProcessInfo, ActionError> {
    if let Some(d) = req.escalate_after {
        if req.signal == KillSignal::Kill {
            return Err(ActionError::InvalidArgument(
                "escalate_after: only with TERM (KILL cannot be escalated)".into(),
            ));
        }
        if !(ESCALATE_MIN..=ESCALATE_MAX).contains(&d) {
            return Err(ActionError::InvalidArgument(format!(
                "escalate_after: expected between {} and {}, got {}",
                humantime::format_duration(ESCALATE_MIN),
                humantime::format_duration(ESCALATE_MAX),
                humantime::format_duration(d)
            )));
        }
    }
    let pid = i32::try_from(req.pid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| {
            ActionError::InvalidArgument(format!(
                "pid: expected a process id above 1, got {}",
                req.pid
            ))
        })?;
    if pid == std::process::id() as i32 {
        return Err(ActionError::NotPossible(format!(
            "pid {pid} is the agent itself"
        )));
    }
    let rules = rules.to_vec();
    let found = blocking("reading the process", move || scan::lookup(pid, &rules))
        .await?
        .map_err(|e| ActionError::NotPossible(format!("reading /proc: {e}")))?;
    let info = match found {
        Lookup::Gone => {
            return Err(ActionError::NotPossible(format!("no process {pid}")));
        }
        Lookup::Unwatched { comm, cmdline } => {
            return Err(ActionError::NotPossible(format!(
                "pid {pid} ({comm}: {cmdline:?}) matches no [[process]] rule: the agent only signals processes it watches"
            )));
        }
        Lookup::Watched(info) => info,
    };
    if let Some(expected) = req.start_ticks {
        if expected != info.start_ticks {
            return Err(ActionError::NotPossible(format!(
                "pid {pid} now started at tick {}, not {expected}: the pid was reused by another process",
                info.start_ticks
            )));
        }
    }
    if info.is_zombie() {
        return Err(ActionError::NotPossible(format!(
            "pid {pid} ({}) has already exited (zombie); its parent pid {} must reap it: signal or restart the parent",
            info.comm, info.ppid
        )));
    }
    Ok(info)
}

/// Sends one signal if the process is still the one verified.
async fn send(info: &ProcessInfo, sig: KillSignal) -> Result<bool, String> {
    if !still_running(info.pid, info.start_ticks).await {
        return Ok(false);
    }
    match kill(Pid::from_raw(info.pid), sig.nix()) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(Errno::EPERM) => Err(format!(
            "sending {} to pid {}: permission denied (the agent needs CAP_KILL to signal another user's process)",
            sig.as_str(),
            info.pid
        )),
        Err(e) => Err(format!("sending {} to pid {}: {e}", sig.as_str(), info.pid)),
    }
}

/// Runs a verified kill to its end; the outcome says whether the process exited.
pub async fn execute(info: ProcessInfo, req: &KillRequest) -> (Outcome, String, KillReport) {
    let t0 = Instant::now();
    let mut report = KillReport {
        pid: req.pid,
        signals_sent: Vec::new(),
        exited: false,
        before: info.clone(),
    };
    let label = format!("pid {} ({}, rule {})", info.pid, info.comm, info.name);
    let mut steps = vec![(req.signal, req.escalate_after.unwrap_or(EXIT_GRACE))];
    if req.escalate_after.is_some() {
        steps.push((KillSignal::Kill, EXIT_GRACE));
    }
    for (sig, wait) in steps {
        match send(&info, sig).await {
            Ok(true) => report.signals_sent.push(sig.as_str()),
            Ok(false) => {
                report.exited = true;
                break;
            }
            Err(e) => return (Outcome::Failed, e, report),
        }
        if wait_exit(info.pid, info.start_ticks, wait).await {
            report.exited = true;
            break;
        }
    }
    let sent = if report.signals_sent.is_empty() {
        "nothing (it had already exited)".to_string()
    } else {
        report.signals_sent.join(" then ")
    };
    let took = t0.elapsed().as_secs_f64();
    if report.exited {
        (
            Outcome::Succeeded,
            format!("{label}: sent {sent}; exited after {took:.2} s"),
            report,
        )
    } else {
        (
            Outcome::Failed,
            format!(
                "{label}: sent {sent}; still running after {took:.1} s (try --signal kill or --escalate-after)"
            ),
            report,
        )
    }
}
