//! `agent-ctl --collector ADDR history`: what happened on the fleet, from the collector's
//! history database: conditions (from when to when), alert transitions and actions, newest
//! first, as a table (the JSON is in [`crate::json`]).

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

/// The request for the filters given; `since` is counted back from `now`.
pub fn request(
    node: Option<&str>,
    device: Option<&str>,
    since: Option<Duration>,
    limit: u32,
    now: SystemTime,
) -> pb::QueryHistoryRequest {
    pb::QueryHistoryRequest {
        node: node.unwrap_or_default().to_string(),
        device: device.unwrap_or_default().to_string(),
        since: since
            .and_then(|back| now.checked_sub(back))
            .map(prost_types::Timestamp::from),
        limit,
        ..pb::QueryHistoryRequest::default()
    }
}

pub(crate) fn kind(k: pb::HistoryKind) -> &'static str {
    match k {
        pb::HistoryKind::Condition => "condition",
        pb::HistoryKind::Alert => "alert",
        pb::HistoryKind::Action => "action",
        pb::HistoryKind::Maintenance => "maintenance",
        pb::HistoryKind::Silence => "silence",
        pb::HistoryKind::Escalation => "escalation",
        pb::HistoryKind::Restart => "restart",
        pb::HistoryKind::Note => "note",
        pb::HistoryKind::Unspecified => "-",
    }
}

pub(crate) fn severity(entry: &pb::HistoryEntry) -> String {
    match entry.severity() {
        pb::Severity::Unspecified => "-".to_string(),
        s => render::severity(s),
    }
}

/// What the entry is about, in a few words: the message, and for actions who asked.
fn detail(entry: &pb::HistoryEntry) -> String {
    let mut text = entry.message.clone();
    if entry.kind() == pb::HistoryKind::Action {
        text = format!("{} ({} ms, by {})", text, entry.duration_ms, entry.caller)
            .trim_start()
            .to_string();
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
                e.status.clone(),
                detail(e),
            ]
        })
        .collect();
    render::table(
        &[
            "AT", "KIND", "NODE", "SUBJECT", "NAME", "SEVERITY", "STATUS", "DETAIL",
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
        let r = request(Some("n1"), None, Some(Duration::from_secs(3600)), 5, now);
        assert_eq!(r.node, "n1");
        assert_eq!(r.since.map(|t| t.seconds), Some(6_400));
        assert_eq!(r.limit, 5);
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
            ..Default::default()
        };
        let text = table(&[entry]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("THERMAL_CRITICAL"), "{text}");
        assert!(text.contains("CRITICAL"), "{text}");
    }
}
