//! The commands that read one agent and change nothing: `status`, `devices`, `device`,
//! `watch`, `probe`, `diagnose`, `actions`, `processes`. A reader role is enough for all of
//! them.

use std::io::IsTerminal;

use anyhow::bail;
use health_proto::v1 as pb;

use crate::invocation::Invocation;
use crate::{json, processes, render};

pub(crate) async fn status(ctl: &mut Invocation) -> anyhow::Result<()> {
    let node = ctl.node().await?;
    ctl.show(&node, json::node, render::node_text)
}

pub(crate) async fn devices(ctl: &mut Invocation) -> anyhow::Result<()> {
    let request = ctl.req(pb::ListDevicesRequest {});
    let mut agent = ctl.agent().await?;
    let r = agent.list_devices(request).await?.into_inner();
    ctl.show_list(&r.devices, json::device, render::devices_table)
}

pub(crate) async fn device(ctl: &mut Invocation, id: &str) -> anyhow::Result<()> {
    let request = ctl.req(pb::GetDeviceRequest { id: id.to_string() });
    let mut agent = ctl.agent().await?;
    let d = agent.get_device(request).await?.into_inner();
    ctl.show(&d, json::device, render::device_text)
}

pub(crate) async fn watch(ctl: &mut Invocation, count: Option<u64>) -> anyhow::Result<()> {
    let mut agent = ctl.agent().await?;
    let stream = agent
        .watch_health(pb::WatchHealthRequest {})
        .await?
        .into_inner();
    let as_json = ctl.cli.json;
    let redraw = !as_json && std::io::stdout().is_terminal();
    let closed = "the agent closed the watch stream (agent shutting down?)";
    ctl.follow(stream, count, closed, |ctl, n| {
        if as_json {
            ctl.print_json(&json::node(n))
        } else if redraw {
            // Clear the screen and home the cursor: a live view, not a scroll.
            let text = render::node_text(n);
            ctl.print(&format!("\x1b[2J\x1b[H{text}\n(Ctrl-C to stop)\n"))
        } else {
            ctl.print(&format!("{}\n", render::node_text(n)))
        }
    })
    .await
}

/// With `--json`, solver-probe's own report (the schema of `solver-probe analyze --json`), as
/// the agent passed it on.
pub(crate) async fn probe(
    ctl: &mut Invocation,
    file: &str,
    bits: Option<u32>,
    read_noise: f64,
) -> anyhow::Result<()> {
    let request = ctl.req(pb::ProbeMatrixRequest {
        path: file.to_string(),
        bits,
        read_noise,
    });
    let mut agent = ctl.agent().await?;
    let r = agent.probe_matrix(request).await?.into_inner();
    if ctl.cli.json {
        return ctl.print(&format!("{}\n", r.report_json));
    }
    let mut out = format!("{file}: {} finding(s)\n", r.findings.len());
    for c in &r.findings {
        out.push_str(&format!("  {}\n", render::condition_line(c)));
    }
    ctl.print(&out)
}

/// Exits 1 when the device is WARNING or CRITICAL afterwards.
pub(crate) async fn diagnose(ctl: &mut Invocation, id: &str, full: bool) -> anyhow::Result<()> {
    let level = if full {
        pb::DiagnosticsLevel::Full
    } else {
        pb::DiagnosticsLevel::Quick
    };
    let request = ctl.req(pb::RunDiagnosticsRequest {
        id: id.to_string(),
        level: level as i32,
    });
    let mut agent = ctl.agent().await?;
    let r = agent.run_diagnostics(request).await?.into_inner();
    ctl.show(&r, json::diagnostics, render::diagnostics_text)?;
    match r.state() {
        pb::HealthState::Warning | pb::HealthState::Critical => bail!(
            "diagnose {}: {} with {} finding(s)",
            r.device_id,
            render::state(r.state()),
            r.findings.len()
        ),
        _ => Ok(()),
    }
}

pub(crate) async fn actions(
    ctl: &mut Invocation,
    device: Option<&str>,
    limit: u32,
) -> anyhow::Result<()> {
    let request = ctl.req(pb::ListActionsRequest {
        limit,
        device_id: device.unwrap_or_default().to_string(),
    });
    let mut agent = ctl.agent().await?;
    let r = agent.list_actions(request).await?.into_inner();
    ctl.show_list(&r.actions, json::action, render::actions_table)
}

pub(crate) async fn services(ctl: &mut Invocation) -> anyhow::Result<()> {
    let host = ctl.node().await?.host.unwrap_or_default();
    if ctl.cli.json {
        let all = host.services.iter().map(json::service).collect();
        ctl.print_json(&serde_json::Value::Array(all))
    } else {
        ctl.print(&crate::services::services_table(&host))
    }
}

pub(crate) async fn processes(ctl: &mut Invocation) -> anyhow::Result<()> {
    let host = ctl.node().await?.host.unwrap_or_default();
    if ctl.cli.json {
        let all = host.processes.iter().map(json::process).collect();
        ctl.print_json(&serde_json::Value::Array(all))
    } else {
        ctl.print(&processes::processes_table(&host))
    }
}
