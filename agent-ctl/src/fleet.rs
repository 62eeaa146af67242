//! The commands that ask the collector (`--collector ADDR`) about the whole fleet: `nodes`,
//! `fleet-node`, `fleet-devices`, `alerts`, `history`.

use std::time::SystemTime;

use health_proto::v1 as pb;

use crate::change::parse_filter;
use crate::invocation::Invocation;
use crate::{history, json, render};

pub(crate) async fn nodes(ctl: &mut Invocation) -> anyhow::Result<()> {
    let request = ctl.req(pb::ListNodesRequest {});
    let mut collector = ctl.collector().await?;
    let r = collector.list_nodes(request).await?.into_inner();
    ctl.show_list(&r.nodes, json::node_summary, render::nodes_table)
}

pub(crate) async fn fleet_node(ctl: &mut Invocation, node: &str) -> anyhow::Result<()> {
    let n = ctl.fleet_node(node).await?;
    ctl.show(&n, json::fleet_node, render::fleet_node_text)
}

pub(crate) async fn fleet_devices(
    ctl: &mut Invocation,
    kind: Option<&str>,
    state: Option<&str>,
    node: Option<&str>,
) -> anyhow::Result<()> {
    let kind = parse_filter(
        "kind",
        kind,
        "DEVICE_KIND_",
        pb::DeviceKind::from_str_name,
        "loihi2, spinnaker, photonic, analog_crossbar",
    )?;
    let state = parse_filter(
        "state",
        state,
        "HEALTH_STATE_",
        pb::HealthState::from_str_name,
        "ok, unknown, warning, critical",
    )?;
    let request = ctl.req(pb::QueryDevicesRequest {
        kind,
        state,
        node: node.unwrap_or_default().to_string(),
    });
    let mut collector = ctl.collector().await?;
    let r = collector.query_devices(request).await?.into_inner();
    ctl.show_list(&r.devices, json::fleet_device, render::fleet_devices_table)
}

pub(crate) async fn alerts(
    ctl: &mut Invocation,
    count: Option<u64>,
    once: bool,
) -> anyhow::Result<()> {
    let mut collector = ctl.collector().await?;
    if once {
        let r = collector
            .list_alerts(pb::ListAlertsRequest {})
            .await?
            .into_inner();
        for e in &r.alerts {
            ctl.show(e, json::alert, render::alert_line)?;
        }
        return Ok(());
    }
    let stream = collector
        .watch_alerts(pb::WatchAlertsRequest {})
        .await?
        .into_inner();
    let closed = "the collector closed the alert stream";
    ctl.follow(stream, count, closed, |ctl, e| {
        ctl.show(e, json::alert, render::alert_line)
    })
    .await
}

pub(crate) async fn history(
    ctl: &mut Invocation,
    filter: &history::Filter<'_>,
) -> anyhow::Result<()> {
    let request = history::request(filter, SystemTime::now());
    let request = ctl.req(request);
    let mut collector = ctl.collector().await?;
    let r = collector.query_history(request).await?.into_inner();
    ctl.show_list(&r.entries, json::history_entry, history::table)
}
