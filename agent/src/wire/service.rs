//! The `health.v1.Agent` gRPC service: reads come from the node's snapshots, every mutating
//! call goes through [`crate::action::Actions`]. Argument errors are INVALID_ARGUMENT naming
//! the field; an unknown device is NOT_FOUND; an action the device cannot do is
//! FAILED_PRECONDITION. An action that ran and failed is a normal reply whose outcome says so.
//! The caller and its role come from [`super::authn`], which every request passes first; a
//! caller below operator gets PERMISSION_DENIED from the action path.
//!
//! The remediation calls are the exception to "through `Actions`": they change the engine's
//! ladders, not a device, so [`crate::remediation::Remediation`] checks the role and audits
//! them itself; this module only maps its refusals to gRPC codes.

use std::pin::Pin;
use std::sync::Arc;

use health_proto::v1 as pb;
use health_proto::v1::agent_server::Agent;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert;
use crate::action::composite::AfterReset;
use crate::action::{ActionError, ActionRequest, Actions, Requested};
use crate::auth::Caller;
use crate::device::{DeviceAction, DeviceProbe};
use crate::model::NodeSnapshot;
use crate::model::Outcome;
use crate::node::Node;
use crate::remediation::view::RemediationReport;
use crate::remediation::ControlError;

pub struct AgentService {
    pub node: Arc<Node>,
    pub actions: Arc<Actions>,
    /// The remediation engine: its state and the operator's controls.
    pub remediation: Arc<crate::remediation::Remediation>,
    /// Fed by the reporter. When the reporter stops at shutdown its sender drops, which ends
    /// every WatchHealth stream, so the server's graceful stop is not held open by watchers.
    pub reports: watch::Receiver<Arc<NodeSnapshot>>,
    pub prober: Arc<crate::probe::Prober>,
}

fn probe_status(e: crate::probe::ProbeError) -> Status {
    use crate::probe::ProbeError as E;
    match e {
        E::NotAllowed(m) => Status::permission_denied(m),
        E::Input(m) => Status::invalid_argument(m),
        E::Busy => Status::resource_exhausted(e.to_string()),
        E::OverBudget(_) => Status::deadline_exceeded(e.to_string()),
    }
}

/// Who is calling, as [`super::authn`] established it. Without it (the service mounted
/// without the wrapper) the caller has no role, so nothing is allowed.
fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller {
            identity: "unauthenticated".into(),
            role: None,
        })
}

/// Fields 10-12 of every mutating request.
#[derive(Clone)]
struct Safety {
    confirm: bool,
    dry_run: bool,
    idempotency_key: String,
}

macro_rules! safety {
    ($r:expr) => {
        Safety {
            confirm: $r.confirm,
            dry_run: $r.dry_run,
            idempotency_key: $r.idempotency_key.clone(),
        }
    };
}

const MAX_IDEMPOTENCY_KEY: usize = 128;

fn device_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument("id: a device id is required"))
    } else {
        Ok(id)
    }
}

fn to_status(e: ActionError) -> Status {
    match e {
        ActionError::NoSuchDevice(_) => Status::not_found(e.to_string()),
        ActionError::NotFound(m) => Status::not_found(m),
        ActionError::InvalidArgument(m) => Status::invalid_argument(m),
        ActionError::NotPossible(m) => Status::failed_precondition(m),
        ActionError::PermissionDenied(m) => Status::permission_denied(m),
        ActionError::Unsafe(m) => Status::failed_precondition(m),
        ActionError::AuditUnavailable(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The remediation controls' refusals, as gRPC codes; the engine's messages name the target
/// and what was expected.
fn control_status(e: ControlError) -> Status {
    match e {
        ControlError::NoSuchTarget(_) => Status::not_found(e.to_string()),
        ControlError::PermissionDenied(m) => Status::permission_denied(m),
        ControlError::NotPossible(m) => Status::failed_precondition(m),
        ControlError::InvalidArgument(m) => Status::invalid_argument(m),
    }
}

fn remediation_reply(
    r: Result<RemediationReport, ControlError>,
) -> Result<Response<pb::RemediationStatus>, Status> {
    r.map(|report| Response::new(convert::remediation(&report)))
        .map_err(control_status)
}

/// `device_id` of the remediation calls that take one target or all: empty means the whole
/// node (pause, resume) or every device (get).
fn whole_node_if_empty(id: &str) -> Option<&str> {
    (!id.is_empty()).then_some(id)
}

/// `device_id` of approve and clear, which act on one ladder.
fn remediation_target(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument(
            "device_id: the device (or remediation target) whose ladder to act on is required",
        ))
    } else {
        Ok(id)
    }
}

/// The subject of a maintenance call: exactly one of a device id and the whole node.
fn maintenance_subject(device_id: &str, node: bool) -> Result<&str, Status> {
    match (device_id.is_empty(), node) {
        (false, false) => Ok(device_id),
        (true, true) => Ok(crate::maintenance::NODE),
        (false, true) => Err(Status::invalid_argument(format!(
            "device_id and node: expected exactly one, found both (device_id {device_id:?} and node = true)"
        ))),
        (true, false) => Err(Status::invalid_argument(
            "device_id and node: expected exactly one (a device id, or node = true), found neither",
        )),
    }
}

/// A pause's reason goes into the audit log and every status reply: one paragraph, not a file.
const MAX_PAUSE_REASON: usize = 1024;

impl AgentService {
    /// The action request for a call, its arguments checked.
    fn request<T>(
        &self,
        req: &Request<T>,
        id: &str,
        what: Requested,
        safety: Safety,
    ) -> Result<ActionRequest, Status> {
        let id = device_id(id)?;
        if safety.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Status::invalid_argument(format!(
                "idempotency_key: expected at most {MAX_IDEMPOTENCY_KEY} bytes"
            )));
        }
        Ok(ActionRequest {
            caller: caller(req),
            device_id: id.to_string(),
            what,
            confirm: safety.confirm,
            dry_run: safety.dry_run,
            idempotency_key: safety.idempotency_key,
            follows: None,
            trigger: String::new(),
        })
    }

    /// A remediation control's reply; a caller refused for its role counts towards
    /// ACCESS_DENIED like one refused by the action path.
    fn control_reply(
        &self,
        who: &Caller,
        r: Result<RemediationReport, ControlError>,
    ) -> Result<Response<pb::RemediationStatus>, Status> {
        if matches!(r, Err(ControlError::PermissionDenied(_))) {
            self.node.denied.note(&who.identity);
        }
        remediation_reply(r)
    }

    /// Every window in force (the node's, the operators' on devices, SLURM's), and the result
    /// of the start or end that asked.
    fn maintenance_status(&self, result: Option<pb::ActionResult>) -> pb::MaintenanceStatus {
        let now = std::time::SystemTime::now();
        let mut windows: Vec<pb::MaintenanceWindow> = Vec::new();
        if let Some(w) = self.node.maintenance.get(crate::maintenance::NODE, now) {
            windows.push(pb::MaintenanceWindow {
                subject: crate::maintenance::NODE.into(),
                maintenance: Some(convert::maintenance(&w)),
            });
        }
        for d in &self.node.devices {
            if let Some(w) = self
                .node
                .device_status(&d.id)
                .and_then(|s| s.maintenance.clone())
            {
                windows.push(pb::MaintenanceWindow {
                    subject: d.id.clone(),
                    maintenance: Some(convert::maintenance(&w)),
                });
            }
        }
        pb::MaintenanceStatus {
            windows,
            result,
            max_maintenance_seconds: self.actions.max_maintenance().as_secs(),
        }
    }

    async fn maintenance_action<T>(
        &self,
        req: &Request<T>,
        subject: &str,
        what: Requested,
        safety: Safety,
    ) -> Result<Response<pb::MaintenanceStatus>, Status> {
        let request = self.request(req, subject, what, safety)?;
        let record = self.actions.run(request).await.map_err(to_status)?;
        Ok(Response::new(
            self.maintenance_status(Some(convert::action(&record))),
        ))
    }

    async fn act<T>(
        &self,
        req: &Request<T>,
        id: &str,
        what: Requested,
        safety: Safety,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let request = self.request(req, id, what, safety)?;
        let record = self.actions.run(request).await.map_err(to_status)?;
        Ok(Response::new(convert::action(&record)))
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::NodeSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn start_maintenance(
        &self,
        req: Request<pb::StartMaintenanceRequest>,
    ) -> Result<Response<pb::MaintenanceStatus>, Status> {
        let r = req.get_ref();
        let subject = maintenance_subject(&r.device_id, r.node)?;
        let what = Requested::StartMaintenance {
            for_seconds: r.for_seconds,
            reason: r.reason.clone(),
        };
        let safety = Safety {
            confirm: true,
            dry_run: false,
            idempotency_key: r.idempotency_key.clone(),
        };
        self.maintenance_action(&req, subject, what, safety).await
    }
    async fn end_maintenance(
        &self,
        req: Request<pb::EndMaintenanceRequest>,
    ) -> Result<Response<pb::MaintenanceStatus>, Status> {
        let r = req.get_ref();
        let subject = maintenance_subject(&r.device_id, r.node)?;
        let safety = Safety {
            confirm: true,
            dry_run: false,
            idempotency_key: r.idempotency_key.clone(),
        };
        self.maintenance_action(&req, subject, Requested::EndMaintenance, safety)
            .await
    }
    async fn list_maintenance(
        &self,
        _: Request<pb::ListMaintenanceRequest>,
    ) -> Result<Response<pb::MaintenanceStatus>, Status> {
        Ok(Response::new(self.maintenance_status(None)))
    }
    async fn get_node(
        &self,
        _: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeSnapshot>, Status> {
        Ok(Response::new(convert::snapshot(&self.node.snapshot())))
    }

    async fn list_devices(
        &self,
        _: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        // Through the node, so that the conditions the remediation engine raises show too.
        let devices = self
            .node
            .devices
            .iter()
            .filter_map(|d| self.node.device_status(&d.id))
            .map(|s| convert::device(&s))
            .collect();
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let id = device_id(&req.get_ref().id)?;
        let status = self
            .node
            .device_status(id)
            .ok_or_else(|| Status::not_found(format!("no device {id:?} on this node")))?;
        Ok(Response::new(convert::device(&status)))
    }

    type WatchHealthStream = SnapshotStream;

    async fn watch_health(
        &self,
        _: Request<pb::WatchHealthRequest>,
    ) -> Result<Response<Self::WatchHealthStream>, Status> {
        // A watch channel holds only the newest snapshot: a slow reader skips ahead instead of
        // growing a queue, and cannot slow the reporter or other readers.
        let now = convert::snapshot(&self.node.snapshot());
        let mut rx = self.reports.clone();
        rx.mark_unchanged();
        let updates = tokio_stream::wrappers::WatchStream::from_changes(rx)
            .map(|s| Ok(convert::snapshot(&s)));
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(now)).chain(updates),
        )))
    }

    async fn reset_device(
        &self,
        req: Request<pb::ResetDeviceRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        let kind = convert::reset_kind(r.kind).ok_or_else(|| {
            Status::invalid_argument(
                "kind: expected RESET_KIND_SOFT, RESET_KIND_HARD or RESET_KIND_POWER_CYCLE",
            )
        })?;
        let safety = safety!(r);
        let request = self.request(
            &req,
            &r.id,
            Requested::Device(DeviceAction::Reset(kind)),
            safety,
        )?;
        let after = AfterReset {
            recalibrate: r.recalibrate_after,
            verify: r.verify_after,
        };
        let record = self
            .actions
            .reset(request, kind, after)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::action(&record)))
    }

    async fn calibrate_device(
        &self,
        req: Request<pb::CalibrateDeviceRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        let (id, safety) = (r.id.clone(), safety!(r));
        self.act(
            &req,
            &id,
            Requested::Device(DeviceAction::Calibrate),
            safety,
        )
        .await
    }

    async fn set_power_limit(
        &self,
        req: Request<pb::SetPowerLimitRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        // The range check is in the action path, so that a refused value is recorded too.
        self.act(
            &req,
            &r.id,
            Requested::Device(DeviceAction::SetPowerLimit(r.watts)),
            safety!(r),
        )
        .await
    }

    async fn set_device_enabled(
        &self,
        req: Request<pb::SetDeviceEnabledRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        self.act(
            &req,
            &r.id,
            Requested::Device(DeviceAction::SetEnabled(r.enabled)),
            safety!(r),
        )
        .await
    }

    async fn run_diagnostics(
        &self,
        req: Request<pb::RunDiagnosticsRequest>,
    ) -> Result<Response<pb::RunDiagnosticsResponse>, Status> {
        let r = req.get_ref();
        let id = device_id(&r.id)?;
        let full = match pb::DiagnosticsLevel::try_from(r.level) {
            Ok(pb::DiagnosticsLevel::Quick | pb::DiagnosticsLevel::Unspecified) => false,
            Ok(pb::DiagnosticsLevel::Full) => true,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "level: unknown value {}",
                    r.level
                )))
            }
        };
        let dev = self
            .node
            .device(id)
            .ok_or_else(|| Status::not_found(format!("no device {id:?} on this node")))?;
        let t0 = std::time::Instant::now();
        let (outcome, message) = dev.probe(DeviceProbe::ReadNow).await;
        let mut checks_passed = if outcome == Outcome::Succeeded {
            vec![format!("read within deadline: {message}")]
        } else {
            vec![]
        };
        // FULL adds the known-answer probe on devices that compute (MATVEC). Both are
        // read-only: the probe only has the device multiply vectors, on its supervisor.
        let mut unfinished = None;
        if full
            && dev
                .status()
                .capabilities
                .contains(&health_hal::Capability::Matvec)
        {
            match dev.probe(DeviceProbe::KnownAnswer).await {
                (Outcome::Succeeded, msg) => checks_passed.push(msg),
                // Its findings are conditions of the device now, listed below.
                (Outcome::Failed, _) => {}
                (_, msg) => unfinished = Some(msg),
            }
        }
        // As GetDevice shows it: an exhausted remediation ladder is a finding too.
        let status = self.node.device_status(id).unwrap_or_else(|| dev.status());
        let mut findings: Vec<pb::Condition> =
            status.conditions.iter().map(convert::condition).collect();
        if let Some(msg) = unfinished {
            // A probe that could not finish changes no condition; say why here.
            findings.push(convert::condition(&health_hal::Condition::new(
                health_hal::ConditionCode::DeviceError,
                health_hal::Severity::Warning,
                id,
                msg,
                std::time::SystemTime::now(),
            )));
        }
        Ok(Response::new(pb::RunDiagnosticsResponse {
            device_id: id.to_string(),
            state: convert::state(status.state),
            checks_passed,
            findings,
            duration_ms: t0.elapsed().as_millis() as u64,
        }))
    }

    async fn probe_matrix(
        &self,
        req: Request<pb::ProbeMatrixRequest>,
    ) -> Result<Response<pb::ProbeMatrixResponse>, Status> {
        let r = req.get_ref();
        if r.path.is_empty() {
            return Err(Status::invalid_argument(
                "path: a problem file path is required",
            ));
        }
        if !(r.read_noise.is_finite() && (0.0..=1.0).contains(&r.read_noise)) {
            return Err(Status::invalid_argument(format!(
                "read_noise: expected 0..=1, got {}",
                r.read_noise
            )));
        }
        if r.bits.is_some_and(|b| !(1..=64).contains(&b)) {
            return Err(Status::invalid_argument("bits: expected 1..=64"));
        }
        let path = self
            .prober
            .allowed(std::path::Path::new(&r.path))
            .map_err(probe_status)?;
        let report = self
            .prober
            .run(path, r.bits, r.read_noise)
            .await
            .map_err(probe_status)?;
        let findings = crate::probe::conditions(&report, std::time::SystemTime::now());
        let report_json = serde_json::to_string(&report)
            .map_err(|e| Status::internal(format!("encoding the report: {e}")))?;
        Ok(Response::new(pb::ProbeMatrixResponse {
            report_json,
            findings: findings.iter().map(convert::condition).collect(),
        }))
    }

    async fn list_actions(
        &self,
        req: Request<pb::ListActionsRequest>,
    ) -> Result<Response<pb::ListActionsResponse>, Status> {
        let r = req.get_ref();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) } as usize;
        let dev = (!r.device_id.is_empty()).then_some(r.device_id.as_str());
        let actions = self
            .actions
            .recent(limit, dev)
            .iter()
            .map(convert::action)
            .collect();
        Ok(Response::new(pb::ListActionsResponse { actions }))
    }

    async fn inject_fault(
        &self,
        req: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        let fault = convert::fault_kind(r.fault).ok_or_else(|| {
            Status::invalid_argument("fault: expected one of FAULT_KIND_OVERHEAT, _HANG, _DRIFT, _FAILING_RESET, _VANISH, _CLEAR")
        })?;
        self.act(&req, &r.id, Requested::InjectFault(fault), safety!(r))
            .await
    }

    async fn get_remediation(
        &self,
        req: Request<pb::GetRemediationRequest>,
    ) -> Result<Response<pb::RemediationStatus>, Status> {
        let target = whole_node_if_empty(&req.get_ref().device_id);
        remediation_reply(self.remediation.report(target))
    }

    async fn approve_remediation(
        &self,
        req: Request<pb::ApproveRemediationRequest>,
    ) -> Result<Response<pb::RemediationStatus>, Status> {
        let id = remediation_target(&req.get_ref().device_id)?;
        let who = caller(&req);
        self.control_reply(&who, self.remediation.approve(&who, id).await)
    }

    async fn pause_remediation(
        &self,
        req: Request<pb::PauseRemediationRequest>,
    ) -> Result<Response<pb::RemediationStatus>, Status> {
        let r = req.get_ref();
        let duration = (r.for_seconds != 0).then(|| std::time::Duration::from_secs(r.for_seconds));
        if r.reason.len() > MAX_PAUSE_REASON {
            return Err(Status::invalid_argument(format!(
                "reason: expected at most {MAX_PAUSE_REASON} bytes"
            )));
        }
        let target = whole_node_if_empty(&r.device_id);
        let who = caller(&req);
        self.control_reply(
            &who,
            self.remediation
                .pause(&who, target, duration, &r.reason)
                .await,
        )
    }

    async fn resume_remediation(
        &self,
        req: Request<pb::ResumeRemediationRequest>,
    ) -> Result<Response<pb::RemediationStatus>, Status> {
        let target = whole_node_if_empty(&req.get_ref().device_id);
        let who = caller(&req);
        self.control_reply(&who, self.remediation.resume(&who, target).await)
    }

    async fn clear_remediation(
        &self,
        req: Request<pb::ClearRemediationRequest>,
    ) -> Result<Response<pb::RemediationStatus>, Status> {
        let id = remediation_target(&req.get_ref().device_id)?;
        let who = caller(&req);
        self.control_reply(&who, self.remediation.clear(&who, id).await)
    }

    async fn restart_service(
        &self,
        req: Request<pb::RestartServiceRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        if r.service.is_empty() {
            return Err(Status::invalid_argument(
                "service: expected the name of a [[service]] rule, found nothing",
            ));
        }
        // Which rules exist and whether one has a unit is checked on the action path, so
        // refusals are recorded too.
        let target = crate::config::service::subject(&r.service);
        let what = Requested::RestartService {
            service: r.service.clone(),
        };
        self.act(&req, &target, what, safety!(r)).await
    }

    async fn clean_files(
        &self,
        req: Request<pb::CleanFilesRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        if r.rule.is_empty() {
            return Err(Status::invalid_argument(
                "rule: the name of a [[cleanup]] rule is required",
            ));
        }
        // Whether the rule exists is the action path's check, so the refusal is recorded.
        let rule = r.rule.clone();
        self.act(
            &req,
            &crate::action::clean::target(&rule),
            Requested::CleanFiles { rule },
            safety!(r),
        )
        .await
    }

    async fn kill_process(
        &self,
        req: Request<pb::KillProcessRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let r = req.get_ref();
        let signal = convert::kill_signal(r.signal).ok_or_else(|| {
            Status::invalid_argument(format!(
                "signal: expected PROCESS_SIGNAL_TERM or PROCESS_SIGNAL_KILL, got {}",
                r.signal
            ))
        })?;
        let kill = crate::action::kill::KillRequest {
            pid: r.pid,
            signal,
            start_ticks: (r.start_time_ticks != 0).then_some(r.start_time_ticks),
            escalate_after: (r.escalate_after_ms != 0)
                .then(|| std::time::Duration::from_millis(u64::from(r.escalate_after_ms))),
        };
        // Argument and guard checks are in the action path, so refusals are recorded too.
        self.act(
            &req,
            &kill.subject(),
            Requested::KillProcess(kill),
            safety!(r),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remediation_refusals_map_to_the_grpc_codes_clients_branch_on() {
        use tonic::Code;
        let cases = [
            (ControlError::NoSuchTarget("gpu-9".into()), Code::NotFound),
            (
                ControlError::PermissionDenied("r".into()),
                Code::PermissionDenied,
            ),
            (
                ControlError::NotPossible("n".into()),
                Code::FailedPrecondition,
            ),
            (
                ControlError::InvalidArgument("i".into()),
                Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            let s = control_status(e);
            assert_eq!(s.code(), code, "{message}");
            assert_eq!(s.message(), message);
        }
    }

    #[test]
    fn approve_and_clear_name_the_missing_device_id() {
        let s = remediation_target("").unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().starts_with("device_id:"), "{}", s.message());
        assert_eq!(remediation_target("loihi-0").unwrap(), "loihi-0");
        assert_eq!(whole_node_if_empty(""), None);
        assert_eq!(whole_node_if_empty("xbar-0"), Some("xbar-0"));
    }
}
