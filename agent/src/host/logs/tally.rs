//! One rule's counts: lines read, matches, the times of the last `count` matches (all the
//! window test needs, so memory is bounded by `count` whatever the log rate), and the last
//! matching line, capped. Shared between whoever reads the rule's source (the file pass, a
//! journalctl task) and the publisher, under a short lock.

use std::collections::VecDeque;
use std::time::SystemTime;

use health_hal::{Condition, ConditionCode};

use crate::config::LogRule;

/// The last matching line is kept (and shown) up to this many bytes.
pub const LAST_MATCH_MAX: usize = 512;

#[derive(Debug, Clone, Default)]
pub struct LastMatch {
    pub line: String,
    pub at: Option<SystemTime>,
    /// The file (or journal unit) it came from.
    pub source: String,
}

#[derive(Debug, Default)]
pub struct RuleTally {
    pub lines_total: u64,
    pub matches_total: u64,
    pub bytes_skipped: u64,
    /// Times of the newest matches, oldest first, at most `count` of them.
    recent: VecDeque<SystemTime>,
    pub last: LastMatch,
    /// What the rule follows now: the files its globs found, or the journal unit.
    pub sources: Vec<String>,
}

/// `s` cut to at most `max` bytes at a character boundary, marked when cut.
fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", s.get(..cut).unwrap_or_default())
}

impl RuleTally {
    /// One line from `source`. Invalid UTF-8 is matched as the replacement character, so a
    /// binary line is counted and cannot stop the follower.
    pub fn line(&mut self, rule: &LogRule, line: &[u8], source: &str, now: SystemTime) {
        self.lines_total += 1;
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if !rule.pattern.is_match(text) {
            return;
        }
        self.matches_total += 1;
        if self.recent.len() >= rule.count as usize {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.last = LastMatch {
            line: capped(text, LAST_MATCH_MAX),
            at: Some(now),
            source: source.to_string(),
        };
    }

    /// Matches within the rule's window (at most `count`: only that many are kept).
    pub fn in_window(&self, rule: &LogRule, now: SystemTime) -> u64 {
        self.recent
            .iter()
            .filter(|t| {
                now.duration_since(**t)
                    .map_or(true, |age| age <= rule.window)
            })
            .count() as u64
    }

    /// LOG_PATTERN while the window holds `count` matches.
    pub fn condition(&self, rule: &LogRule, now: SystemTime) -> Option<Condition> {
        let n = self.in_window(rule, now);
        if n < u64::from(rule.count) {
            return None;
        }
        Some(Condition::new(
            ConditionCode::LogPattern,
            rule.severity,
            rule.subject(),
            format!(
                "{n} line(s) matching /{}/ within {} in {}; last: {}",
                rule.pattern.as_str(),
                humantime::format_duration(rule.window),
                self.last.source,
                self.last.line
            ),
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogSource;
    use health_hal::Severity;
    use std::time::Duration;

    fn rule(count: u32) -> LogRule {
        LogRule {
            name: "spice".into(),
            source: LogSource::Journal("x.service".into()),
            pattern: regex::Regex::new("(?i)error").unwrap(),
            count,
            window: Duration::from_secs(60),
            severity: Severity::Critical,
            max_line_bytes: 1024,
        }
    }

    #[test]
    fn count_within_window_raises_and_ageing_clears() {
        let r = rule(3);
        let mut t = RuleTally::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (i, l) in ["ERROR one", "fine", "error two"].iter().enumerate() {
            t.line(
                &r,
                l.as_bytes(),
                "/a.err",
                t0 + Duration::from_secs(i as u64),
            );
        }
        assert!(
            t.condition(&r, t0 + Duration::from_secs(5)).is_none(),
            "2 of 3"
        );
        t.line(&r, b"Error three\r", "/b.err", t0 + Duration::from_secs(10));
        let c = t
            .condition(&r, t0 + Duration::from_secs(11))
            .expect("3 within a minute");
        assert_eq!(
            (c.code, c.severity, c.subject.as_str()),
            (ConditionCode::LogPattern, Severity::Critical, "log:spice")
        );
        assert!(
            c.message.contains("in /b.err; last: Error three"),
            "{}",
            c.message
        );
        assert!(!c.message.contains('\r'));
        assert_eq!((t.lines_total, t.matches_total), (4, 3));
        // The first match leaves the window after 60 s.
        assert!(t.condition(&r, t0 + Duration::from_secs(61)).is_none());
        assert_eq!(t.in_window(&r, t0 + Duration::from_secs(61)), 2);
    }

    #[test]
    fn memory_is_bounded_by_count_and_invalid_utf8_matches() {
        let r = rule(2);
        let mut t = RuleTally::default();
        let now = SystemTime::now();
        for _ in 0..10_000 {
            t.line(&r, b"\xff\xfe error \xc3", "/x", now);
        }
        assert_eq!(t.recent.len(), 2);
        assert_eq!(t.matches_total, 10_000);
        assert!(t.last.line.contains("\u{fffd}"), "{}", t.last.line);
        let long = format!("error {}", "é".repeat(1000));
        t.line(&r, long.as_bytes(), "/x", now);
        assert!(t.last.line.len() <= LAST_MATCH_MAX + "…".len());
    }
}
