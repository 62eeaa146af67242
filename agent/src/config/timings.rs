//! A device's (or a discovery rule's) poll interval and supervisor deadlines, the deadlines
//! fitted to its backend.
//!
//! The supervisor cancels a read or an action at its deadline. A deadline shorter than the
//! backend's own protocol timeouts would cut the backend off before it can say what is wrong
//! (and, for a power cycle or a PCI remove/rescan, half-way through the action), so each
//! backend states its floor ([`health_hal::MinDeadlines`]) and a deadline left unset rises to
//! it, while one set shorter is refused.

use std::time::Duration;

use health_daemon::FieldError;

use super::check::{duration, ms, secs};
use super::Backend;

/// The three timings of one device, as checked and fitted.
pub(super) struct Timings {
    pub(super) poll_interval: Duration,
    pub(super) deadline: Duration,
    pub(super) action_deadline: Duration,
}

/// The three timing keys as written: `poll_interval`, `deadline`, `action_deadline`.
pub(super) struct RawTimings<'a> {
    pub(super) poll_interval: Option<&'a str>,
    pub(super) deadline: Option<&'a str>,
    pub(super) action_deadline: Option<&'a str>,
}

/// Checks the timings under `k("...")` and fits the deadlines to `backend`.
pub(super) fn timings(
    k: &dyn Fn(&str) -> String,
    backend: &Backend,
    raw: RawTimings<'_>,
) -> Result<Timings, FieldError> {
    let poll_interval = duration(
        &k("poll_interval"),
        raw.poll_interval,
        secs(1),
        ms(50),
        secs(3600),
    )?;
    let d = duration(&k("deadline"), raw.deadline, secs(2), ms(10), secs(300))?;
    let a = duration(
        &k("action_deadline"),
        raw.action_deadline,
        secs(60),
        ms(100),
        secs(3600),
    )?;
    let (deadline, action_deadline) = fit_deadlines(
        k,
        backend,
        (d, raw.deadline.is_some()),
        (a, raw.action_deadline.is_some()),
    )?;
    Ok(Timings {
        poll_interval,
        deadline,
        action_deadline,
    })
}

/// Defaults the deadlines a device did not set to what its backend needs (at least the usual
/// 2 s / 60 s), and refuses ones that were set shorter, naming the key and the reason.
fn fit_deadlines(
    k: &dyn Fn(&str) -> String,
    backend: &Backend,
    (deadline, deadline_set): (Duration, bool),
    (action, action_set): (Duration, bool),
) -> Result<(Duration, Duration), FieldError> {
    let need = backend.min_deadlines();
    let fmt = |d: Duration| {
        humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
    };
    let fit =
        |key: &str, set: bool, have: Duration, need: Duration, what: &str| match (set, have < need)
        {
            (true, true) => Err(FieldError::new(
                k(key),
                format!(
                    "expected at least {} (the {} backend's {what}), found {}",
                    fmt(need),
                    backend.name(),
                    fmt(have)
                ),
            )),
            (false, true) => Ok(need),
            _ => Ok(have),
        };
    Ok((
        fit(
            "deadline",
            deadline_set,
            deadline,
            need.read,
            "own timeouts",
        )?,
        fit(
            "action_deadline",
            action_set,
            action,
            need.action,
            "worst-case action",
        )?,
    ))
}
