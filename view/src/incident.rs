//! The post-mortem skeleton the runbooks ask for, as markdown, written from one `Incident`
//! (the JSON export is `json::incident`), so `agent-ctl incident ID --export markdown` and the
//! status page's export link give the same text.

use std::fmt::Write as _;

use health_proto::v1 as pb;

use crate::names::{self, duration_ms, incident_state as state};

/// The runbooks' post-mortem skeleton, filled with what the collector knows; root cause and
/// lessons are left for a person.
pub fn markdown(i: &pb::Incident) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Incident {}: {}\n", i.id, i.detection);
    let _ = writeln!(md, "## Summary\n\n{}\n", i.summary);
    let _ = writeln!(md, "- State: {}", state(i));
    if !i.priority.is_empty() {
        let _ = writeln!(md, "- Priority: {}", i.priority);
    }
    let _ = writeln!(md, "- Node: {}", i.node);
    let _ = writeln!(md, "\n## Impact\n");
    let _ = writeln!(md, "- Subjects: {}", i.subjects.join(", "));
    let _ = writeln!(md, "- Alerts: {}", i.alerts.join(", "));
    let _ = writeln!(
        md,
        "- Opened (first alert firing): {}",
        names::time(&i.opened_at)
    );
    let _ = writeln!(
        md,
        "- Resolved (last alert resolved): {}",
        names::time(&i.resolved_at)
    );
    let _ = writeln!(md, "- Closed: {}", names::time(&i.closed_at));
    let _ = writeln!(md, "\n## Detection\n");
    let _ = writeln!(md, "- Alert: {}", i.detection);
    let _ = writeln!(
        md,
        "- First condition: {}",
        names::time(&i.first_condition_at)
    );
    let _ = writeln!(md, "- First firing: {}", names::time(&i.opened_at));
    let _ = writeln!(
        md,
        "- Time to detect: {} ({} ms)",
        duration_ms(i.time_to_detect_ms),
        i.time_to_detect_ms
    );
    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(md, "| Time (UTC) | Actor | What | Outcome | Audit hash |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for t in &i.timeline {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            names::time(&t.at),
            cell(&t.actor),
            cell(&t.what),
            cell(&t.outcome),
            if t.audit_hash.is_empty() {
                "-".to_string()
            } else {
                format!("`{}`", t.audit_hash)
            }
        );
    }
    let _ = writeln!(md, "\n## Resolution\n");
    if i.resolution.is_empty() {
        let _ = writeln!(md, "- Step that fixed it: none recorded");
    } else {
        let _ = writeln!(md, "- Step that fixed it: {}", i.resolution);
    }
    if i.resolved_at.is_some() {
        let _ = writeln!(
            md,
            "- Time to resolve: {} ({} ms)",
            duration_ms(i.time_to_resolve_ms),
            i.time_to_resolve_ms
        );
    } else {
        let _ = writeln!(md, "- Time to resolve: not resolved yet");
    }
    let _ = writeln!(md, "\n## Root cause\n\n_To be written by a person._");
    let _ = writeln!(md, "\n## Lessons learned\n\n_To be written by a person._");
    let _ = writeln!(md, "\n## Notes\n");
    if i.notes.is_empty() {
        let _ = writeln!(
            md,
            "_None yet: `agent-ctl incident {} note \"...\"`._",
            i.id
        );
    }
    for n in &i.notes {
        let _ = writeln!(md, "- {} ({}): {}", names::time(&n.at), n.by, cell(&n.text));
    }
    md
}

/// A markdown table cell: one line, no column breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn the_markdown_export_has_every_section_and_each_step_with_its_hash() {
        let incident = pb::Incident {
            id: "inc-1765000005000-n1".into(),
            node: "n1".into(),
            open: false,
            opened_at: ts(1_765_000_005),
            resolved_at: ts(1_765_000_041),
            closed_at: ts(1_765_000_341),
            priority: "P0".into(),
            subjects: vec!["loihi-0".into()],
            alerts: vec!["DeviceOverheating".into()],
            detection: "DeviceOverheating on loihi-0".into(),
            first_condition_at: ts(1_765_000_000),
            time_to_detect_ms: 5_000,
            time_to_resolve_ms: 36_000,
            resolution: "set-power-limit 70% on loihi-0 by policy:thermal (audit abc)".into(),
            timeline: vec![pb::TimelineEntry {
                at: ts(1_765_000_010),
                actor: "policy:thermal".into(),
                what: "set-power-limit 70% loihi-0: limit | set".into(),
                outcome: "SUCCEEDED".into(),
                audit_hash: "abc".into(),
                kind: pb::HistoryKind::Action as i32,
                subject: "loihi-0".into(),
            }],
            notes: vec![],
            summary: "DeviceOverheating on loihi-0 on n1".into(),
        };
        let md = markdown(&incident);
        for section in [
            "## Summary",
            "## Impact",
            "## Detection",
            "## Timeline",
            "## Resolution",
            "## Root cause",
            "## Lessons learned",
        ] {
            assert!(md.contains(section), "{section} missing:\n{md}");
        }
        assert!(md.contains("- Time to detect: 5s (5000 ms)"), "{md}");
        assert!(md.contains("- Time to resolve: 36s (36000 ms)"), "{md}");
        assert!(md.contains(
            "| 2025-12-06T05:46:50Z | policy:thermal | set-power-limit 70% loihi-0: limit \\| set | SUCCEEDED | `abc` |"
        ), "{md}");
    }
}
