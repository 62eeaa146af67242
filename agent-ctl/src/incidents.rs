//! `incidents`, `incident ID`, `incident ID note TEXT` and `incident ID --export`: the
//! collector's incidents (built from its history) and the post-mortem skeleton the runbooks
//! ask for, written from one `Incident` so the markdown and the JSON cannot disagree.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use health_proto::v1 as pb;

use crate::invocation::Invocation;
use crate::{json, render};

/// `--export` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    Markdown,
    Json,
}

pub(crate) async fn list(
    ctl: &mut Invocation,
    open_only: bool,
    since: Option<Duration>,
    node: Option<&str>,
    limit: u32,
) -> anyhow::Result<()> {
    let request = ctl.req(pb::ListIncidentsRequest {
        open_only,
        since: since
            .and_then(|back| SystemTime::now().checked_sub(back))
            .map(prost_types::Timestamp::from),
        node: node.unwrap_or_default().to_string(),
        limit,
    });
    let mut collector = ctl.collector().await?;
    let r = collector.list_incidents(request).await?.into_inner();
    ctl.show_list(&r.incidents, json::incident, table)
}

pub(crate) async fn show(
    ctl: &mut Invocation,
    id: &str,
    export: Option<ExportFormat>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let request = ctl.req(pb::GetIncidentRequest { id: id.to_string() });
    let mut collector = ctl.collector().await?;
    let incident = collector.get_incident(request).await?.into_inner();
    let text = match export {
        None => return ctl.show(&incident, json::incident, timeline_text),
        Some(ExportFormat::Markdown) => markdown(&incident),
        Some(ExportFormat::Json) => format!("{:#}\n", json::incident(&incident)),
    };
    match out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

pub(crate) async fn note(ctl: &mut Invocation, id: &str, text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        anyhow::bail!("the note is empty: write what you want the post-mortem to say");
    }
    let request = ctl.req(pb::AddIncidentNoteRequest {
        id: id.to_string(),
        text: text.to_string(),
    });
    let mut collector = ctl.collector().await?;
    let incident = collector.add_incident_note(request).await?.into_inner();
    ctl.show(&incident, json::incident, |i| {
        format!("note added to {} ({} notes)", i.id, i.notes.len())
    })
}

fn state(i: &pb::Incident) -> &'static str {
    match (i.open, i.resolved_at.is_some()) {
        (false, _) => "CLOSED",
        (true, true) => "RESOLVED",
        (true, false) => "OPEN",
    }
}

fn duration_ms(ms: u64) -> String {
    // Milliseconds under a minute (a time to detect is often well under a second), whole
    // seconds above: a post-mortem reads "2m 5s", not "2m 5s 12ms".
    let shown = if ms < 60_000 {
        Duration::from_millis(ms)
    } else {
        Duration::from_secs(ms / 1000)
    };
    humantime::format_duration(shown).to_string()
}

fn table(incidents: &[pb::Incident]) -> String {
    if incidents.is_empty() {
        return "no incidents match\n".to_string();
    }
    let mut rows = Vec::new();
    for i in incidents {
        rows.push(vec![
            i.id.clone(),
            state(i).to_string(),
            if i.priority.is_empty() {
                "-".into()
            } else {
                i.priority.clone()
            },
            render::time(&i.opened_at),
            i.detection.clone(),
            duration_ms(i.time_to_detect_ms),
            if i.resolved_at.is_some() {
                duration_ms(i.time_to_resolve_ms)
            } else {
                "-".into()
            },
        ]);
    }
    render::table(
        &[
            "ID",
            "STATE",
            "PRIORITY",
            "OPENED",
            "DETECTION",
            "TTD",
            "TTR",
        ],
        &rows,
    )
}

fn timeline_text(i: &pb::Incident) -> String {
    let mut out = format!("{} [{}] {}\n", i.id, state(i), i.summary);
    let mut rows = Vec::new();
    for t in &i.timeline {
        rows.push(vec![
            render::time(&t.at),
            t.actor.clone(),
            t.what.clone(),
            t.outcome.clone(),
            short_hash(&t.audit_hash),
        ]);
    }
    out.push_str(&render::table(
        &["TIME", "ACTOR", "WHAT", "OUTCOME", "AUDIT"],
        &rows,
    ));
    out
}

fn short_hash(hash: &str) -> String {
    match hash.get(..12) {
        Some(prefix) => prefix.to_string(),
        None if hash.is_empty() => "-".to_string(),
        None => hash.to_string(),
    }
}

/// The runbooks' post-mortem skeleton, filled with what the collector knows; root cause and
/// lessons are left for a person.
pub(crate) fn markdown(i: &pb::Incident) -> String {
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
        render::time(&i.opened_at)
    );
    let _ = writeln!(
        md,
        "- Resolved (last alert resolved): {}",
        render::time(&i.resolved_at)
    );
    let _ = writeln!(md, "- Closed: {}", render::time(&i.closed_at));
    let _ = writeln!(md, "\n## Detection\n");
    let _ = writeln!(md, "- Alert: {}", i.detection);
    let _ = writeln!(
        md,
        "- First condition: {}",
        render::time(&i.first_condition_at)
    );
    let _ = writeln!(md, "- First firing: {}", render::time(&i.opened_at));
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
            render::time(&t.at),
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
        let _ = writeln!(
            md,
            "- {} ({}): {}",
            render::time(&n.at),
            n.by,
            cell(&n.text)
        );
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
