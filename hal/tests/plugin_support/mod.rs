//! Helpers shared by the plugin and Loihi tests: fixture paths, scripts in temporary
//! directories, and checks that a process group is really gone. Only processes these tests
//! started are ever looked at; nothing here signals anything.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use health_hal::HalError;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugin")
        .join(name)
}

/// Writes an executable script (the file is closed before this returns).
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `f` again while it fails with ETXTBSY: a script written a moment ago can be "busy" if
/// another test thread forked while its write handle was open (the fork's copy lives until
/// that child execs). A test artefact of writing scripts at run time, not of the code under test.
pub async fn retry_text_busy<T, F, Fut>(mut f: F) -> Result<T, HalError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HalError>>,
{
    for _ in 0..20 {
        match f().await {
            Err(HalError::Io(m)) if m.contains("Text file busy") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
    f().await
}

/// (state, process group) of a pid, from `/proc/PID/stat`; `None` if the pid is gone.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ..."; comm may hold spaces and parentheses, so split after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` runs (a zombie has already died: it only waits to be reaped by its parent).
pub fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Every live process whose process group is `pgid`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_state(*pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// Waits (bounded) until neither `pids` nor any member of group `pgid` is alive.
pub async fn assert_group_gone(pgid: i32, pids: &[i32], within: Duration) {
    assert_gone(Some(pgid), pids, within).await
}

/// Waits (bounded) until none of `pids` is alive.
pub async fn assert_pids_gone(pids: &[i32], within: Duration) {
    assert_gone(None, pids, within).await
}

async fn assert_gone(pgid: Option<i32>, pids: &[i32], within: Duration) {
    let start = Instant::now();
    loop {
        let mut left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if let Some(pgid) = pgid {
            left.extend(live_members(pgid));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < within,
            "processes still alive after {within:?} (group {pgid:?}): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) for the pid file a hanging script writes: "LEADER HELPER HELPER".
pub async fn read_pids(path: &Path, within: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let pids: Vec<i32> = text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.len() == 3 {
                return pids;
            }
        }
        assert!(
            start.elapsed() < within,
            "{} was not written within {within:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
