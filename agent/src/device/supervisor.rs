//! One supervisor task per device: the only code that calls the device.
//!
//! The task polls the device on its interval and runs the actions sent to it, one at a time,
//! each under a deadline. A call that misses its deadline is abandoned (its future dropped) and
//! the device is reported DEVICE_UNRESPONSIVE; nothing here waits longer than a deadline, so a
//! hung device cannot stall its supervisor, let alone the agent. The latest [`DeviceStatus`] is
//! published on a `watch` channel that readers (gRPC, the reporter) sample without locking the
//! task.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health_hal::health::evaluate;
use health_hal::{
    rollup, Capability, Condition, ConditionCode, ConditionTracker, Device, FaultInjector,
    HalError, HealthState, ResetKind, Sample, Severity,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{interval, timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{DeviceConfig, KnownAnswerConfig};
use crate::device::known_answer::{KnownAnswerProbe, ProbeRun};
use crate::model::{ActionSummary, Activity, DeviceStatus, Outcome};

/// A change a supervisor makes to its device. Only [`DeviceControl`] sends these, and only
/// [`crate::action::Actions`] holds the controls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceAction {
    Reset(ResetKind),
    Calibrate,
    SetPowerLimit(f64),
    SetEnabled(bool),
}

impl DeviceAction {
    pub fn describe(&self) -> String {
        match self {
            DeviceAction::Reset(k) => format!("reset-{}", k.as_str()),
            DeviceAction::Calibrate => "calibrate".to_string(),
            DeviceAction::SetPowerLimit(w) => format!("set-power-limit {w} W"),
            DeviceAction::SetEnabled(true) => "enable".to_string(),
            DeviceAction::SetEnabled(false) => "disable".to_string(),
        }
    }

    /// The capability the device must have for this action.
    pub fn capability(&self) -> Capability {
        match self {
            DeviceAction::Reset(k) => k.capability(),
            DeviceAction::Calibrate => Capability::Calibrate,
            DeviceAction::SetPowerLimit(_) => Capability::SetPowerLimit,
            DeviceAction::SetEnabled(_) => Capability::EnableDisable,
        }
    }
}

/// A look at the device that changes nothing, run on the supervisor's task so it is ordered
/// with the polls and actions and bounded by the same deadlines. Any reader may ask. The
/// outcome: SUCCEEDED passed; FAILED ran and found a problem, now shown as a condition;
/// REFUSED could not run or did not finish, and no condition changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceProbe {
    /// A fresh read, now, under the read deadline (quick diagnostics).
    ReadNow,
    /// A known-answer probe, now, under the probe deadline (full diagnostics): the device only
    /// multiplies vectors.
    KnownAnswer,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Act(DeviceAction),
    Probe(DeviceProbe),
}

struct Command {
    op: Op,
    reply: oneshot::Sender<(Outcome, String)>,
}

async fn send(commands: &mpsc::Sender<Command>, op: Op) -> (Outcome, String) {
    let (reply, rx) = oneshot::channel();
    if commands.send(Command { op, reply }).await.is_err() {
        return (
            Outcome::Refused,
            "the device supervisor has stopped (agent shutting down)".to_string(),
        );
    }
    rx.await.unwrap_or((
        Outcome::Refused,
        "the device supervisor stopped before the action ran".to_string(),
    ))
}

/// The read side of one supervised device: its status and read-only probes. Shared by the
/// node, the API and anything else that looks.
#[derive(Clone)]
pub struct DeviceHandle {
    pub id: String,
    status: watch::Receiver<Arc<DeviceStatus>>,
    commands: mpsc::Sender<Command>,
}

impl DeviceHandle {
    pub fn status(&self) -> Arc<DeviceStatus> {
        self.status.borrow().clone()
    }

    /// Runs a read-only probe on the supervisor's task, after whatever it is doing now.
    pub async fn probe(&self, probe: DeviceProbe) -> (Outcome, String) {
        send(&self.commands, Op::Probe(probe)).await
    }
}

/// The write side of one supervised device: the only way to change it. Not `Clone`: the
/// daemon hands each one to [`crate::action::Actions`], which runs every change through its
/// checks and the audit log.
pub struct DeviceControl {
    pub id: String,
    commands: mpsc::Sender<Command>,
    injector: Option<Arc<dyn FaultInjector>>,
}

impl DeviceControl {
    /// Runs an action on the supervisor's task, after whatever it is doing now. Returns when
    /// the action has ended (its own deadline bounds that) and the device has been read again.
    pub async fn run(&self, action: DeviceAction) -> (Outcome, String) {
        send(&self.commands, Op::Act(action)).await
    }

    /// The simulator's fault handle, held apart from the device so it works while the device
    /// itself is hung. `None` for real hardware.
    pub fn injector(&self) -> Option<&Arc<dyn FaultInjector>> {
        self.injector.as_ref()
    }
}

/// A supervisor started by [`spawn`]: its read handle, its control, and its task.
pub struct Spawned {
    pub handle: DeviceHandle,
    pub control: DeviceControl,
    pub task: tokio::task::JoinHandle<()>,
}

/// How the last poll ended, when it did not return a sample.
#[derive(Debug, Clone)]
struct Failure {
    code: ConditionCode,
    severity: Severity,
    message: String,
}

struct Supervisor {
    cfg: DeviceConfig,
    device: Box<dyn Device>,
    tracker: ConditionTracker,
    status: watch::Sender<Arc<DeviceStatus>>,
    last_sample: Option<Sample>,
    last_read_at: Option<SystemTime>,
    failure: Option<Failure>,
    consecutive_failures: u64,
    enabled: bool,
    reset_failed: Option<String>,
    activity_override: Option<Activity>,
    last_action: Option<ActionSummary>,
    /// Present for devices with MATVEC when `[probe.known_answer]` is enabled.
    known_answer: Option<KnownAnswerProbe>,
}

/// Starts the supervisor of one device. The task ends when `cancel` fires, after finishing the
/// call in flight (every call is bounded by its deadline).
pub fn spawn(cfg: DeviceConfig, device: Box<dyn Device>, cancel: CancellationToken) -> Spawned {
    spawn_with_probe(cfg, device, &KnownAnswerConfig::default(), cancel)
}

/// [`spawn`], with the known-answer probe's configuration (it runs only on MATVEC devices).
pub fn spawn_with_probe(
    cfg: DeviceConfig,
    device: Box<dyn Device>,
    known_answer: &KnownAnswerConfig,
    cancel: CancellationToken,
) -> Spawned {
    let identity = device.identity();
    let capabilities = device.capabilities();
    let initial = DeviceStatus {
        identity,
        capabilities: capabilities.clone(),
        state: HealthState::Unknown,
        activity: Activity::Running,
        readings: Vec::new(),
        conditions: Vec::new(),
        enabled: true,
        power_limit_watts: None,
        calibration: None,
        last_read_at: None,
        consecutive_failures: 0,
        last_action: None,
        known_answer: None,
        maintenance: None,
    };
    let (status_tx, status_rx) = watch::channel(Arc::new(initial));
    // Actions queue behind the one running; a small queue is enough because each caller waits
    // for its own action to finish.
    let (tx, rx) = mpsc::channel(8);
    let injector = device.fault_injector();
    let handle = DeviceHandle {
        id: cfg.id.clone(),
        status: status_rx,
        commands: tx.clone(),
    };
    let control = DeviceControl {
        id: cfg.id.clone(),
        commands: tx,
        injector,
    };
    let sup = Supervisor {
        cfg,
        device,
        tracker: ConditionTracker::default(),
        status: status_tx,
        last_sample: None,
        last_read_at: None,
        failure: None,
        consecutive_failures: 0,
        enabled: true,
        reset_failed: None,
        activity_override: None,
        last_action: None,
        known_answer: (known_answer.enabled && capabilities.contains(&Capability::Matvec))
            .then(|| KnownAnswerProbe::new(known_answer.clone())),
    };
    let task = tokio::spawn(sup.run(rx, cancel));
    Spawned {
        handle,
        control,
        task,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut tick = interval(self.cfg.poll_interval);
        // After a slow (deadline-bound) poll, continue on the interval instead of bursting.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The probe shares this task with the reads, after them in priority: a read waits at
        // most one probe (its deadline) behind it. Without a probe the tick is never polled.
        let probing = self.known_answer.is_some();
        let mut probe_tick = interval(
            self.known_answer
                .as_ref()
                .map_or(Duration::from_secs(3600), |k| k.interval()),
        );
        probe_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(cmd) = commands.recv() => self.command(cmd).await,
                _ = tick.tick() => self.poll().await,
                _ = probe_tick.tick(), if probing => {
                    // Nothing to learn from an array that cannot be read or is switched off.
                    if self.failure.is_none() && self.enabled && self.reset_failed.is_none() {
                        self.probe().await;
                    }
                }
            }
        }
        tracing::debug!(device = %self.cfg.id, "supervisor stopped");
    }

    async fn poll(&mut self) {
        let deadline = self.cfg.deadline;
        match timeout(deadline, self.device.read()).await {
            Ok(Ok(sample)) => {
                self.last_sample = Some(sample);
                self.last_read_at = Some(SystemTime::now());
                self.failure = None;
                self.consecutive_failures = 0;
            }
            Ok(Err(e)) => {
                self.consecutive_failures += 1;
                let n = self.consecutive_failures;
                self.failure = Some(match e {
                    HalError::Vanished(m) => Failure {
                        code: ConditionCode::DeviceMissing,
                        severity: Severity::Critical,
                        message: format!("{m} ({n} reads in a row)"),
                    },
                    HalError::Timeout(m) => Failure {
                        code: ConditionCode::DeviceUnresponsive,
                        severity: Severity::Critical,
                        message: format!("{m} ({n} reads in a row)"),
                    },
                    other => Failure {
                        code: ConditionCode::DeviceError,
                        // One bad read is a warning; three in a row is a device in trouble.
                        severity: if n >= 3 {
                            Severity::Critical
                        } else {
                            Severity::Warning
                        },
                        message: format!("read failed: {other} ({n} in a row)"),
                    },
                });
            }
            Err(_) => {
                self.consecutive_failures += 1;
                let n = self.consecutive_failures;
                self.failure = Some(Failure {
                    code: ConditionCode::DeviceUnresponsive,
                    severity: Severity::Critical,
                    message: format!(
                        "no answer to a read within the {:.1} s deadline ({n} in a row)",
                        secs(deadline)
                    ),
                });
                tracing::warn!(device = %self.cfg.id, deadline_s = secs(deadline), n, "device read missed its deadline");
            }
        }
        self.publish();
    }

    /// One known-answer probe, then publish; never longer than the probe's deadline.
    async fn probe(&mut self) -> Option<ProbeRun> {
        let bits = self
            .last_sample
            .as_ref()
            .and_then(|s| s.max_of(health_hal::Quantity::EffectiveBits))
            .map(|(_, b)| b);
        let k = self.known_answer.as_mut()?;
        let run = k.run(self.device.as_ref(), bits).await;
        match &run {
            ProbeRun::Passed(m) => tracing::debug!(device = %self.cfg.id, "{m}"),
            ProbeRun::Failing(m) | ProbeRun::Unfinished(m) => {
                tracing::warn!(device = %self.cfg.id, "{m}")
            }
        }
        self.publish();
        Some(run)
    }

    async fn command(&mut self, cmd: Command) {
        let Command { op, reply } = cmd;
        let answer = match op {
            Op::Probe(p) => self.look(p).await,
            Op::Act(a) => self.act(a).await,
        };
        let _ = reply.send(answer);
    }

    async fn look(&mut self, probe: DeviceProbe) -> (Outcome, String) {
        if probe == DeviceProbe::KnownAnswer {
            let answer = match self.probe().await {
                Some(ProbeRun::Passed(msg)) => (Outcome::Succeeded, msg),
                Some(ProbeRun::Failing(msg)) => (Outcome::Failed, msg),
                Some(ProbeRun::Unfinished(msg)) => (Outcome::Refused, msg),
                None => (
                    Outcome::Refused,
                    "no known-answer probe on this device (needs MATVEC and [probe.known_answer] enabled)"
                        .to_string(),
                ),
            };
            return answer;
        }
        self.poll().await;
        match &self.failure {
            None => (Outcome::Succeeded, "fresh read succeeded".to_string()),
            Some(f) => (Outcome::Failed, format!("{}: {}", f.code, f.message)),
        }
    }

    async fn act(&mut self, action: DeviceAction) -> (Outcome, String) {
        self.activity_override = match action {
            DeviceAction::Reset(_) => Some(Activity::Resetting),
            DeviceAction::Calibrate => Some(Activity::Calibrating),
            _ => None,
        };
        self.publish();

        let limit = self.cfg.action_deadline;
        let dev = &self.device;
        let result = timeout(limit, async {
            match action {
                DeviceAction::Reset(kind) => dev
                    .reset(kind)
                    .await
                    .map(|()| format!("{} reset done", kind.as_str())),
                DeviceAction::Calibrate => dev
                    .calibrate()
                    .await
                    .map(|r| format!("calibrated at {:.2} degC", r.temperature_celsius)),
                DeviceAction::SetPowerLimit(w) => dev
                    .set_power_limit(w)
                    .await
                    .map(|()| format!("power limit set to {w} W")),
                DeviceAction::SetEnabled(on) => dev
                    .set_enabled(on)
                    .await
                    .map(|()| if on { "enabled" } else { "disabled" }.to_string()),
            }
        })
        .await;
        self.activity_override = None;

        let (outcome, message) = match result {
            Ok(Ok(msg)) => (Outcome::Succeeded, msg),
            Ok(Err(HalError::Unsupported(m) | HalError::InvalidArgument(m))) => {
                (Outcome::Refused, m)
            }
            Ok(Err(e)) => (Outcome::Failed, e.to_string()),
            Err(_) => (
                Outcome::TimedOut,
                format!("no result within the {:.1} s action deadline", secs(limit)),
            ),
        };
        match (action, outcome) {
            (DeviceAction::Reset(_), Outcome::Succeeded) => {
                self.reset_failed = None;
            }
            (DeviceAction::Reset(kind), Outcome::Failed | Outcome::TimedOut) => {
                self.reset_failed = Some(format!("{} reset failed: {message}", kind.as_str()));
            }
            (DeviceAction::SetEnabled(on), Outcome::Succeeded) => self.enabled = on,
            (DeviceAction::Calibrate, Outcome::Succeeded) => {
                if let Some(k) = &mut self.known_answer {
                    k.calibrated();
                }
            }
            _ => {}
        }
        self.last_action = Some(ActionSummary {
            action: action.describe(),
            outcome,
            finished_at: SystemTime::now(),
            message: message.clone(),
        });
        // Read at once so the caller (and every watcher) sees the device as the action left it.
        self.poll().await;
        // The new baseline is measured right after calibration, and the caller sees whether
        // the reprogrammed array passes.
        let mut message = message;
        if (action, outcome) == (DeviceAction::Calibrate, Outcome::Succeeded)
            && self.failure.is_none()
        {
            if let Some(run) = self.probe().await {
                message = format!("{message}; {}", run.message());
            }
        }
        (outcome, message)
    }

    fn publish(&mut self) {
        let now = SystemTime::now();
        let id = self.cfg.id.clone();
        let mut conditions = Vec::new();
        match (&self.failure, &self.last_sample) {
            (Some(f), _) => {
                conditions.push(Condition::new(f.code, f.severity, &id, &f.message, now))
            }
            (None, Some(sample)) => {
                let caps = self.device.capabilities();
                conditions.extend(evaluate(&id, sample, &self.cfg.limits, &caps, now));
            }
            (None, None) => {}
        }
        if let Some(m) = &self.reset_failed {
            conditions.push(Condition::new(
                ConditionCode::ResetFailed,
                Severity::Critical,
                &id,
                m,
                now,
            ));
        }
        if let Some(k) = &self.known_answer {
            conditions.extend(k.conditions(&id, now));
        }
        if !self.enabled {
            conditions.push(Condition::new(
                ConditionCode::DeviceDisabled,
                Severity::Info,
                &id,
                "disabled by an operator",
                now,
            ));
        }
        let conditions = self.tracker.track(conditions);
        let state = if self.failure.is_none() && self.last_sample.is_none() {
            HealthState::Unknown.max(rollup(&conditions))
        } else {
            rollup(&conditions)
        };
        let powered = self.last_sample.as_ref().is_none_or(|s| s.powered);
        let activity = self
            .activity_override
            .unwrap_or(if self.reset_failed.is_some() {
                Activity::Failed
            } else if !self.enabled {
                Activity::Disabled
            } else if !powered {
                Activity::Off
            } else {
                Activity::Running
            });
        let status = DeviceStatus {
            identity: self.device.identity(),
            capabilities: self.device.capabilities(),
            state,
            activity,
            readings: self
                .last_sample
                .as_ref()
                .map(|s| s.readings.clone())
                .unwrap_or_default(),
            conditions,
            enabled: self.enabled,
            power_limit_watts: self.last_sample.as_ref().and_then(|s| s.power_limit_watts),
            calibration: self.last_sample.as_ref().and_then(|s| s.calibration),
            last_read_at: self.last_read_at,
            consecutive_failures: self.consecutive_failures,
            last_action: self.last_action.clone(),
            known_answer: self.known_answer.as_ref().and_then(|k| k.last().cloned()),
            maintenance: None,
        };
        self.status.send_replace(Arc::new(status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use health_hal::sim::{SimDevice, SimOptions};
    use health_hal::{DeviceKind, FaultKind, Limits};

    fn cfg(id: &str, kind: DeviceKind) -> DeviceConfig {
        DeviceConfig {
            id: id.to_string(),
            kind,
            backend: Backend::Sim(SimOptions::default()),
            poll_interval: Duration::from_millis(100),
            deadline: Duration::from_millis(300),
            action_deadline: Duration::from_secs(10),
            limits: Limits::for_kind(kind),
            simulator: false,
        }
    }

    fn start(id: &str, kind: DeviceKind) -> (DeviceHandle, DeviceControl, CancellationToken) {
        let cancel = CancellationToken::new();
        let dev = Box::new(SimDevice::new(id, kind, SimOptions::default()));
        let s = spawn(cfg(id, kind), dev, cancel.clone());
        (s.handle, s.control, cancel)
    }

    fn inject(c: &DeviceControl, fault: FaultKind) {
        c.injector().expect("a simulated device").inject(fault);
    }

    async fn wait_for(
        h: &DeviceHandle,
        what: &str,
        f: impl Fn(&DeviceStatus) -> bool,
    ) -> Arc<DeviceStatus> {
        for _ in 0..200 {
            let s = h.status();
            if f(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}: {:?}", h.status());
    }

    // A paused clock: the device's time and the deadlines are tokio's, so the bound below is
    // exact rather than a guess at how busy the machine is.
    #[tokio::test(start_paused = true)]
    async fn hung_device_becomes_unresponsive_within_its_deadline_and_recovers_on_hard_reset() {
        let (h, c, cancel) = start("loihi-0", DeviceKind::Loihi2);
        wait_for(&h, "first read", |s| s.state == HealthState::Ok).await;
        inject(&c, FaultKind::Hang);
        let t0 = tokio::time::Instant::now();
        let s = wait_for(&h, "unresponsive", |s| {
            s.conditions
                .iter()
                .any(|c| c.code == ConditionCode::DeviceUnresponsive)
        })
        .await;
        // At most one poll interval (0.1 s) to the next read, its deadline (0.3 s), and one
        // step of `wait_for` (20 ms).
        assert!(
            t0.elapsed() <= Duration::from_millis(420),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(s.state, HealthState::Critical);
        assert!(!s.readings.is_empty(), "last good readings are kept");

        let (outcome, msg) = c.run(DeviceAction::Reset(ResetKind::Hard)).await;
        assert_eq!(outcome, Outcome::Succeeded, "{msg}");
        let s = h.status();
        assert_eq!(s.state, HealthState::Ok, "{:?}", s.conditions);
        assert_eq!(s.last_action.as_ref().unwrap().action, "reset-hard");
        cancel.cancel();
    }

    #[tokio::test]
    async fn failed_reset_is_a_critical_condition_until_a_reset_succeeds() {
        let (h, c, cancel) = start("sp-0", DeviceKind::Spinnaker);
        wait_for(&h, "first read", |s| s.last_read_at.is_some()).await;
        inject(&c, FaultKind::FailingReset);
        let (outcome, _) = c.run(DeviceAction::Reset(ResetKind::Soft)).await;
        assert_eq!(outcome, Outcome::Failed);
        let s = h.status();
        assert_eq!(s.activity, Activity::Failed);
        assert!(s
            .conditions
            .iter()
            .any(|c| c.code == ConditionCode::ResetFailed));
        inject(&c, FaultKind::Clear);
        assert_eq!(
            c.run(DeviceAction::Reset(ResetKind::Soft)).await.0,
            Outcome::Succeeded
        );
        assert!(h
            .status()
            .conditions
            .iter()
            .all(|c| c.code != ConditionCode::ResetFailed));
        cancel.cancel();
    }

    #[tokio::test]
    async fn vanished_device_is_missing_and_unsupported_actions_are_refused() {
        let (h, c, cancel) = start("ph-0", DeviceKind::Photonic);
        let (outcome, msg) = c.run(DeviceAction::SetPowerLimit(5.0)).await;
        assert_eq!(outcome, Outcome::Refused, "{msg}");
        inject(&c, FaultKind::Vanish);
        let s = wait_for(&h, "missing", |s| {
            s.conditions
                .iter()
                .any(|c| c.code == ConditionCode::DeviceMissing)
        })
        .await;
        assert_eq!(s.state, HealthState::Critical);
        cancel.cancel();
    }

    fn calibration_stale(s: &DeviceStatus) -> Vec<String> {
        s.conditions
            .iter()
            .filter(|c| c.code == ConditionCode::CalibrationStale)
            .map(|c| c.message.clone())
            .collect()
    }

    /// A crossbar card read through sysfs (an hwmon chip with a writable power cap) can be
    /// neither calibrated nor asked about its calibration: no CALIBRATION_STALE, whose runbook
    /// step (`agent-ctl calibrate`) it would refuse.
    #[tokio::test]
    async fn a_sysfs_crossbar_is_not_stale_for_a_calibration_it_cannot_have() {
        let root = tempfile::tempdir().unwrap();
        let chip = root.path().join("class/hwmon/hwmon0");
        std::fs::create_dir_all(&chip).unwrap();
        for (file, content) in [
            ("name", "xbar\n"),
            ("temp1_input", "41000\n"),
            ("power1_average", "8000000\n"),
            ("power1_cap", "15000000\n"),
        ] {
            std::fs::write(chip.join(file), content).unwrap();
        }
        let sysfs = health_hal::sysfs::SysfsConfig {
            root: root.path().to_path_buf(),
            hwmon: Some("xbar".into()),
            power_cap_sensor: Some(1),
            ..health_hal::sysfs::SysfsConfig::default()
        };
        let dev = health_hal::sysfs::SysfsDevice::new("xbar-0", DeviceKind::AnalogCrossbar, sysfs)
            .unwrap();
        let mut c = cfg("xbar-0", DeviceKind::AnalogCrossbar);
        c.deadline = Duration::from_secs(5);
        assert!(c.limits.calibration_max_age.is_some(), "the kind has one");
        let cancel = CancellationToken::new();
        let h = spawn(c, Box::new(dev), cancel.clone()).handle;
        let s = wait_for(&h, "first read", |s| s.last_read_at.is_some()).await;
        assert!(!s.capabilities.contains(&Capability::Calibrate));
        assert_eq!(s.calibration, None);
        assert!(calibration_stale(&s).is_empty(), "{:?}", s.conditions);
        assert_eq!(s.state, HealthState::Ok, "{:?}", s.conditions);
        assert_eq!(s.power_limit_watts, Some(15.0));
        cancel.cancel();
    }

    /// A vendor tool that calibrates out of band and reports when: no calibrate operation
    /// here, but the record it reports is still held to the kind's maximum age.
    #[tokio::test]
    async fn a_calibration_reported_by_the_device_itself_is_age_checked() {
        let thirty_hours_ago = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 30 * 3600;
        let reply = format!(
            r#"{{"version":1,"readings":[{{"sensor":"die","quantity":"temperature_celsius","value":41.0}}],"calibrated_at_unix":{thirty_hours_ago},"calibration_temperature_celsius":40.0}}"#
        );
        let mut tool = health_hal::plugin::PluginConfig::new("/bin/sh");
        tool.args = vec!["-c".into(), format!("printf '%s' '{reply}'")];
        tool.read = Some(Vec::new());
        let dev = health_hal::plugin::PluginDevice::new("xbar-1", DeviceKind::AnalogCrossbar, tool)
            .unwrap();
        let mut c = cfg("xbar-1", DeviceKind::AnalogCrossbar);
        c.deadline = Duration::from_secs(10);
        let cancel = CancellationToken::new();
        let h = spawn(c, Box::new(dev), cancel.clone()).handle;
        let s = wait_for(&h, "first read", |s| s.last_read_at.is_some()).await;
        assert!(!s.capabilities.contains(&Capability::Calibrate));
        let stale = calibration_stale(&s);
        assert_eq!(stale.len(), 1, "{:?}", s.conditions);
        assert!(stale[0].contains("30.0 h ago"), "{}", stale[0]);
        assert_eq!(s.state, HealthState::Warning);
        cancel.cancel();
    }

    #[tokio::test]
    async fn disable_is_visible_as_activity_and_an_info_condition() {
        let (h, c, cancel) = start("x-0", DeviceKind::AnalogCrossbar);
        assert_eq!(
            c.run(DeviceAction::SetEnabled(false)).await.0,
            Outcome::Succeeded
        );
        let s = h.status();
        assert_eq!(s.activity, Activity::Disabled);
        assert!(!s.enabled);
        assert!(s
            .conditions
            .iter()
            .any(|c| c.code == ConditionCode::DeviceDisabled));
        cancel.cancel();
    }
}
