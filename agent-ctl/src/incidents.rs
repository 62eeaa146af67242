//! `incidents`, `incident ID`, `incident ID note TEXT` and `incident ID --export`: the
//! collector's incidents (built from its history) and the post-mortem skeleton the runbooks
//! ask for, written from one `Incident` so the markdown and the JSON cannot disagree.

use std::path::Path;
use std::time::{Duration, SystemTime};

use health_proto::v1 as pb;

use crate::invocation::Invocation;
use health_view::incident::markdown;
use health_view::names::{duration_ms, incident_state as state};

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
