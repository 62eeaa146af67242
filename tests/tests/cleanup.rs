//! `[[cleanup]]` rules and the clean-files action on the real binaries: a real agent with a
//! rule over a private directory of real files, `agent-ctl clean-files` as the operator, and
//! a DISK_FULL policy that runs the rule by itself. Proves that a dry run lists exactly the old
//! matching files and deletes nothing, that the run then deletes exactly those (never a young
//! file, a file that does not match, a file of another owner, a directory, or what a symlink
//! points at), and that every run is in the audit log. Only files this test created are
//! ever deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use health_e2e::{output_text, wait_for, wait_until, Agent};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86400);

/// A file of `len` bytes whose mtime is `age` ago.
fn file(dir: &Path, name: &str, len: usize, age: Duration) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, vec![b'x'; len]).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
    p
}

/// The files of the first test: what must go, and what must stay.
struct Tree {
    dir: tempfile::TempDir,
    _outside: tempfile::TempDir,
    /// Oldest first.
    old: Vec<PathBuf>,
    kept: Vec<PathBuf>,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = vec![
        file(d, "a.raw", 300, 3 * DAY),
        file(d, "b.raw", 200, 2 * DAY),
    ];
    let mut kept = vec![
        file(d, "young.raw", 100, Duration::from_secs(60)),
        file(d, "old.log", 100, 3 * DAY),
    ];
    // A directory whose name matches, old itself and holding an old file.
    let sub = d.join("dir.raw");
    fs::create_dir(&sub).unwrap();
    kept.push(file(&sub, "inner.raw", 100, 3 * DAY));
    // A symlink whose name matches, to an old file outside the rule.
    let victim = file(outside.path(), "victim.raw", 100, 5 * DAY);
    std::os::unix::fs::symlink(&victim, d.join("link.raw")).unwrap();
    kept.push(victim);
    kept.push(d.join("link.raw"));
    // A file of another owner (only root can give one away).
    if nix::unistd::geteuid().is_root() {
        let theirs = file(d, "theirs.raw", 100, 3 * DAY);
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        kept.push(theirs);
    }
    Tree {
        dir,
        _outside: outside,
        old,
        kept,
    }
}

fn rule(dir: &Path) -> String {
    format!(
        "[[cleanup]]\nname = \"solver-raw\"\npaths = [\"{}/*.raw\"]\nmin_age = \"1d\"\nowner = \"{}\"\n",
        dir.display(),
        nix::unistd::geteuid().as_raw()
    )
}

fn clean_json(agent: &Agent, args: &[&str]) -> Value {
    let mut all = vec!["--json", "clean-files"];
    all.extend(args);
    serde_json::from_str(&agent.ctl_ok(&all)).expect("agent-ctl --json prints JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn shown(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

#[test]
fn a_dry_run_lists_the_old_matching_files_and_the_run_deletes_exactly_those() {
    let t = tree();
    let agent = Agent::with_config(&rule(t.dir.path()), &[]);

    let dry = clean_json(&agent, &["solver-raw", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["outcome"], "SUCCEEDED", "{dry}");
    assert_eq!(dry["device_id"], "cleanup:solver-raw");
    let listed = &dry["file_cleanup"];
    assert_eq!(
        strings(&listed["paths"]),
        shown(&t.old),
        "oldest first: {dry}"
    );
    assert_eq!(listed["files"], 2);
    assert_eq!(listed["bytes"], 500);
    for p in t.old.iter().chain(&t.kept) {
        assert!(exists(p), "a dry run deleted {}", p.display());
    }

    let run = clean_json(&agent, &["solver-raw"]);
    assert_eq!(run["dry_run"], false);
    assert_eq!(run["outcome"], "SUCCEEDED", "{run}");
    assert_eq!(strings(&run["file_cleanup"]["paths"]), shown(&t.old));
    assert_eq!(
        strings(&run["file_cleanup"]["errors"]),
        Vec::<String>::new()
    );
    for p in &t.old {
        assert!(!exists(p), "{} is still there", p.display());
    }
    for p in &t.kept {
        assert!(exists(p), "{} was deleted", p.display());
    }

    // Text output: the count, the bytes and the paths.
    file(t.dir.path(), "c.raw", 10, 2 * DAY);
    let text = agent.ctl_ok(&["--dry-run", "clean-files", "solver-raw"]);
    assert!(text.contains("would remove 1 file(s), 10 bytes"), "{text}");
    assert!(text.contains("c.raw"), "{text}");

    let ours: Vec<Value> = agent
        .audit_entries()
        .into_iter()
        .filter(|e| e["action"] == "clean-files")
        .collect();
    let phases: Vec<&str> = ours.iter().map(|e| e["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["dry-run", "begin", "end", "dry-run"], "{ours:?}");
    assert_eq!(ours[2]["target"], "cleanup:solver-raw");
    assert_eq!(ours[2]["args"]["rule"], "solver-raw");
    let end = ours[2]["message"].as_str().unwrap();
    assert!(end.contains("removed 2 file(s), 500 bytes"), "{end}");
}

#[test]
fn an_unknown_rule_is_refused_naming_it() {
    let t = tree();
    let agent = Agent::with_config(&rule(t.dir.path()), &[]);
    let out = agent.ctl(&["clean-files", "nope"]);
    assert!(!out.status.success());
    let text = output_text(&out);
    assert!(
        text.contains("no [[cleanup]] rule named \"nope\"") && text.contains("solver-raw"),
        "{text}"
    );
    let refused = agent
        .audit_entries()
        .into_iter()
        .any(|e| e["phase"] == "refused" && e["target"] == "cleanup:nope");
    assert!(refused, "the refusal is recorded");
    for p in t.old.iter().chain(&t.kept) {
        assert!(exists(p));
    }
}

/// DISK_FULL cannot be made to clear in a test (the disk is shared), but it can be made to
/// trip: with thresholds far below any real usage every real file system is DISK_FULL, and
/// the policy's clean-files step runs the rule. Its verification then fails, as it should on
/// a disk that is still full; that the ladder verifies on the host monitor's next read is
/// covered by the engine's own tests of verification.
#[test]
fn a_disk_full_policy_runs_the_cleanup_rule() {
    let dir = tempfile::tempdir().unwrap();
    let old = file(dir.path(), "spice-1.tmp", 100, 2 * DAY);
    let young = file(dir.path(), "spice-2.tmp", 100, Duration::from_secs(1));
    let config = format!(
        "report_interval = \"200ms\"\n\
         [host]\ninterval = \"200ms\"\ndisk_warning_ratio = 0.0001\ndisk_critical_ratio = 0.0001\n\
         [remediation]\ninterval = \"100ms\"\n\
         [[cleanup]]\nname = \"spice-tmp\"\npaths = [\"{}/spice-*\"]\nmin_age = \"1d\"\n\
         [[policy]]\nname = \"disk\"\nmatch = {{ codes = [\"DISK_FULL\"] }}\nmax_attempts = 1\n\
         steps = [ {{ action = \"clean-files\", rule = \"spice-tmp\", hold = \"0s\", timeout = \"1s\" }} ]\n",
        dir.path().display()
    );
    let agent = Agent::with_config(&config, &[]);
    wait_until("the policy's cleanup", Duration::from_secs(20), || {
        !exists(&old)
    });
    assert!(exists(&young), "a young file is kept");
    // The files go before the step's end entry is written: wait for the entry.
    let end = wait_for(
        "the policy's clean-files recorded",
        Duration::from_secs(10),
        || {
            agent
                .audit_entries()
                .into_iter()
                .find(|e| e["phase"] == "end" && e["action"] == "clean-files")
        },
    );
    assert_eq!(end["caller"], "policy:disk", "{end}");
    assert_eq!(end["target"], "cleanup:spice-tmp");
    assert!(
        end["trigger"].as_str().unwrap().starts_with("DISK_FULL"),
        "{end}"
    );
}
