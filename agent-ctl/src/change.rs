//! The commands that change a device, a process or files: `reset-device`, `calibrate`,
//! `set-power-limit`, `disable`, `enable`, `inject-fault`, `kill-process`, `clean-files`. Each sends one
//! action request carrying `--yes`, `--dry-run` and the invocation's idempotency key, prints
//! the agent's result, and fails (exit 1) unless the outcome is SUCCEEDED.

use std::time::Duration;

use anyhow::anyhow;
use health_proto::v1 as pb;

use crate::cli::ResetKindArg;
use crate::invocation::{ActionRequest, Invocation};
use crate::processes;

/// Reads `s` as a value of a proto enum: `failing-reset` → `FAULT_KIND_FAILING_RESET`.
pub(crate) fn parse_enum<T>(
    what: &str,
    s: &str,
    prefix: &str,
    from: impl Fn(&str) -> Option<T>,
    choices: &str,
) -> anyhow::Result<T> {
    let name = format!("{prefix}{}", s.to_ascii_uppercase().replace('-', "_"));
    from(&name).ok_or_else(|| anyhow!("--{what} {s:?}: expected one of {choices}"))
}

/// An optional filter such as `--kind`: 0 (any) when not given.
pub(crate) fn parse_filter<T: Into<i32>>(
    what: &str,
    given: Option<&str>,
    prefix: &str,
    from: impl Fn(&str) -> Option<T>,
    choices: &str,
) -> anyhow::Result<i32> {
    given.map_or(Ok(0), |s| {
        parse_enum(what, s, prefix, from, choices).map(Into::into)
    })
}

pub(crate) async fn reset_device(
    ctl: &mut Invocation,
    id: &str,
    kind: &ResetKindArg,
    recalibrate: bool,
    verify: bool,
) -> anyhow::Result<()> {
    let kind = if kind.soft {
        pb::ResetKind::Soft
    } else if kind.hard {
        pb::ResetKind::Hard
    } else {
        pb::ResetKind::PowerCycle
    };
    let request = pb::ResetDeviceRequest {
        id: id.to_string(),
        kind: kind as i32,
        recalibrate_after: recalibrate,
        verify_after: verify,
        ..Default::default()
    };
    ctl.act(request).await
}

pub(crate) async fn calibrate(ctl: &mut Invocation, id: &str) -> anyhow::Result<()> {
    let request = pb::CalibrateDeviceRequest {
        id: id.to_string(),
        ..Default::default()
    };
    ctl.act(request).await
}

pub(crate) async fn set_power_limit(
    ctl: &mut Invocation,
    id: &str,
    watts: f64,
) -> anyhow::Result<()> {
    let request = pb::SetPowerLimitRequest {
        id: id.to_string(),
        watts,
        ..Default::default()
    };
    ctl.act(request).await
}

/// `enable` and `disable`.
pub(crate) async fn set_enabled(
    ctl: &mut Invocation,
    id: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let request = pb::SetDeviceEnabledRequest {
        id: id.to_string(),
        enabled,
        ..Default::default()
    };
    ctl.act(request).await
}

pub(crate) async fn inject_fault(ctl: &mut Invocation, id: &str, kind: &str) -> anyhow::Result<()> {
    let names = health_hal::FaultKind::NAMES;
    let fault = parse_enum(
        "kind",
        kind,
        "FAULT_KIND_",
        pb::FaultKind::from_str_name,
        names,
    )
    .map_err(|_| anyhow!("fault kind {kind:?}: expected one of {names}"))?;
    let request = pb::InjectFaultRequest {
        id: id.to_string(),
        fault: fault as i32,
        ..Default::default()
    };
    ctl.act(request).await
}

/// Sent once, over the connection that read the pid's start time (no retry when the agent is
/// unavailable, unlike the device actions).
/// `systemctl restart` can take as long as the unit's stop and start timeouts; the agent's
/// own deadline for it is 200 s.
pub(crate) async fn restart_service(ctl: &mut Invocation, name: &str) -> anyhow::Result<()> {
    let request = ctl.with_intent(crate::services::restart_request(name));
    let agent = ctl.agent().await?;
    let mut request = ctl.req(request);
    request.set_timeout(ctl.cli.timeout.max(Duration::from_secs(210)));
    let r = pb::RestartServiceRequest::send(agent, request)
        .await?
        .into_inner();
    ctl.report_action(r)
}

pub(crate) async fn kill_process(
    ctl: &mut Invocation,
    pid: u32,
    signal: &str,
    escalate_after: Option<Duration>,
) -> anyhow::Result<()> {
    let signal = processes::signal(signal)?;
    let mut agent = ctl.agent().await?;
    // The start time the agent shows for this pid now: the agent refuses the kill if the pid
    // has been reused by the time the request arrives.
    let node = agent
        .get_node(ctl.req(pb::GetNodeRequest {}))
        .await?
        .into_inner();
    let request = processes::kill_request(pid, signal, escalate_after, node.host.as_ref())?;
    // The agent may wait out the escalation and the exit grace.
    let mut request = ctl.req(ctl.with_intent(request));
    request.set_timeout(
        ctl.cli.timeout + escalate_after.unwrap_or_default() + Duration::from_secs(10),
    );
    let r = pb::KillProcessRequest::send(agent, request)
        .await?
        .into_inner();
    ctl.report_action(r)
}

/// Runs a `[[cleanup]]` rule (or, with `--dry-run`, asks what it would remove).
pub(crate) async fn clean_files(ctl: &mut Invocation, rule: &str) -> anyhow::Result<()> {
    let request = pb::CleanFilesRequest {
        rule: rule.to_string(),
        ..Default::default()
    };
    ctl.act(request).await
}
