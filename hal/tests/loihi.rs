//! The Loihi 2 host checks against loopback sockets and fake `sinfo` scripts written into
//! temporary directories. Only processes and sockets these tests create are touched.

mod plugin_support;

use std::time::{Duration, Instant, SystemTime};

use health_hal::loihi::{
    board_reachable, host_checks, node_state, BaseState, Loihi2Config, StateFlag,
};
use health_hal::{ConditionCode, HalError, Severity};
use plugin_support::{assert_group_gone, fixture, read_pids, retry_text_busy, write_script};
use tokio::net::{TcpListener, TcpSocket};

const SLACK: Duration = Duration::from_secs(2);

// ---- reachability ----

#[tokio::test]
async fn a_listening_board_host_is_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let r = board_reachable(&addr, Duration::from_secs(1)).await;
    assert!(r.up, "{r:?}");
    assert!(r.error.is_none());
    assert!(r.latency.is_some_and(|l| l < Duration::from_secs(1)));
    assert!(r.condition("loihi-0", SystemTime::now()).is_none());
}

#[tokio::test]
async fn a_closed_port_is_down_with_the_address_named() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    }; // dropped: nothing listens there now
    let start = Instant::now();
    let r = board_reachable(&addr, Duration::from_secs(1)).await;
    assert!(start.elapsed() < Duration::from_secs(1) + SLACK);
    assert!(!r.up && r.latency.is_none());
    let e = r.error.clone().unwrap();
    assert!(e.contains("connection refused") && e.contains(&addr), "{e}");
    let c = r.condition("loihi-0", SystemTime::now()).unwrap();
    assert_eq!(
        (c.code, c.severity),
        (ConditionCode::DeviceUnresponsive, Severity::Critical)
    );
    assert!(c.message.contains(&addr));
}

#[tokio::test]
async fn a_bad_address_is_down_with_a_reason() {
    let r = board_reachable("no-port-here", Duration::from_secs(1)).await;
    assert!(!r.up);
    assert!(r.error.unwrap().contains("no-port-here"));
}

#[tokio::test]
async fn a_host_that_does_not_answer_is_down_within_the_deadline() {
    // A listener that never accepts, with the smallest backlog: once its queue is full the
    // kernel drops further SYNs, so a connect hangs as it would to a dead host, on loopback.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let deadline = Duration::from_millis(200);
    let mut hung = None;
    for _ in 0..16 {
        let start = Instant::now();
        let r = board_reachable(&addr, deadline).await;
        let took = start.elapsed();
        assert!(took < deadline + SLACK, "took {took:?}");
        if !r.up {
            hung = Some((r, took));
            break;
        }
    }
    let (r, took) = hung.expect("the listen queue never filled");
    let e = r.error.unwrap();
    assert!(
        e.contains("no answer") && e.contains("200 ms") && e.contains(&addr),
        "{e}"
    );
    assert!(took >= deadline, "{took:?}");
    drop(listener);
}

// ---- SLURM ----

fn fake_sinfo(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    write_script(dir, "sinfo", &format!("#!/bin/bash\n{body}\n"))
}

#[tokio::test]
async fn a_drained_node_is_maintenance_at_info_with_its_flag_explained() {
    let dir = tempfile::tempdir().unwrap();
    // Checks that it was called exactly as documented, then answers.
    let sinfo = fake_sinfo(
        dir.path(),
        r#"[ "$*" = "-N -h -n node01 -o %N %T" ] || { echo "bad args: $*" >&2; exit 2; }
echo "node01 drain*""#,
    );
    let s = retry_text_busy(|| node_state(&sinfo, "node01", SLACK))
        .await
        .unwrap();
    assert_eq!(s.states, [BaseState::Drained]);
    assert_eq!(s.flags, [StateFlag::NotResponding]);
    let c = s.condition("loihi-0", SystemTime::now()).unwrap();
    assert_eq!(
        (c.code, c.severity),
        (ConditionCode::Maintenance, Severity::Info)
    );
    assert!(c.message.contains("not responding"), "{}", c.message);
    assert!(
        c.message.contains(r#""drain*""#),
        "names the state: {}",
        c.message
    );
}

#[tokio::test]
async fn down_and_idle_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let sinfo = fake_sinfo(
        dir.path(),
        r#"case "$4" in
  n-down) echo "n-down down*" ;;
  n-idle) echo "n-idle idle"; echo "n-idle idle" ;;
  *) ;;
esac"#,
    );
    let s = retry_text_busy(|| node_state(&sinfo, "n-down", SLACK))
        .await
        .unwrap();
    let c = s.condition("b", SystemTime::now()).unwrap();
    assert_eq!(
        (c.code, c.severity),
        (ConditionCode::DeviceUnresponsive, Severity::Critical)
    );
    let s = retry_text_busy(|| node_state(&sinfo, "n-idle", SLACK))
        .await
        .unwrap();
    assert!(s.condition("b", SystemTime::now()).is_none());
    match retry_text_busy(|| node_state(&sinfo, "n-other", SLACK)).await {
        Err(HalError::Protocol(m)) => assert!(m.contains("does not know"), "{m}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn sinfo_failing_and_missing_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sinfo = fake_sinfo(
        dir.path(),
        "echo 'slurm_load_node: Unable to contact slurm controller (connect failure)' >&2; exit 1",
    );
    match retry_text_busy(|| node_state(&sinfo, "node01", SLACK)).await {
        Err(HalError::Failed(m)) => {
            assert!(m.contains("Unable to contact slurm controller"), "{m}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let missing = dir.path().join("no-sinfo");
    match node_state(&missing, "node01", SLACK).await {
        Err(HalError::Io(m)) => {
            assert!(
                m.contains("sinfo not found") && m.contains("no-sinfo"),
                "{m}"
            )
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(matches!(
        node_state(&sinfo, "-a", SLACK).await,
        Err(HalError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn a_hanging_sinfo_times_out_and_its_group_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    // exec keeps the pid, so the hanging script leads the group the runner made.
    let sinfo = fake_sinfo(
        dir.path(),
        &format!(
            "exec {} {}",
            fixture("hang.sh").display(),
            pidfile.display()
        ),
    );
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    match retry_text_busy(|| node_state(&sinfo, "node01", deadline)).await {
        Err(HalError::Timeout(m)) => assert!(m.contains("sinfo") && m.contains("300 ms"), "{m}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() < deadline + SLACK);
    let pids = read_pids(&pidfile, SLACK).await;
    assert_group_gone(pids[0], &pids, Duration::from_secs(5)).await;
}

// ---- both checks ----

#[tokio::test]
async fn host_checks_combine_reachability_and_slurm() {
    let dir = tempfile::tempdir().unwrap();
    let sinfo = fake_sinfo(dir.path(), r#"echo "$4 fail""#);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = Loihi2Config::new(listener.local_addr().unwrap().to_string());
    cfg.slurm_node = Some("ncl-kp-01".into());
    cfg.sinfo = sinfo;
    cfg.validate().unwrap();

    let mut checks = host_checks(&cfg, "loihi-0").await;
    for _ in 0..20 {
        match &checks.slurm {
            Some(Err(HalError::Io(m))) if m.contains("Text file busy") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                checks = host_checks(&cfg, "loihi-0").await;
            }
            _ => break,
        }
    }
    assert!(checks.reachability.up);
    assert!(matches!(&checks.slurm, Some(Ok(s)) if s.states == [BaseState::Fail]));
    let codes: Vec<_> = checks
        .conditions
        .iter()
        .map(|c| (c.code, c.severity))
        .collect();
    assert_eq!(
        codes,
        [(ConditionCode::DeviceUnresponsive, Severity::Critical)]
    );

    // Without SLURM, and with the board host gone.
    drop(listener);
    cfg.slurm_node = None;
    let checks = host_checks(&cfg, "loihi-0").await;
    assert!(checks.slurm.is_none());
    assert!(!checks.reachability.up);
    assert_eq!(checks.conditions.len(), 1);

    // A sinfo that cannot run is a warning, not silence.
    cfg.slurm_node = Some("ncl-kp-01".into());
    cfg.sinfo = dir.path().join("missing");
    let checks = host_checks(&cfg, "loihi-0").await;
    assert!(checks
        .conditions
        .iter()
        .any(|c| c.code == ConditionCode::DeviceError && c.severity == Severity::Warning));
}
