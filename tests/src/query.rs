//! What the end-to-end tests read from a running agent and collector over their gRPC APIs,
//! and the bounded waits built on it: one place for the questions most tests ask (the agent's
//! snapshot and uplink status, the collector's view of a node and its devices), so that each
//! test says only what it checks in the answer.

use std::time::Duration;

use health_proto::v1 as pb;

use crate::{eventually, Agent, Collector};

impl Agent {
    /// The agent's latest snapshot (GetNode): its devices, seq, boot id and uplink status.
    pub async fn snapshot(&self) -> pb::NodeSnapshot {
        self.client()
            .await
            .get_node(pb::GetNodeRequest {})
            .await
            .expect("GetNode")
            .into_inner()
    }

    /// The agent's own status in its latest snapshot: uplink, buffer, spill, drops.
    pub async fn status(&self) -> pb::AgentStatus {
        self.snapshot().await.agent.expect("agent status")
    }

    /// The devices as ListDevices answers.
    pub async fn devices(&self) -> Vec<pb::Device> {
        self.client()
            .await
            .list_devices(pb::ListDevicesRequest {})
            .await
            .expect("ListDevices")
            .into_inner()
            .devices
    }

    /// A WatchHealth stream on a connection of its own, after its first snapshot (taken when
    /// the call was accepted): the next message is a snapshot the agent published afterwards.
    pub async fn watch_health(&self) -> tonic::Streaming<pb::NodeSnapshot> {
        let mut stream = self
            .client()
            .await
            .watch_health(pb::WatchHealthRequest {})
            .await
            .expect("WatchHealth")
            .into_inner();
        assert!(
            stream.message().await.expect("first snapshot").is_some(),
            "WatchHealth ended before its first snapshot"
        );
        stream
    }

    /// Waits until every device has been read at least once.
    pub async fn wait_all_devices_read(&self) -> pb::NodeSnapshot {
        eventually(
            "every device read once",
            Duration::from_secs(10),
            || async {
                let s = self.snapshot().await;
                s.devices
                    .iter()
                    .all(|d| d.last_read_at.is_some())
                    .then_some(s)
            },
        )
        .await
    }

    /// Waits until the uplink is connected and the collector has acknowledged `min_seq`.
    pub async fn wait_acked(&self, min_seq: u64) -> pb::AgentStatus {
        eventually(
            &format!("the agent's reports through seq {min_seq} acknowledged"),
            Duration::from_secs(10),
            || async {
                let a = self.status().await;
                (a.uplink_connected && a.last_acked_seq >= min_seq).then_some(a)
            },
        )
        .await
    }
}

impl Collector {
    /// The collector's view of `node` (GetNode), if it knows the node.
    pub async fn fleet_node(&self, node: &str) -> Option<pb::FleetNode> {
        self.client()
            .await
            .get_node(pb::GetFleetNodeRequest {
                node: node.to_string(),
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// The collector's summary of `node`, if it knows the node.
    pub async fn node_summary(&self, node: &str) -> Option<pb::NodeSummary> {
        self.fleet_node(node).await?.summary
    }

    /// The devices of `node` at the collector (none while it does not know the node).
    pub async fn fleet_devices(&self, node: &str) -> Vec<pb::FleetDevice> {
        let req = pb::QueryDevicesRequest {
            node: node.to_string(),
            ..Default::default()
        };
        self.client()
            .await
            .query_devices(req)
            .await
            .map(|r| r.into_inner().devices)
            .unwrap_or_default()
    }

    /// `node` as ListNodes shows it, if listed.
    pub async fn listed_node(&self, node: &str) -> Option<pb::NodeSummary> {
        let nodes = self
            .client()
            .await
            .list_nodes(pb::ListNodesRequest {})
            .await
            .ok()?
            .into_inner()
            .nodes;
        nodes.into_iter().find(|n| n.node == node)
    }

    /// Waits until the collector has applied `node`'s reports through seq `min_seq`.
    pub async fn wait_reports(&self, node: &str, min_seq: u64) -> pb::NodeSummary {
        eventually(
            &format!("{node}'s reports through seq {min_seq} at the collector"),
            Duration::from_secs(15),
            || async {
                let s = self.node_summary(node).await?;
                (s.last_seq >= min_seq).then_some(s)
            },
        )
        .await
    }
}

/// The device with id `id` among `devices`.
pub fn device<'a>(
    devices: impl IntoIterator<Item = &'a pb::Device>,
    id: &str,
) -> Option<&'a pb::Device> {
    devices
        .into_iter()
        .find(|d| d.identity.as_ref().is_some_and(|i| i.id == id))
}

/// Whether the device has a condition with this code.
pub fn has_code(d: &pb::Device, code: pb::ConditionCode) -> bool {
    d.conditions.iter().any(|c| c.code() == code)
}
