//! What the status page may ask the collector: the read RPCs of the `Collector` service,
//! called in process through the same trait the gRPC server serves (so the page shows what
//! the API says, with the API's own checks and errors), plus the two in-memory views no RPC
//! carries (the maintenance book and the readings trail).
//!
//! This type is the page's only handle on the collector. It has no method that changes
//! anything, so nothing the page does can go around the operator gate or the audit log.

use std::sync::Arc;
use std::time::SystemTime;

use health_proto::v1 as pb;
use health_proto::v1::collector_server::Collector as _;
use tonic::{Request, Status};

use crate::service::CollectorService;
use crate::silences::maintenance::{MaintenanceWindows, Window, WindowKey};
use crate::trail::{Chart, ReadingTrails};

#[derive(Clone)]
pub struct FleetReader {
    service: CollectorService,
    windows: Arc<MaintenanceWindows>,
    trails: Arc<ReadingTrails>,
}

impl FleetReader {
    pub fn new(
        service: CollectorService,
        windows: Arc<MaintenanceWindows>,
        trails: Arc<ReadingTrails>,
    ) -> FleetReader {
        FleetReader {
            service,
            windows,
            trails,
        }
    }

    pub async fn nodes(&self) -> Result<Vec<pb::NodeSummary>, Status> {
        let r = self
            .service
            .list_nodes(Request::new(pb::ListNodesRequest {}))
            .await?;
        Ok(r.into_inner().nodes)
    }

    pub async fn node(&self, node: &str) -> Result<pb::FleetNode, Status> {
        let request = Request::new(pb::GetFleetNodeRequest {
            node: node.to_string(),
        });
        Ok(self.service.get_node(request).await?.into_inner())
    }

    /// Every alert the collector holds now (firing, and suppressed for maintenance).
    pub async fn alerts(&self) -> Result<Vec<pb::AlertEvent>, Status> {
        let r = self
            .service
            .list_alerts(Request::new(pb::ListAlertsRequest {}))
            .await?;
        Ok(r.into_inner().alerts)
    }

    pub async fn incidents(
        &self,
        request: pb::ListIncidentsRequest,
    ) -> Result<Vec<pb::Incident>, Status> {
        let r = self.service.list_incidents(Request::new(request)).await?;
        Ok(r.into_inner().incidents)
    }

    pub async fn incident(&self, id: &str) -> Result<pb::Incident, Status> {
        let request = Request::new(pb::GetIncidentRequest { id: id.to_string() });
        Ok(self.service.get_incident(request).await?.into_inner())
    }

    pub async fn silences(&self) -> Result<Vec<pb::Silence>, Status> {
        let request = Request::new(pb::ListSilencesRequest {
            include_expired: false,
        });
        Ok(self
            .service
            .list_silences(request)
            .await?
            .into_inner()
            .silences)
    }

    pub async fn history(
        &self,
        request: pb::QueryHistoryRequest,
    ) -> Result<Vec<pb::HistoryEntry>, Status> {
        let r = self.service.query_history(Request::new(request)).await?;
        Ok(r.into_inner().entries)
    }

    /// Every maintenance window the collector honours, node windows with an empty device.
    pub fn maintenance(&self) -> Vec<(WindowKey, Window)> {
        self.windows.all().into_iter().collect()
    }

    /// Reports applied so far: changes no watch stream carries (readings, ages, counters).
    pub fn reports_recorded(&self) -> u64 {
        self.trails.recorded()
    }

    pub fn chart(&self, node: &str, device: &str) -> Option<Chart> {
        self.trails.chart(node, device, SystemTime::now())
    }

    /// Drops the trails of nodes the fleet no longer holds.
    pub async fn prune_trails(&self) {
        if let Ok(nodes) = self.nodes().await {
            let held: std::collections::HashSet<String> =
                nodes.into_iter().map(|n| n.node).collect();
            self.trails
                .retain(|node| held.contains(node), SystemTime::now());
        }
    }
}

impl FleetReader {
    /// One item per change anywhere in the fleet or the alert book (`WatchFleet` and
    /// `WatchAlerts` merged, their contents dropped): what makes the page refresh. Both
    /// streams end at shutdown.
    pub async fn changes(
        &self,
    ) -> Result<impl tokio_stream::Stream<Item = ()> + Send + Unpin + 'static, Status> {
        use tokio_stream::StreamExt as _;
        let fleet = self
            .service
            .watch_fleet(Request::new(pb::WatchFleetRequest {}))
            .await?
            .into_inner()
            .map(|_| ());
        let alerts = self
            .service
            .watch_alerts(Request::new(pb::WatchAlertsRequest {}))
            .await?
            .into_inner()
            .map(|_| ());
        Ok(fleet.merge(alerts))
    }
}
