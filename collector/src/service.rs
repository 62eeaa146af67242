//! The `health.v1.Collector` gRPC service: the boundary between the wire and the fleet.
//!
//! Beside `server` (binding, serving) and `authz` (the `AgentGate` wrapper), this is the only
//! module that deals with tonic: requests, status codes, streams. It checks what peers send
//! before anything reaches the fleet (an agent's bad report ends its stream with
//! INVALID_ARGUMENT naming the field; nothing a peer sends can panic the collector), ends with
//! RESOURCE_EXHAUSTED the stream of a new node the full fleet refuses (`max_nodes`), and it
//! turns the fleet's and the alert book's broadcast channels into watcher streams.
//! QueryHistory reads the history database on the blocking pool (FAILED_PRECONDITION when the
//! collector keeps none). AcquireLease / ReleaseLease check their fields and hand them to the
//! lease budget (`leases.rs`), logging every grant and refusal under the `leases` target; a
//! refusal is an answer (`granted = false` and the reason), not an error.
//!
//! Every stream it returns ends when the collector shuts down, so a graceful shutdown does not
//! wait for agents or watchers to hang up by themselves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use health_proto::v1::collector_server::Collector;
use health_proto::v1::{
    AcquireLeaseRequest, AlertEvent, DeviceKind, FleetEvent, FleetNode, GetFleetNodeRequest,
    HealthReport, HealthState, LeaseDecision, ListNodesRequest, ListNodesResponse,
    QueryDevicesRequest, QueryDevicesResponse, QueryHistoryRequest, QueryHistoryResponse,
    ReleaseLeaseRequest, ReleaseLeaseResponse, ReportAck, WatchAlertsRequest, WatchFleetRequest,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status, Streaming};

use crate::alerts::Alerts;
use crate::fleet::{Applied, Arrival, DeviceFilter, Fleet, Report};
use crate::history::{HistoryQuery, HistoryReader, MAX_LIMIT};
use crate::incidents::query::IncidentBook;
use crate::leases::{Decision, LeaseAsk, Leases, Release, Verdict};
use crate::operator::Operators;
use crate::silences::Silences;
use crate::trail::ReadingTrails;

/// Acks buffered per Report stream. Small on purpose: an agent that stops reading acks should
/// feel back-pressure (its reports stop being read) rather than grow our memory.
const ACK_BUFFER: usize = 16;

/// Longest node, device, policy, action, request or lease id accepted in a lease call: names
/// are short, and the budget keeps them in memory for a window.
const MAX_LEASE_FIELD: usize = 256;

/// A server-streaming response that ends when the collector shuts down.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Collector service; cheap to clone into per-stream tasks.
#[derive(Clone)]
pub struct CollectorService {
    fleet: Arc<Fleet>,
    alerts: Arc<Alerts>,
    shutdown: CancellationToken,
    /// The history database, if `history_path` is set.
    history: Option<HistoryReader>,
    leases: Arc<Leases>,
    incidents: IncidentBook,
    /// The gate of mutating RPCs (operator role, audit log).
    operators: Operators,
    silences: Arc<Silences>,
    /// Each device's recent temperature and power, for the status page's charts.
    trails: Option<Arc<ReadingTrails>>,
}

impl CollectorService {
    pub fn new(
        fleet: Arc<Fleet>,
        alerts: Arc<Alerts>,
        leases: Arc<Leases>,
        shutdown: CancellationToken,
    ) -> Self {
        CollectorService {
            fleet,
            alerts,
            shutdown,
            history: None,
            leases,
            incidents: IncidentBook::new(None, None, Duration::from_secs(300)),
            operators: Operators::default(),
            silences: Silences::new(None, Arc::default()),
            trails: None,
        }
    }

    /// Records each applied report's temperature and power in `trails`.
    pub fn with_trails(self, trails: Arc<ReadingTrails>) -> Self {
        CollectorService {
            trails: Some(trails),
            ..self
        }
    }

    /// Mutating RPCs pass this gate; silences are made and listed in `silences`.
    pub fn with_operators(self, operators: Operators, silences: Arc<Silences>) -> Self {
        CollectorService {
            operators,
            silences,
            ..self
        }
    }

    /// Answers the incident RPCs from the history, closing incidents after `close_after`.
    pub fn with_incidents(self, incidents: IncidentBook) -> Self {
        CollectorService { incidents, ..self }
    }

    /// Answers QueryHistory from this database.
    pub fn with_history(self, history: HistoryReader) -> Self {
        CollectorService {
            history: Some(history),
            ..self
        }
    }

    /// Validates one report, applies it to the fleet and the alerts, and says what to ack.
    fn apply(&self, report: HealthReport, peer: &str) -> Result<ReportAck, Status> {
        let (report, sent_at) = validate(report)?;
        let node = report.node.clone();
        let boot_id = report.boot_id.clone();
        let wall = SystemTime::now();
        let applied = self
            .fleet
            .apply(
                report,
                Arrival {
                    peer,
                    at: Instant::now(),
                    wall,
                },
            )
            .map_err(|full| Status::resource_exhausted(full.to_string()))?;
        if let Applied::Current {
            generation,
            snapshot,
            ..
        } = &applied
        {
            self.alerts
                .observe(&node, *generation, snapshot, sent_at, wall);
            if let Some(trails) = &self.trails {
                trails.record(snapshot, wall);
            }
        }
        Ok(ReportAck {
            boot_id,
            acked_seq: applied.acked_seq(),
        })
    }
}

/// Checks the fields the fleet relies on; the error names the field for the agent's log.
fn validate(report: HealthReport) -> Result<(Report, Option<prost_types::Timestamp>), Status> {
    if report.node.is_empty() {
        return Err(Status::invalid_argument(
            "HealthReport.node must not be empty",
        ));
    }
    if report.boot_id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "HealthReport.boot_id must not be empty (node {:?})",
            report.node
        )));
    }
    if report.seq == 0 {
        return Err(Status::invalid_argument(format!(
            "HealthReport.seq must be 1 or more, got 0 (node {:?}, boot_id {:?})",
            report.node, report.boot_id
        )));
    }
    let Some(snapshot) = report.snapshot else {
        return Err(Status::invalid_argument(format!(
            "HealthReport.snapshot is missing (node {:?}, seq {})",
            report.node, report.seq
        )));
    };
    Ok((
        Report {
            node: report.node,
            boot_id: report.boot_id,
            seq: report.seq,
            snapshot,
        },
        report.sent_at,
    ))
}

fn peer_of<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |addr| addr.to_string())
}

#[tonic::async_trait]
impl Collector for CollectorService {
    async fn create_silence(
        &self,
        request: Request<health_proto::v1::CreateSilenceRequest>,
    ) -> Result<Response<health_proto::v1::Silence>, Status> {
        let r = request.get_ref();
        let args = serde_json::json!({
            "matchers": r.matchers.iter().map(|m| format!("{}{}{:?}", m.name, crate::silences::matcher::operator(m), m.value)).collect::<Vec<_>>(),
            "for_seconds": r.for_seconds,
            "comment": r.comment,
        });
        let operator = self
            .operators
            .admit(&request, "CreateSilence", args)
            .await?;
        self.silences
            .create(&operator, request.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_silences(
        &self,
        request: Request<health_proto::v1::ListSilencesRequest>,
    ) -> Result<Response<health_proto::v1::ListSilencesResponse>, Status> {
        let silences = self.silences.list(request.get_ref().include_expired);
        Ok(Response::new(health_proto::v1::ListSilencesResponse {
            silences,
        }))
    }
    async fn expire_silence(
        &self,
        request: Request<health_proto::v1::ExpireSilenceRequest>,
    ) -> Result<Response<health_proto::v1::Silence>, Status> {
        let id = request.get_ref().id.clone();
        let args = serde_json::json!({ "id": id });
        let operator = self
            .operators
            .admit(&request, "ExpireSilence", args)
            .await?;
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "ExpireSilence: id: expected a silence id, found none",
            ));
        }
        self.silences
            .expire(&operator, &id)
            .await
            .map(Response::new)
    }
    async fn list_alerts(
        &self,
        _: Request<health_proto::v1::ListAlertsRequest>,
    ) -> Result<Response<health_proto::v1::ListAlertsResponse>, Status> {
        let (alerts, _) = self.alerts.watch();
        Ok(Response::new(health_proto::v1::ListAlertsResponse {
            alerts,
        }))
    }
    async fn list_incidents(
        &self,
        request: Request<health_proto::v1::ListIncidentsRequest>,
    ) -> Result<Response<health_proto::v1::ListIncidentsResponse>, Status> {
        let incidents = self.incidents.list(request.into_inner()).await?;
        Ok(Response::new(health_proto::v1::ListIncidentsResponse {
            incidents,
        }))
    }
    async fn get_incident(
        &self,
        request: Request<health_proto::v1::GetIncidentRequest>,
    ) -> Result<Response<health_proto::v1::Incident>, Status> {
        Ok(Response::new(
            self.incidents.get(request.into_inner()).await?,
        ))
    }
    async fn add_incident_note(
        &self,
        request: Request<health_proto::v1::AddIncidentNoteRequest>,
    ) -> Result<Response<health_proto::v1::Incident>, Status> {
        let r = request.get_ref();
        let args = serde_json::json!({"incident": r.id, "text": r.text});
        let operator = self
            .operators
            .admit(&request, "AddIncidentNote", args)
            .await?;
        let incident = self
            .incidents
            .add_note(&operator, request.into_inner())
            .await?;
        Ok(Response::new(incident))
    }
    type ReportStream = ReceiverStream<Result<ReportAck, Status>>;

    async fn report(
        &self,
        request: Request<Streaming<HealthReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let peer = peer_of(&request);
        let inbound = request.into_inner();
        let (acks, ack_stream) = mpsc::channel(ACK_BUFFER);
        tracing::debug!(peer = %peer, "report stream opened");
        tokio::spawn(ingest(self.clone(), inbound, acks, peer));
        Ok(Response::new(ReceiverStream::new(ack_stream)))
    }

    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: self.fleet.nodes(),
        }))
    }

    async fn get_node(
        &self,
        request: Request<GetFleetNodeRequest>,
    ) -> Result<Response<FleetNode>, Status> {
        let node = request.into_inner().node;
        if node.is_empty() {
            return Err(Status::invalid_argument(
                "GetFleetNodeRequest.node must not be empty",
            ));
        }
        self.fleet.node(&node).map(Response::new).ok_or_else(|| {
            Status::not_found(format!("node {node:?} has not reported to this collector"))
        })
    }

    async fn query_devices(
        &self,
        request: Request<QueryDevicesRequest>,
    ) -> Result<Response<QueryDevicesResponse>, Status> {
        let request = request.into_inner();
        let filter = DeviceFilter {
            kind: kind_filter(request.kind)?,
            state: state_filter(request.state)?,
            node: (!request.node.is_empty()).then_some(request.node),
        };
        Ok(Response::new(QueryDevicesResponse {
            devices: self.fleet.devices(&filter),
        }))
    }

    type WatchFleetStream = EventStream<FleetEvent>;

    async fn watch_fleet(
        &self,
        request: Request<WatchFleetRequest>,
    ) -> Result<Response<Self::WatchFleetStream>, Status> {
        let (now, later) = self.fleet.watch();
        Ok(Response::new(watch_stream(
            now,
            later,
            "WatchFleet",
            peer_of(&request),
            self.shutdown.clone(),
        )))
    }

    type WatchAlertsStream = EventStream<AlertEvent>;

    async fn watch_alerts(
        &self,
        request: Request<WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let (firing, later) = self.alerts.watch();
        Ok(Response::new(watch_stream(
            firing,
            later,
            "WatchAlerts",
            peer_of(&request),
            self.shutdown.clone(),
        )))
    }

    async fn query_history(
        &self,
        request: Request<QueryHistoryRequest>,
    ) -> Result<Response<QueryHistoryResponse>, Status> {
        self.query_history_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn acquire_lease(
        &self,
        request: Request<AcquireLeaseRequest>,
    ) -> Result<Response<LeaseDecision>, Status> {
        let peer = peer_of(&request);
        self.acquire_lease_impl(request.into_inner(), &peer)
            .map(Response::new)
    }

    async fn release_lease(
        &self,
        request: Request<ReleaseLeaseRequest>,
    ) -> Result<Response<ReleaseLeaseResponse>, Status> {
        let peer = peer_of(&request);
        self.release_lease_impl(request.into_inner(), &peer)
            .map(Response::new)
    }
}

impl CollectorService {
    fn acquire_lease_impl(
        &self,
        request: AcquireLeaseRequest,
        peer: &str,
    ) -> Result<LeaseDecision, Status> {
        let ask = LeaseAsk {
            node: lease_field("AcquireLeaseRequest.node", request.node)?,
            device: lease_field("AcquireLeaseRequest.device", request.device)?,
            policy: lease_field("AcquireLeaseRequest.policy", request.policy)?,
            action: lease_field("AcquireLeaseRequest.action", request.action)?,
            request_id: lease_field("AcquireLeaseRequest.request_id", request.request_id)?,
        };
        let decision = self.leases.acquire(&ask, self.fleet.device_count());
        match &decision.verdict {
            Verdict::Granted {
                lease_id,
                ttl,
                again,
            } => tracing::info!(target: "leases", peer, node = %ask.node, device = %ask.device,
                policy = %ask.policy, action = %ask.action, request = %ask.request_id,
                lease = %lease_id, ttl = %humantime::format_duration(*ttl), retry = again,
                active = decision.active, granted_in_window = decision.granted_in_window,
                window_budget = decision.window_budget, "lease granted"),
            Verdict::Refused { why, reason } => tracing::warn!(target: "leases", peer,
                node = %ask.node, device = %ask.device, policy = %ask.policy,
                action = %ask.action, request = %ask.request_id, refusal = why.label(),
                reason = %reason, "lease refused"),
        }
        Ok(lease_decision(decision))
    }

    fn release_lease_impl(
        &self,
        request: ReleaseLeaseRequest,
        peer: &str,
    ) -> Result<ReleaseLeaseResponse, Status> {
        let lease_id = lease_field("ReleaseLeaseRequest.lease_id", request.lease_id)?;
        let node = lease_field("ReleaseLeaseRequest.node", request.node)?;
        if request.outcome.len() > MAX_LEASE_FIELD {
            return Err(Status::invalid_argument(format!(
                "ReleaseLeaseRequest.outcome: expected at most {MAX_LEASE_FIELD} bytes, got {}",
                request.outcome.len()
            )));
        }
        let outcome = request.outcome;
        let released = match self.leases.release(&lease_id, &node) {
            Release::Released(lease) => {
                tracing::info!(target: "leases", peer, node = %node, device = %lease.device,
                    policy = %lease.policy, action = %lease.action, lease = %lease_id,
                    outcome = %outcome, held = %humantime::format_duration(
                        Duration::from_secs(lease.granted_at.elapsed().as_secs())),
                    "lease released");
                true
            }
            Release::Unknown => {
                tracing::info!(target: "leases", peer, node = %node, lease = %lease_id,
                    outcome = %outcome,
                    "release of a lease not held (already released, expired, or from an earlier run)");
                false
            }
            Release::OtherNode { holder } => {
                tracing::warn!(target: "leases", peer, node = %node, holder = %holder,
                    lease = %lease_id, "release refused: the lease is held by another node");
                false
            }
        };
        Ok(ReleaseLeaseResponse { released })
    }
}

/// A lease call's string field: present, and short enough to keep.
fn lease_field(field: &str, value: String) -> Result<String, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: expected a non-empty string, got {value:?}"
        )));
    }
    if value.len() > MAX_LEASE_FIELD {
        return Err(Status::invalid_argument(format!(
            "{field}: expected at most {MAX_LEASE_FIELD} bytes, got {}",
            value.len()
        )));
    }
    Ok(value)
}

fn lease_decision(decision: Decision) -> LeaseDecision {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let (granted, lease_id, ttl_ms, reason) = match decision.verdict {
        Verdict::Granted { lease_id, ttl, .. } => (
            true,
            lease_id,
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            String::new(),
        ),
        Verdict::Refused { reason, .. } => (false, String::new(), 0, reason),
    };
    LeaseDecision {
        granted,
        lease_id,
        ttl_ms,
        reason,
        active: count(decision.active),
        max_concurrent: count(decision.max_concurrent),
        granted_in_window: count(decision.granted_in_window),
        window_budget: count(decision.window_budget),
        breaker_open: decision.breaker_open,
    }
}

impl CollectorService {
    /// QueryHistory: validates the filters, then reads the database on the blocking pool so a
    /// slow disk holds up only this call.
    async fn query_history_impl(
        &self,
        request: QueryHistoryRequest,
    ) -> Result<QueryHistoryResponse, Status> {
        let Some(history) = self.history.clone() else {
            return Err(Status::failed_precondition(
                "this collector keeps no history: set history_path or history_url in its configuration \
                 (collector.toml) and restart it",
            ));
        };
        if request.limit > MAX_LIMIT {
            return Err(Status::invalid_argument(format!(
                "QueryHistoryRequest.limit: expected at most {MAX_LIMIT}, got {}",
                request.limit
            )));
        }
        let time = |field: &str, at: Option<prost_types::Timestamp>| match at {
            None => Ok(None),
            Some(at) => SystemTime::try_from(at).map(Some).map_err(|_| {
                Status::invalid_argument(format!(
                    "QueryHistoryRequest.{field}: not a valid time ({}s, {}ns)",
                    at.seconds, at.nanos
                ))
            }),
        };
        let since = time("since", request.since)?;
        let until = time("until", request.until)?;
        if let (Some(since), Some(until)) = (since, until) {
            if until <= since {
                return Err(Status::invalid_argument(format!(
                    "QueryHistoryRequest.until: expected a time after since ({}), got {}",
                    humantime::format_rfc3339_millis(since),
                    humantime::format_rfc3339_millis(until)
                )));
            }
        }
        let query = HistoryQuery {
            node: (!request.node.is_empty()).then_some(request.node),
            device: (!request.device.is_empty()).then_some(request.device),
            since,
            until,
            limit: request.limit,
            alerts_only: false,
            oldest_first: request.oldest_first,
        };
        let entries = tokio::task::spawn_blocking(move || history.query(&query))
            .await
            .map_err(|e| Status::internal(format!("history query task failed: {e}")))?
            .map_err(|e| Status::unavailable(format!("cannot read the history: {e}")))?;
        Ok(QueryHistoryResponse { entries })
    }
}

/// Reads one agent's reports, applying and acknowledging each in order, until the agent closes
/// its side, sends something invalid, goes away, or the collector shuts down.
async fn ingest(
    service: CollectorService,
    mut inbound: Streaming<HealthReport>,
    acks: mpsc::Sender<Result<ReportAck, Status>>,
    peer: String,
) {
    let shutdown = service.shutdown.clone();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = inbound.message() => next,
        };
        let report = match next {
            Ok(Some(report)) => report,
            Ok(None) => {
                tracing::debug!(peer = %peer, "report stream closed by the agent");
                break;
            }
            Err(status) => {
                // Usually the agent went away mid-stream (restart, network); it will reconnect
                // and resend whatever was not acknowledged.
                tracing::info!(peer = %peer, code = ?status.code(), message = status.message(), "report stream broken");
                // If the agent is still there (a message over max_message_bytes, a frame that
                // does not decode), it learns why the stream ends instead of seeing a clean end.
                let _ = acks.try_send(Err(status));
                break;
            }
        };
        let reply = service.apply(report, &peer);
        let rejected = reply.is_err();
        match &reply {
            // The fleet has logged the refusal, with the count of them.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                tracing::debug!(peer = %peer, reason = status.message(), "report refused: ending the stream");
            }
            Err(status) => {
                tracing::warn!(peer = %peer, reason = status.message(), "invalid report: ending the stream");
            }
            Ok(_) => {}
        }
        let sent = tokio::select! {
            () = shutdown.cancelled() => break,
            sent = acks.send(reply) => sent,
        };
        if sent.is_err() || rejected {
            // The response stream is gone (the agent hung up), or we have just told it why we
            // are closing.
            break;
        }
    }
}

/// "What is true now, then every change": the initial items, then the broadcast, until
/// shutdown. A watcher that falls more than the channel capacity behind skips what it missed
/// (with a warning) instead of stalling the senders or the other watchers.
fn watch_stream<T>(
    now: Vec<T>,
    later: broadcast::Receiver<T>,
    rpc: &'static str,
    peer: String,
    shutdown: CancellationToken,
) -> EventStream<T>
where
    T: Clone + Send + 'static,
{
    let live = BroadcastStream::new(later).filter_map(move |item| match item {
        Ok(event) => Some(Ok(event)),
        Err(BroadcastStreamRecvError::Lagged(skipped)) => {
            tracing::warn!(rpc, peer = %peer, skipped, "slow watcher fell behind: events skipped");
            None
        }
    });
    let stream = tokio_stream::iter(now.into_iter().map(Ok)).chain(live);
    Box::pin(UntilShutdown::new(Box::pin(stream), shutdown))
}

/// Ends the inner stream when the collector shuts down.
struct UntilShutdown<S> {
    inner: S,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl<S> UntilShutdown<S> {
    fn new(inner: S, shutdown: CancellationToken) -> Self {
        UntilShutdown {
            inner,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            ended: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for UntilShutdown<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.ended = true;
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_next(cx)
    }
}

fn kind_filter(raw: i32) -> Result<Option<DeviceKind>, Status> {
    match DeviceKind::try_from(raw) {
        Ok(DeviceKind::Unspecified) => Ok(None),
        Ok(kind) => Ok(Some(kind)),
        Err(_) => Err(Status::invalid_argument(format!(
            "QueryDevicesRequest.kind: unknown DeviceKind value {raw}"
        ))),
    }
}

fn state_filter(raw: i32) -> Result<Option<HealthState>, Status> {
    match HealthState::try_from(raw) {
        Ok(HealthState::Unspecified) => Ok(None),
        Ok(state) => Ok(Some(state)),
        Err(_) => Err(Status::invalid_argument(format!(
            "QueryDevicesRequest.state: unknown HealthState value {raw}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Limits;
    use health_proto::v1::NodeSnapshot;

    fn service_with(max_nodes: usize) -> CollectorService {
        let limits = Limits {
            stale_after: Duration::from_secs(10),
            forget_after: Duration::from_secs(60),
            max_nodes,
        };
        CollectorService::new(
            Arc::new(Fleet::new(limits, 64)),
            Arc::new(Alerts::new(64)),
            Arc::new(Leases::new(crate::config::LeasesConfig::default())),
            CancellationToken::new(),
        )
    }

    fn service() -> CollectorService {
        service_with(100)
    }

    fn report(node: &str, boot_id: &str, seq: u64) -> HealthReport {
        HealthReport {
            node: node.to_string(),
            boot_id: boot_id.to_string(),
            seq,
            sent_at: None,
            snapshot: Some(NodeSnapshot::default()),
        }
    }

    #[test]
    fn invalid_reports_name_the_field() {
        let service = service();
        let cases = [
            (report("", "b", 1), "HealthReport.node"),
            (report("n1", "", 1), "HealthReport.boot_id"),
            (report("n1", "b", 0), "HealthReport.seq"),
            (
                HealthReport {
                    snapshot: None,
                    ..report("n1", "b", 1)
                },
                "HealthReport.snapshot",
            ),
        ];
        for (bad, field) in cases {
            let status = service.apply(bad, "peer").expect_err("invalid report");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(field), "{}", status.message());
        }
        assert!(service.fleet.nodes().is_empty());
    }

    #[test]
    fn a_duplicate_is_acked_with_the_highest_applied_seq() {
        let service = service();
        let ack = |seq| {
            service
                .apply(report("n1", "b1", seq), "peer")
                .expect("valid")
        };
        assert_eq!(ack(1).acked_seq, 1);
        assert_eq!(ack(3).acked_seq, 3);
        assert_eq!(ack(2).acked_seq, 3);
        assert_eq!(ack(3).boot_id, "b1");
    }

    #[test]
    fn a_new_node_beyond_max_nodes_is_resource_exhausted() {
        let service = service_with(1);
        assert_eq!(
            service
                .apply(report("n1", "b1", 1), "peer")
                .expect("room for one")
                .acked_seq,
            1
        );
        let status = service
            .apply(report("n2", "b1", 1), "peer")
            .expect_err("no room for a second");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("max_nodes = 1"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("\"n2\""), "{}", status.message());
        // The node already held keeps reporting.
        assert_eq!(
            service
                .apply(report("n1", "b1", 2), "peer")
                .expect("known node")
                .acked_seq,
            2
        );
        let names: Vec<String> = service.fleet.nodes().into_iter().map(|s| s.node).collect();
        assert_eq!(names, vec!["n1"]);
    }

    #[test]
    fn unknown_filter_values_are_rejected() {
        assert!(kind_filter(0).expect("valid").is_none());
        assert_eq!(kind_filter(1).expect("valid"), Some(DeviceKind::Loihi2));
        assert_eq!(
            kind_filter(99).expect_err("invalid").code(),
            tonic::Code::InvalidArgument
        );
        assert!(state_filter(0).expect("valid").is_none());
        assert!(state_filter(-3).is_err());
    }

    fn lease_request(node: &str, device: &str, request_id: &str) -> AcquireLeaseRequest {
        AcquireLeaseRequest {
            node: node.to_string(),
            device: device.to_string(),
            policy: "thermal".to_string(),
            action: "reset-hard".to_string(),
            request_id: request_id.to_string(),
        }
    }

    #[test]
    fn lease_requests_with_missing_or_oversized_fields_name_the_field() {
        let service = service();
        let cases = [
            (lease_request("", "d0", "r"), "AcquireLeaseRequest.node"),
            (lease_request("n1", " ", "r"), "AcquireLeaseRequest.device"),
            (
                lease_request("n1", "d0", ""),
                "AcquireLeaseRequest.request_id",
            ),
            (
                AcquireLeaseRequest {
                    action: String::new(),
                    ..lease_request("n1", "d0", "r")
                },
                "AcquireLeaseRequest.action",
            ),
            (
                lease_request("n1", &"d".repeat(257), "r"),
                "AcquireLeaseRequest.device: expected at most 256 bytes, got 257",
            ),
        ];
        for (bad, field) in cases {
            let status = service
                .acquire_lease_impl(bad, "peer")
                .expect_err("invalid request");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
        }
        let status = service
            .release_lease_impl(ReleaseLeaseRequest::default(), "peer")
            .expect_err("no lease id");
        assert!(
            status.message().starts_with("ReleaseLeaseRequest.lease_id"),
            "{}",
            status.message()
        );
        // Nothing invalid reached the budget.
        assert_eq!(service.leases.status().active, 0);
    }

    #[test]
    fn a_lease_is_granted_out_of_the_devices_held_and_released_by_its_node() {
        let service = service();
        let decision = service
            .acquire_lease_impl(lease_request("n1", "d0", "r"), "peer")
            .expect("valid");
        assert!(decision.granted, "{}", decision.reason);
        assert_eq!(decision.ttl_ms, 600_000);
        assert_eq!((decision.active, decision.max_concurrent), (1, 4));
        // No device held yet: the budget is the minimum of one, so a second device is a storm.
        assert_eq!(decision.window_budget, 1);
        let storm = service
            .acquire_lease_impl(lease_request("n2", "d0", "r"), "peer")
            .expect("valid");
        assert!(!storm.granted && storm.breaker_open, "{storm:?}");
        assert!(
            storm.reason.starts_with("circuit breaker open"),
            "{}",
            storm.reason
        );

        let release = |node: &str| {
            service
                .release_lease_impl(
                    ReleaseLeaseRequest {
                        lease_id: decision.lease_id.clone(),
                        node: node.to_string(),
                        outcome: "SUCCEEDED".to_string(),
                    },
                    "peer",
                )
                .expect("valid")
                .released
        };
        assert!(!release("n2"), "another node cannot release it");
        assert!(release("n1"));
        assert!(!release("n1"), "released once");
    }

    #[tokio::test]
    async fn watch_streams_end_on_shutdown_and_survive_lag() {
        let (sender, receiver) = broadcast::channel(2);
        let shutdown = CancellationToken::new();
        let mut stream = watch_stream(
            vec![0_u32],
            receiver,
            "test",
            "peer".into(),
            shutdown.clone(),
        );
        for i in 1..=5 {
            sender.send(i).expect("a receiver exists");
        }
        // The initial item, then (after skipping the lagged ones) the newest two.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let item = stream.next().await.expect("open").expect("ok");
            seen.push(item);
        }
        assert_eq!(seen, vec![0, 4, 5]);
        shutdown.cancel();
        assert!(stream.next().await.is_none());
    }
}
