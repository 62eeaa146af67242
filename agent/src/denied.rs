//! Repeated PERMISSION_DENIED as a host condition: ACCESS_DENIED (warning) once
//! `access_denied_count` refusals fall within `access_denied_window`, naming the callers and
//! the count; it clears by itself once the window has passed without enough of them.
//!
//! Someone without the role who keeps trying to reset devices is something an operator should
//! see on the node (and be alerted to), not only find in the audit log later. Every place that
//! refuses a caller for its role notes it here: `wire::authn` (no role at all), the action path
//! and the remediation controls (below operator). The node shows the condition with the
//! host's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use health_hal::{Condition, ConditionCode, Severity};

use crate::config::AccessDeniedLimit;

/// Most refusals remembered: the count a condition needs is configured, but a flood must not
/// grow memory.
const KEEP: usize = 10_000;

#[derive(Debug)]
pub struct DeniedCallers {
    limit: AccessDeniedLimit,
    /// (when, who), oldest first.
    seen: Mutex<VecDeque<(SystemTime, String)>>,
}

impl DeniedCallers {
    pub fn new(limit: AccessDeniedLimit) -> DeniedCallers {
        DeniedCallers {
            limit,
            seen: Mutex::new(VecDeque::new()),
        }
    }

    /// One refusal of `caller`.
    pub fn note(&self, caller: &str) {
        self.note_at(caller, SystemTime::now());
    }

    fn note_at(&self, caller: &str, at: SystemTime) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() == KEEP {
            seen.pop_front();
        }
        seen.push_back((at, caller.to_string()));
    }

    /// ACCESS_DENIED about `host` while the window holds enough refusals.
    pub fn condition(&self, now: SystemTime) -> Option<Condition> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.limit.window;
        while seen
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t).unwrap_or_default() > window)
        {
            seen.pop_front();
        }
        if seen.len() < self.limit.count as usize {
            return None;
        }
        // A map, not a scan per entry: a flood from many connections (each its own port) is
        // exactly when this runs with the most entries.
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (_, who) in seen.iter() {
            *counts.entry(who.as_str()).or_default() += 1;
        }
        let mut callers: Vec<(&str, usize)> = counts.into_iter().collect();
        callers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let named: Vec<String> = callers
            .iter()
            .take(5)
            .map(|(c, n)| format!("{c} ({n})"))
            .collect();
        let more = callers.len().saturating_sub(named.len());
        let since = seen.front().map_or(now, |(t, _)| *t);
        Some(Condition::new(
            ConditionCode::AccessDenied,
            Severity::Warning,
            "host",
            format!(
                "{} calls refused with PERMISSION_DENIED within {}: {}{}",
                seen.len(),
                humantime::format_duration(window),
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
            since,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn raised_at_the_count_naming_callers_and_cleared_after_the_window() {
        let d = DeniedCallers::new(AccessDeniedLimit {
            count: 3,
            window: Duration::from_secs(60),
        });
        let t0 = SystemTime::now();
        d.note_at("uid 1000", t0);
        d.note_at("uid 1000", t0);
        assert!(d.condition(t0).is_none(), "below the count");
        d.note_at("tls 10.0.0.9:5000 (no client certificate)", t0);
        let c = d.condition(t0).unwrap();
        assert_eq!(c.code, ConditionCode::AccessDenied);
        assert_eq!(c.severity, Severity::Warning);
        assert!(c.message.starts_with("3 calls refused"), "{}", c.message);
        assert!(c.message.contains("uid 1000 (2)"), "{}", c.message);
        assert!(c.message.contains("tls 10.0.0.9"), "{}", c.message);
        assert!(d.condition(t0 + Duration::from_secs(61)).is_none());
    }
}
