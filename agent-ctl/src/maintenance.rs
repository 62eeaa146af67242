//! `agent-ctl maintenance start|end|list`: maintenance windows on a device or the whole node.
//! While one lasts, the agent's policies leave the subject alone (its conditions are still
//! read and shown). Start and end are actions on the agent (operator role, audited, with this
//! invocation's idempotency key); `--for` is checked against the agent's `max_maintenance`
//! there, so the limit is the agent's, and its message is what agent-ctl prints.

use std::time::Duration;

use anyhow::bail;
use health_proto::v1 as pb;

use crate::cli::MaintenanceCommand;
use crate::invocation::Invocation;
use crate::json;
use crate::render::{table, time};

pub(crate) async fn command(
    ctl: &mut Invocation,
    command: &MaintenanceCommand,
) -> anyhow::Result<()> {
    let mut agent = ctl.agent().await?;
    let key = ctl.idempotency_key().to_string();
    let status = match command {
        MaintenanceCommand::List => {
            agent
                .list_maintenance(ctl.req(pb::ListMaintenanceRequest {}))
                .await?
        }
        MaintenanceCommand::Start {
            subject,
            window_for,
            reason,
        } => {
            let request = pb::StartMaintenanceRequest {
                device_id: subject.device.clone().unwrap_or_default(),
                node: subject.node,
                for_seconds: for_seconds(*window_for)?,
                reason: reason.clone(),
                idempotency_key: key,
            };
            agent.start_maintenance(ctl.req(request)).await?
        }
        MaintenanceCommand::End { subject } => {
            let request = pb::EndMaintenanceRequest {
                device_id: subject.device.clone().unwrap_or_default(),
                node: subject.node,
                idempotency_key: key,
            };
            agent.end_maintenance(ctl.req(request)).await?
        }
    }
    .into_inner();
    ctl.show(&status, json::maintenance_status, status_text)?;
    if let Some(r) = status
        .result
        .as_ref()
        .filter(|r| r.outcome() != pb::ActionOutcome::Succeeded)
    {
        bail!("{} {}: {}", r.action, r.device_id, r.message);
    }
    Ok(())
}

/// `--for` in whole seconds (the wire's unit); under a second would be 0, which the agent
/// refuses anyway, so say so before connecting.
fn for_seconds(d: Duration) -> anyhow::Result<u64> {
    if d < Duration::from_secs(1) {
        bail!(
            "--for {}: expected at least 1s",
            humantime::format_duration(d)
        );
    }
    Ok(d.as_secs())
}

/// The result line of a start or end, then every window in force.
pub fn status_text(s: &pb::MaintenanceStatus) -> String {
    let mut out = String::new();
    if let Some(r) = &s.result {
        out.push_str(&format!("{} {}: {}\n", r.device_id, r.action, r.message));
        if !r.audit_hash.is_empty() {
            out.push_str(&format!("audit entry {}\n", r.audit_hash));
        }
        out.push('\n');
    }
    if s.windows.is_empty() {
        out.push_str("no maintenance in force\n");
    } else {
        out.push_str(&windows_table(&s.windows));
    }
    out.push_str(&format!(
        "(longest window this agent starts: {})\n",
        humantime::format_duration(Duration::from_secs(s.max_maintenance_seconds))
    ));
    out
}

fn windows_table(windows: &[pb::MaintenanceWindow]) -> String {
    let rows: Vec<Vec<String>> = windows
        .iter()
        .map(|w| {
            let m = w.maintenance.clone().unwrap_or_default();
            vec![
                w.subject.clone(),
                m.source.clone(),
                if m.until.is_some() {
                    time(&m.until)
                } else {
                    "-".into()
                },
                m.by.clone(),
                time(&m.started_at),
                m.reason.clone(),
            ]
        })
        .collect();
    table(
        &["SUBJECT", "SOURCE", "UNTIL", "BY", "STARTED", "REASON"],
        &rows,
    )
}

/// One line for `status` and `device`: who holds it in maintenance, until when and why.
pub fn line(subject: &str, m: &pb::Maintenance) -> String {
    let until = if m.until.is_some() {
        format!("until {}", time(&m.until))
    } else {
        "while SLURM holds it".to_string()
    };
    format!(
        "MAINTENANCE {subject} {until} ({}, by {}): {}\n",
        m.source, m.by, m.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_whole_seconds() {
        assert!(for_seconds(Duration::from_millis(500)).is_err());
        assert_eq!(for_seconds(Duration::from_secs(7200)).unwrap(), 7200);
    }

    #[test]
    fn windows_show_source_until_and_reason() {
        let s = pb::MaintenanceStatus {
            windows: vec![pb::MaintenanceWindow {
                subject: "loihi-0".into(),
                maintenance: Some(pb::Maintenance {
                    reason: "SLURM marks node n1 \"drain\": drained".into(),
                    by: "slurm".into(),
                    source: "slurm".into(),
                    ..Default::default()
                }),
            }],
            result: None,
            max_maintenance_seconds: 86400,
        };
        let text = status_text(&s);
        assert!(text.contains("loihi-0"), "{text}");
        assert!(text.contains("slurm"), "{text}");
        assert!(text.contains("1day"), "{text}");
    }
}
