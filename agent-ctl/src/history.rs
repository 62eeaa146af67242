//! `agent-ctl --collector ADDR history`: what happened on the fleet, from the collector's
//! history database: conditions (from when to when), alert transitions (with their
//! priority), actions, escalations, maintenance, silences and restarts, newest first (or
//! `--oldest-first`), between `--since` and `--until`, as a table (the JSON is in
//! [`crate::json`]).

use std::time::{Duration, SystemTime};

use health_proto::v1 as pb;

use crate::render;

/// `--since 1h`: a look-back duration. A clap value parser, so a bad value is a usage error
/// (exit 2) with the reason.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "expected a look-back duration such as 30m, 1h or 7d, found {text:?}"
        )),
    }
}

/// `--since` / `--until`: a look-back duration or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Ago(Duration),
    At(SystemTime),
}

impl When {
    fn at(self, now: SystemTime) -> Option<SystemTime> {
        match self {
            When::Ago(back) => now.checked_sub(back),
            When::At(at) => Some(at),
        }
    }
}

/// `--since 1h` or `--until 2026-12-07T05:00:00Z`: a clap value parser.
pub fn parse_when(text: &str) -> Result<When, String> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text.trim()) {
        return Ok(When::At(at));
    }
    parse_since(text).map(When::Ago).map_err(|_| {
        format!(
            "expected a look-back duration such as 30m, 1h or 7d, or an RFC 3339 time such as \
             2026-12-07T05:00:00Z, found {text:?}"
        )
    })
}

/// The filters of `agent-ctl history`.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub node: Option<&'a str>,
    pub device: Option<&'a str>,
    pub since: Option<When>,
    /// Exclusive.
    pub until: Option<When>,
    pub oldest_first: bool,
    pub limit: u32,
}

/// The request for the filters given; durations are counted back from `now`.
pub fn request(filter: &Filter<'_>, now: SystemTime) -> pb::QueryHistoryRequest {
    let at = |when: Option<When>| {
        when.and_then(|when| when.at(now))
            .map(prost_types::Timestamp::from)
    };
    pb::QueryHistoryRequest {
        node: filter.node.unwrap_or_default().to_string(),
        device: filter.device.unwrap_or_default().to_string(),
        since: at(filter.since),
        until: at(filter.until),
        limit: filter.limit,
        oldest_first: filter.oldest_first,
    }
}

pub(crate) use health_view::names::{history_kind as kind, history_severity as severity, priority};

/// What the entry is about, in a few words: the message, and for actions who asked.
fn detail(entry: &pb::HistoryEntry) -> String {
    let mut text = entry.message.clone();
    if entry.kind() == pb::HistoryKind::Action {
        text = format!("{} ({} ms, by {})", text, entry.duration_ms, entry.caller)
            .trim_start()
            .to_string();
    }
    if !entry.audit_hash.is_empty() {
        text = format!("{text} [audit {}]", entry.audit_hash);
    }
    if entry.ended_at.is_some() {
        text = format!("{text} [ended {}]", render::time(&entry.ended_at));
    }
    text
}

pub fn table(entries: &[pb::HistoryEntry]) -> String {
    if entries.is_empty() {
        return "no history matches\n".to_string();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                render::time(&e.at),
                kind(e.kind()).to_string(),
                e.node.clone(),
                e.subject.clone(),
                e.name.clone(),
                severity(e),
                priority(&e.priority, false),
                e.status.clone(),
                detail(e),
            ]
        })
        .collect();
    render::table(
        &[
            "AT", "KIND", "NODE", "SUBJECT", "NAME", "SEVERITY", "PRIORITY", "STATUS", "DETAIL",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_names_what_it_expected() {
        assert_eq!(parse_since("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * 86400)));
        let error = parse_since("yesterday").expect_err("not a duration");
        assert!(error.contains("30m, 1h or 7d"), "{error}");
        assert!(error.contains("\"yesterday\""), "{error}");
        assert!(parse_since("0s").is_err());
    }

    #[test]
    fn since_counts_back_from_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let filter = Filter {
            node: Some("n1"),
            since: Some(When::Ago(Duration::from_secs(3600))),
            limit: 5,
            ..Filter::default()
        };
        let r = request(&filter, now);
        assert_eq!(r.node, "n1");
        assert_eq!(r.since.map(|t| t.seconds), Some(6_400));
        assert_eq!(r.until, None);
        assert!(!r.oldest_first);
        assert_eq!(r.limit, 5);
    }

    #[test]
    fn until_and_since_take_durations_or_rfc3339_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_when("1970-01-01T00:16:40Z"),
            Ok(When::At(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)
            ))
        );
        assert_eq!(parse_when("1h"), Ok(When::Ago(Duration::from_secs(3600))));
        let error = parse_when("yesterday").expect_err("neither");
        assert!(error.contains("RFC 3339"), "{error}");
        let filter = Filter {
            since: parse_when("1970-01-01T00:16:40Z").ok(),
            until: parse_when("1h").ok(),
            oldest_first: true,
            ..Filter::default()
        };
        let r = request(&filter, now);
        assert_eq!(r.since.map(|t| t.seconds), Some(1_000));
        assert_eq!(r.until.map(|t| t.seconds), Some(6_400));
        assert!(r.oldest_first);
    }

    #[test]
    fn the_table_has_one_row_per_entry() {
        let entry = pb::HistoryEntry {
            kind: pb::HistoryKind::Condition as i32,
            node: "n1".to_string(),
            subject: "loihi-0".to_string(),
            name: "THERMAL_CRITICAL".to_string(),
            severity: pb::Severity::Critical as i32,
            status: "ENDED".to_string(),
            message: "91 C".to_string(),
            priority: "P0".to_string(),
            audit_hash: "abc123".to_string(),
            ..Default::default()
        };
        let text = table(&[entry]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("THERMAL_CRITICAL"), "{text}");
        assert!(text.contains("CRITICAL"), "{text}");
        assert!(text.contains("PRIORITY"), "{text}");
        assert!(text.contains(" P0 "), "{text}");
        assert!(text.contains("[audit abc123]"), "{text}");
    }
}
