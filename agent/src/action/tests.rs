//! Unit tests of the action path on a simulated device and a real audit log in a private
//! directory: the order of the checks, idempotency keys (replay, conflict, restore), the
//! interrupted guard, and an audit log that cannot be written. Each runs in milliseconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use health_hal::sim::{SimDevice, SimOptions};
use health_hal::{DeviceKind, Limits, ResetKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ActionError, ActionRequest, Actions, Requested};
use crate::audit::{self, AuditLog, Phase, Record, Recorded};
use crate::auth::{Caller, Role};
use crate::config::{Backend, DeviceConfig, DeviceSafety, SafetyConfig};
use crate::device::{supervisor, DeviceAction};
use crate::host::HostStatus;
use crate::model::{Activity, Outcome};
use crate::node::Node;

const DEVICE: &str = "loihi-0";

struct Fixture {
    actions: Arc<Actions>,
    node: Arc<Node>,
    log: PathBuf,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn safety(cooldown: Duration) -> SafetyConfig {
    SafetyConfig {
        default: DeviceSafety {
            cooldown,
            max_resets_per_hour: 10,
        },
        per_device: Default::default(),
        max_maintenance: crate::config::DEFAULT_MAX_MAINTENANCE,
        access_denied: Default::default(),
    }
}

/// An agent's action path over one simulated Loihi 2 board, its audit log at `log` (relative
/// to a fresh directory, which `prepare` may fill first).
fn fixture_with_log(log: &str, safety: SafetyConfig, prepare: impl FnOnce(&Path)) -> Fixture {
    fixture_with_cleanup(log, safety, prepare, Vec::new())
}

fn fixture_with_cleanup(
    log: &str,
    safety: SafetyConfig,
    prepare: impl FnOnce(&Path),
    cleanup: Vec<crate::config::CleanupRule>,
) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let cancel = CancellationToken::new();
    let cfg = DeviceConfig {
        id: DEVICE.into(),
        kind: DeviceKind::Loihi2,
        backend: Backend::Sim(SimOptions::default()),
        poll_interval: Duration::from_millis(100),
        deadline: Duration::from_millis(300),
        action_deadline: Duration::from_secs(10),
        limits: Limits::for_kind(DeviceKind::Loihi2),
        simulator: false,
    };
    let dev = Box::new(SimDevice::new(
        DEVICE,
        DeviceKind::Loihi2,
        SimOptions::default(),
    ));
    let spawned = supervisor::spawn(cfg, dev, cancel.clone());
    let (_host_tx, host_rx) = watch::channel(Arc::new(HostStatus::default()));
    let node = Arc::new(Node::new(
        "node-a".into(),
        vec![spawned.handle],
        host_rx,
        None,
        None,
    ));
    let log = dir.path().join(log);
    let audit = AuditLog::open(&log);
    let actions = Arc::new(
        Actions::new(node.clone(), vec![spawned.control], audit, safety).with_cleanup(cleanup),
    );
    Fixture {
        actions,
        node,
        log,
        cancel,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    fixture_with_log("audit.log", safety(Duration::ZERO), |_| {})
}

fn records(path: &Path) -> Vec<Record> {
    audit::recent_entries(path, u64::MAX)
}

fn phases(path: &Path) -> Vec<(Phase, String, Option<Recorded>)> {
    records(path)
        .into_iter()
        .map(|r| (r.phase, r.entry.action, r.entry.outcome))
        .collect()
}

fn request(caller: Caller, device: &str, what: Requested) -> ActionRequest {
    ActionRequest {
        caller,
        device_id: device.into(),
        what,
        confirm: false,
        dry_run: false,
        idempotency_key: String::new(),
        follows: None,
        trigger: String::new(),
    }
}

fn reader() -> Caller {
    Caller {
        identity: "uid 1000 (unix socket)".into(),
        role: Some(Role::Reader),
    }
}

fn operator() -> Caller {
    Caller::local_operator("uid 0 (unix socket)")
}

const DISABLE: Requested = Requested::Device(DeviceAction::SetEnabled(false));
const HARD_RESET: Requested = Requested::Device(DeviceAction::Reset(ResetKind::Hard));

#[tokio::test]
async fn the_role_is_checked_before_the_target_and_the_denial_is_recorded() {
    let f = fixture();
    // A reader naming a device that does not exist learns nothing about it: denied first.
    let err = f
        .actions
        .run(request(reader(), "no-such-device", DISABLE))
        .await
        .expect_err("a reader may not act");
    assert!(matches!(err, ActionError::PermissionDenied(_)), "{err:?}");
    assert_eq!(
        phases(&f.log),
        vec![(Phase::Denied, "disable".into(), Some(Recorded::Denied))]
    );
}

#[tokio::test]
async fn target_then_confirmation_then_limits_each_refusal_recorded() {
    let f = fixture_with_log("audit.log", safety(Duration::from_secs(3600)), |_| {});
    let op = operator;
    // The target first: an unknown device is refused even without confirmation.
    let err = f
        .actions
        .run(request(op(), "no-such-device", HARD_RESET))
        .await
        .expect_err("unknown device");
    assert_eq!(err, ActionError::NoSuchDevice("no-such-device".into()));
    // Then the confirmation a hard reset needs, before the gate is consulted.
    let err = f
        .actions
        .run(request(op(), DEVICE, HARD_RESET))
        .await
        .expect_err("unconfirmed hard reset");
    assert!(
        matches!(&err, ActionError::Unsafe(m) if m.contains("needs confirmation")),
        "{err:?}"
    );
    // Then the gate: the first action runs, the next falls in its hour-long cooldown.
    let first = f
        .actions
        .run(request(op(), DEVICE, DISABLE))
        .await
        .expect("first action runs");
    assert_eq!(first.outcome, Outcome::Succeeded, "{}", first.message);
    let err = f
        .actions
        .run(request(
            op(),
            DEVICE,
            Requested::Device(DeviceAction::SetEnabled(true)),
        ))
        .await
        .expect_err("cooldown");
    assert!(matches!(err, ActionError::Unsafe(_)), "{err:?}");
    let got: Vec<(Phase, Option<Recorded>)> =
        phases(&f.log).into_iter().map(|(p, _, o)| (p, o)).collect();
    assert_eq!(
        got,
        vec![
            (Phase::Refused, Some(Recorded::Refused)),
            (Phase::Refused, Some(Recorded::Refused)),
            (Phase::Begin, None),
            (Phase::End, Some(Recorded::Succeeded)),
            (Phase::Refused, Some(Recorded::Refused)),
        ]
    );
}

#[tokio::test]
async fn a_repeated_key_replays_the_first_result_and_a_reused_key_is_refused_on_record() {
    let f = fixture();
    let mut req = request(operator(), DEVICE, DISABLE);
    req.idempotency_key = "k-1".into();
    let first = f.actions.run(req.clone()).await.expect("runs");
    let again = f.actions.run(req.clone()).await.expect("replays");
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.id, again.id, "the same action, not a second one");
    // The same key for a different request: refused, and the refusal is in the log.
    let mut other = req.clone();
    other.what = Requested::Device(DeviceAction::SetEnabled(true));
    let err = f.actions.run(other).await.expect_err("conflict");
    assert!(
        matches!(&err, ActionError::InvalidArgument(m) if m.contains("already used")),
        "{err:?}"
    );
    let got = phases(&f.log);
    assert_eq!(
        got,
        vec![
            (Phase::Begin, "disable".into(), None),
            (Phase::End, "disable".into(), Some(Recorded::Succeeded)),
            (Phase::Refused, "enable".into(), Some(Recorded::Refused)),
        ],
        "one run for two requests with the key, and the conflict recorded"
    );
}

#[tokio::test]
async fn keys_restored_from_the_log_replay_ended_actions_and_refuse_unended_ones() {
    let f = fixture();
    let mut req = request(operator(), DEVICE, DISABLE);
    req.idempotency_key = "k-2".into();
    let first = f.actions.run(req.clone()).await.expect("runs");
    // A second agent over the same log, as after a restart.
    let g = fixture();
    g.actions.restore_idempotency(&records(&f.log));
    let replayed = g.actions.run(req.clone()).await.expect("replayed");
    assert!(replayed.replayed);
    assert_eq!(replayed.id, first.id);
    assert_eq!(phases(&g.log), vec![], "nothing ran on the restarted agent");

    // A begin with no end on record (the agent stopped mid-action) is never retried.
    let begun: Vec<Record> = records(&f.log)
        .into_iter()
        .filter(|r| r.phase == Phase::Begin)
        .collect();
    let h = fixture();
    h.actions.restore_idempotency(&begun);
    let err = h.actions.run(req).await.expect_err("not guessed at");
    assert!(
        matches!(&err, ActionError::NotPossible(m) if m.contains("end is not on record")),
        "{err:?}"
    );
}

#[test]
fn an_action_cut_off_by_shutdown_is_recorded_as_interrupted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (f, log) = rt.block_on(async {
        let f = fixture();
        let log = f.log.clone();
        // A power cycle takes the simulated board 2.5 s: long enough to stop mid-way.
        let actions = f.actions.clone();
        tokio::spawn(async move {
            let _ = actions
                .run(ActionRequest {
                    confirm: true,
                    ..request(
                        operator(),
                        DEVICE,
                        Requested::Device(DeviceAction::Reset(ResetKind::PowerCycle)),
                    )
                })
                .await;
        });
        // The device resetting means the begin record is durable and the action is on the
        // device: the guard is armed. (The begin line alone is not enough: it is on disk a
        // moment before the task resumes and arms the guard.)
        let dev = f.node.device(DEVICE).expect("device").clone();
        for _ in 0..1000 {
            if dev.status().activity == Activity::Resetting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            dev.status().activity,
            Activity::Resetting,
            "the power cycle started"
        );
        (f, log)
    });
    assert_eq!(
        phases(&log),
        vec![(Phase::Begin, "reset-power-cycle".into(), None)],
        "the action has begun and not ended"
    );
    // Shutdown drops the action's task: its guard writes the record.
    drop(rt);
    let got = phases(&log);
    drop(f);
    assert_eq!(
        got,
        vec![
            (Phase::Begin, "reset-power-cycle".into(), None),
            (
                Phase::Interrupted,
                "reset-power-cycle".into(),
                Some(Recorded::Interrupted)
            ),
        ]
    );
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_the_action_and_leaves_the_device_alone() {
    // The log's directory is a regular file: it can be neither created nor opened.
    let f = fixture_with_log("not-a-dir/audit.log", safety(Duration::ZERO), |dir| {
        std::fs::write(dir.join("not-a-dir"), b"a file").expect("write");
    });
    let err = f
        .actions
        .run(request(operator(), DEVICE, DISABLE))
        .await
        .expect_err("refused");
    assert!(matches!(err, ActionError::AuditUnavailable(_)), "{err:?}");
    let dev = f.node.device(DEVICE).expect("device").status();
    assert!(dev.enabled, "the device was not touched");
    assert!(dev.last_action.is_none());
    assert_eq!(
        f.actions.audit().condition().map(|c| c.code),
        Some(health_hal::ConditionCode::AuditLogUnwritable)
    );
}

fn start_maintenance(for_seconds: u64, reason: &str) -> Requested {
    Requested::StartMaintenance {
        for_seconds,
        reason: reason.into(),
    }
}

#[tokio::test]
async fn maintenance_is_audited_with_the_result_hash_and_extends() {
    let f = fixture();
    let r = f
        .actions
        .run(request(
            operator(),
            DEVICE,
            start_maintenance(60, "swap fan"),
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.message);
    let recs = records(&f.log);
    let end = recs.last().unwrap();
    assert_eq!(end.phase, Phase::End);
    assert_eq!(
        r.audit_hash,
        end.hash.clone().unwrap(),
        "the result's own entry"
    );
    assert!(
        end.entry.args["until"].is_string(),
        "restorable: {:?}",
        end.entry.args
    );
    let w = f.node.maintenance_of(DEVICE).unwrap();
    assert_eq!(w.reason, "swap fan");
    assert_eq!(w.by, "uid 0 (unix socket)");
    assert_eq!(w.audit_hash, r.audit_hash);
    let status = f.node.device_status(DEVICE).unwrap();
    assert_eq!(
        status.maintenance.as_ref().map(|m| m.reason.as_str()),
        Some("swap fan")
    );

    let again = f
        .actions
        .run(request(
            operator(),
            DEVICE,
            start_maintenance(3600, "and the pump"),
        ))
        .await
        .unwrap();
    assert!(again.message.contains("extended"), "{}", again.message);
    let w2 = f.node.maintenance_of(DEVICE).unwrap();
    assert_eq!(w2.started_at, w.started_at);
    assert!(w2.until > w.until);
    assert_eq!(w2.audit_hash, again.audit_hash);

    let ended = f
        .actions
        .run(request(operator(), DEVICE, Requested::EndMaintenance))
        .await
        .unwrap();
    assert_eq!(ended.outcome, Outcome::Succeeded);
    assert!(f.node.maintenance_of(DEVICE).is_none());
    let e = f
        .actions
        .run(request(operator(), DEVICE, Requested::EndMaintenance))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ActionError::NotFound(format!("no maintenance on {DEVICE}"))
    );
}

#[tokio::test]
async fn no_policy_acts_on_a_device_in_maintenance_whatever_path_it_takes() {
    let f = fixture();
    f.actions
        .run(request(
            operator(),
            DEVICE,
            start_maintenance(60, "swap fan"),
        ))
        .await
        .unwrap();
    let policy = Caller::local_operator("policy:thermal");
    let e = f
        .actions
        .run(request(policy, DEVICE, DISABLE))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ActionError::NotPossible(m) if m.contains("in maintenance") && m.contains("swap fan")),
        "{e:?}"
    );
    assert_eq!(records(&f.log).last().unwrap().phase, Phase::Refused);
    assert!(f.node.device(DEVICE).unwrap().status().enabled);
    // An operator still may.
    let r = f
        .actions
        .run(request(operator(), DEVICE, DISABLE))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.message);
}

#[tokio::test]
async fn maintenance_arguments_are_checked_and_refusals_recorded() {
    let f = fixture();
    let e = f
        .actions
        .run(request(operator(), "nope", start_maintenance(60, "x")))
        .await
        .unwrap_err();
    assert_eq!(e, ActionError::NoSuchDevice("nope".into()));
    for secs in [0, 24 * 3600 + 1] {
        let e = f
            .actions
            .run(request(operator(), DEVICE, start_maintenance(secs, "x")))
            .await
            .unwrap_err();
        let ActionError::InvalidArgument(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("for_seconds") && m.contains("max_maintenance"),
            "{m}"
        );
    }
    let e = f
        .actions
        .run(request(operator(), DEVICE, start_maintenance(60, "  ")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ActionError::InvalidArgument(m) if m.starts_with("reason")),
        "{e:?}"
    );
    let e = f
        .actions
        .run(request(reader(), DEVICE, start_maintenance(60, "x")))
        .await
        .unwrap_err();
    assert!(matches!(e, ActionError::PermissionDenied(_)));
    let last = records(&f.log).pop().unwrap();
    assert_eq!(last.phase, Phase::Denied);
    assert!(f.node.maintenance_of(DEVICE).is_none());
    // Node maintenance has its own subject.
    let r = f
        .actions
        .run(request(
            operator(),
            "node",
            start_maintenance(60, "rack work"),
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded);
    assert_eq!(f.node.snapshot().maintenance.unwrap().reason, "rack work");
    assert!(
        f.node.maintenance_of(DEVICE).is_some(),
        "the node's window holds its devices"
    );
}

#[tokio::test]
async fn a_busy_or_cooling_down_device_can_still_go_into_maintenance() {
    let f = fixture_with_log("audit.log", safety(Duration::from_secs(3600)), |_| {});
    let r = f
        .actions
        .run(request(operator(), DEVICE, DISABLE))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded);
    // The device is in its hour-long cooldown: a second action is refused...
    let e = f
        .actions
        .run(request(
            operator(),
            DEVICE,
            Requested::Device(DeviceAction::SetEnabled(true)),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ActionError::Unsafe(_)), "{e:?}");
    // ...but maintenance touches no device.
    let r = f
        .actions
        .run(request(operator(), DEVICE, start_maintenance(60, "fan")))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.message);
}

#[tokio::test]
async fn every_result_carries_the_hash_of_its_entry() {
    let f = fixture();
    let e = f
        .actions
        .run(request(reader(), DEVICE, DISABLE))
        .await
        .unwrap_err();
    assert!(matches!(e, ActionError::PermissionDenied(_)));
    let recent = f.actions.recent(1, None);
    let last = records(&f.log).pop().unwrap();
    assert_eq!(recent[0].audit_hash, last.hash.unwrap());
    let r = f
        .actions
        .run(request(operator(), DEVICE, HARD_RESET))
        .await
        .unwrap_err();
    assert!(matches!(r, ActionError::Unsafe(_)));
    let refused = records(&f.log).pop().unwrap();
    assert_eq!(refused.phase, Phase::Refused);
    assert_eq!(
        f.actions.recent(1, None)[0].audit_hash,
        refused.hash.unwrap()
    );
}

#[tokio::test]
async fn repeated_denials_raise_access_denied_on_the_host() {
    let f = fixture();
    let has = |f: &Fixture| {
        f.node
            .snapshot()
            .host
            .conditions
            .iter()
            .find(|c| c.code == health_hal::ConditionCode::AccessDenied)
            .cloned()
    };
    for _ in 0..4 {
        let _ = f.actions.run(request(reader(), DEVICE, DISABLE)).await;
    }
    assert!(has(&f).is_none(), "below the default count of 5");
    let _ = f.actions.run(request(reader(), DEVICE, DISABLE)).await;
    let c = has(&f).expect("ACCESS_DENIED at 5 refusals");
    assert!(
        c.message.contains("uid 1000 (unix socket) (5)"),
        "{}",
        c.message
    );
    assert_eq!(c.severity, health_hal::Severity::Warning);
}

/// A `[[cleanup]]` rule over `dir/*.raw`, files older than a day.
fn raw_files(dir: &Path) -> crate::config::CleanupRule {
    crate::config::CleanupRule {
        name: "raw".into(),
        paths: vec![format!("{}/*.raw", dir.display())],
        min_age: Duration::from_secs(86400),
        max_bytes: None,
        owner: None,
    }
}

fn old_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"0123456789").unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 86400))
        .unwrap();
    p
}

fn clean(rule: &str) -> Requested {
    Requested::CleanFiles { rule: rule.into() }
}

#[tokio::test]
async fn clean_files_runs_a_rule_through_the_path_dry_run_first() {
    let files = tempfile::tempdir().unwrap();
    let old = old_file(files.path(), "a.raw");
    let f = fixture_with_cleanup(
        "audit.log",
        safety(Duration::ZERO),
        |_| {},
        vec![raw_files(files.path())],
    );
    let target = super::clean::target("raw");
    // A reader may not; an unknown rule is NotFound naming what is configured.
    let e = f
        .actions
        .run(request(reader(), &target, clean("raw")))
        .await
        .unwrap_err();
    assert!(matches!(e, ActionError::PermissionDenied(_)), "{e:?}");
    let e = f
        .actions
        .run(request(operator(), "cleanup:nope", clean("nope")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ActionError::NotFound(m) if m.contains("\"nope\"") && m.contains("configured: raw")),
        "{e:?}"
    );
    let mut dry = request(operator(), &target, clean("raw"));
    dry.dry_run = true;
    let r = f.actions.run(dry).await.unwrap();
    let listed = r.file_cleanup.as_ref().unwrap();
    assert_eq!(listed.paths, [old.display().to_string()]);
    assert!(old.exists(), "a dry run deletes nothing");
    let r = f
        .actions
        .run(request(operator(), &target, clean("raw")))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.message);
    assert_eq!(r.file_cleanup.as_ref().unwrap().files, 1);
    assert!(!old.exists());
    let recorded = records(&f.log);
    let end = recorded.last().unwrap();
    assert_eq!(end.phase, Phase::End);
    assert_eq!(end.entry.target, target);
    assert!(
        end.entry.message.contains("removed 1 file(s), 10 bytes"),
        "{}",
        end.entry.message
    );
    assert_eq!(recorded[recorded.len() - 2].phase, Phase::Begin);
    assert_eq!(recorded[recorded.len() - 3].phase, Phase::DryRun);
}

#[tokio::test]
async fn no_policy_cleans_files_while_the_node_is_in_maintenance() {
    let files = tempfile::tempdir().unwrap();
    let old = old_file(files.path(), "a.raw");
    let f = fixture_with_cleanup(
        "audit.log",
        safety(Duration::ZERO),
        |_| {},
        vec![raw_files(files.path())],
    );
    f.actions
        .run(request(
            operator(),
            crate::maintenance::NODE,
            start_maintenance(60, "disk swap"),
        ))
        .await
        .unwrap();
    let target = super::clean::target("raw");
    let policy = Caller::local_operator("policy:disk");
    let e = f
        .actions
        .run(request(policy, &target, clean("raw")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ActionError::NotPossible(m) if m.contains("in maintenance")),
        "{e:?}"
    );
    assert!(old.exists());
}
