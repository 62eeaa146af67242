//! The `clean-files` action: deleting what a `[[cleanup]]` rule (`config::cleanup`) matches,
//! as on-call does with `find temp -mtime +1 -delete`, with the checks a careful person makes.
//! Called only from [`crate::action::Actions`] (an operator's request or a policy's step), so
//! it is authorized, gated per `cleanup:<name>` and audited like every other action; a dry run
//! lists what would go and deletes nothing.
//!
//! Selection ([`select`]): expand the globs; look at each match with `lstat` (never following
//! a symlink, neither the match itself nor a directory the globs passed through after the
//! literal part of the pattern); keep only regular files of the rule's owner. Files whose
//! mtime is at least `min_age` old are candidates, oldest first; with `max_bytes` only as many
//! as bring the matched set's total to the quota. At most [`MAX_FILES`] matches are looked at
//! per run, and the result says when that bound was hit.
//!
//! Removal ([`remove`]): each file is looked at again right before its unlink: a file that is
//! no longer the same inode, or is no longer old, was replaced or rewritten since it was
//! selected and is kept. A file that cannot be removed is an error in the result, not the end
//! of the run. Runs on the blocking pool: globbing a large tree is file-system work.

use std::collections::HashSet;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::CleanupRule;
use crate::model::Outcome;

/// Matches looked at in one run: a rule over a runaway directory must not hold a thread and
/// memory without bound. The rest waits for the next run.
pub const MAX_FILES: usize = 100_000;
/// Paths listed in the result, oldest first.
pub const PATHS_SHOWN: usize = 100;
/// Errors listed in the result.
pub const ERRORS_SHOWN: usize = 20;

/// The action's target: the rule's name as the gate and the audit log see it.
pub fn target(rule: &str) -> String {
    format!("cleanup:{rule}")
}

/// What a run removed (or, on a dry run, would remove), for the record and
/// `ActionResult.file_cleanup`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CleanupReport {
    pub rule: String,
    pub files: u64,
    pub bytes: u64,
    /// The first [`PATHS_SHOWN`], oldest first.
    pub paths: Vec<String>,
    /// More files than `paths` lists.
    pub truncated: bool,
    /// The first [`ERRORS_SHOWN`] files that could not be removed or globs that could not be
    /// read, with why.
    pub errors: Vec<String>,
    /// Errors in all, listed or not.
    pub errors_total: u64,
    /// Selected files kept because they changed between selection and removal.
    pub changed: u64,
    /// The run stopped looking at [`MAX_FILES`] matches.
    pub hit_limit: bool,
}

impl CleanupReport {
    fn error(&mut self, e: String) {
        self.errors_total += 1;
        if self.errors.len() < ERRORS_SHOWN {
            self.errors.push(e);
        }
    }

    fn listed(&mut self, path: &Path, len: u64) {
        self.files += 1;
        self.bytes += len;
        if self.paths.len() < PATHS_SHOWN {
            self.paths.push(path.display().to_string());
        } else {
            self.truncated = true;
        }
    }

    /// One line for the record and the audit `end` entry: counts and bytes, not paths.
    pub fn summary(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would remove" } else { "removed" };
        let mut s = format!(
            "{verb} {} file(s), {} bytes (rule {})",
            self.files, self.bytes, self.rule
        );
        if self.changed > 0 {
            s.push_str(&format!(
                "; kept {} that changed since they were selected",
                self.changed
            ));
        }
        if self.errors_total > 0 {
            s.push_str(&format!("; {} error(s)", self.errors_total));
            if let Some(first) = self.errors.first() {
                s.push_str(&format!(", first: {first}"));
            }
        }
        if self.hit_limit {
            s.push_str(&format!(
                "; stopped after {MAX_FILES} matches: run it again for the rest"
            ));
        }
        s
    }
}

/// One file selected for removal: what identifies it when it is looked at again.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub len: u64,
    pub mtime: SystemTime,
    dev: u64,
    ino: u64,
}

/// The files to remove, oldest first, and what the selection met on the way.
#[derive(Debug, Default)]
pub struct Selection {
    pub files: Vec<Candidate>,
    /// Every file the globs matched whose time has not come yet or that the quota keeps.
    pub kept: u64,
    pub report: CleanupReport,
}

/// The part of a glob written literally, up to its first wildcard component: symlinks there
/// are the operator's own choice, below it the agent follows none.
fn literal_prefix(pattern: &str) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in pattern.split('/').filter(|c| !c.is_empty()) {
        if crate::config::has_glob_wildcard(c) {
            break;
        }
        p.push(c);
    }
    p
}

/// Whether a directory between `prefix` and `path` is a symlink (or cannot be looked at).
fn through_symlink(prefix: &Path, path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(prefix) && *a != prefix)
        .any(|a| std::fs::symlink_metadata(a).map_or(true, |m| m.file_type().is_symlink()))
}

fn is_old(mtime: SystemTime, now: SystemTime, min_age: Duration) -> bool {
    now.duration_since(mtime).is_ok_and(|age| age >= min_age)
}

fn mtime_of(m: &Metadata) -> SystemTime {
    m.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// What `rule` would delete now (see the module comment).
pub fn select(rule: &CleanupRule, now: SystemTime) -> Selection {
    let mut sel = Selection {
        report: CleanupReport {
            rule: rule.name.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut matched: Vec<Candidate> = Vec::new();
    let mut young_bytes: u64 = 0;
    let mut looked = 0usize;
    'patterns: for pattern in &rule.paths {
        let prefix = literal_prefix(pattern);
        let paths = match glob::glob(pattern) {
            Ok(p) => p,
            Err(e) => {
                sel.report.error(format!("{pattern}: {e}"));
                continue;
            }
        };
        for entry in paths {
            if looked == MAX_FILES {
                sel.report.hit_limit = true;
                break 'patterns;
            }
            looked += 1;
            let path = match entry {
                Ok(p) => p,
                Err(e) => {
                    sel.report.error(e.to_string());
                    continue;
                }
            };
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue; // gone since the glob saw it
            };
            if !m.file_type().is_file()
                || rule.owner.is_some_and(|uid| m.uid() != uid)
                || through_symlink(&prefix, &path)
                // Two globs matching one file must not count it twice.
                || !seen.insert((m.dev(), m.ino()))
            {
                continue;
            }
            let c = Candidate {
                len: m.len(),
                mtime: mtime_of(&m),
                dev: m.dev(),
                ino: m.ino(),
                path,
            };
            if is_old(c.mtime, now, rule.min_age) {
                matched.push(c);
            } else {
                young_bytes = young_bytes.saturating_add(c.len);
                sel.kept += 1;
            }
        }
    }
    matched.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
    let mut total: u64 = young_bytes.saturating_add(matched.iter().map(|c| c.len).sum());
    for c in matched {
        // With a quota, files go oldest first only while the set is over it.
        if rule.max_bytes.is_some_and(|max| total <= max) {
            sel.kept += 1;
            continue;
        }
        total -= c.len;
        sel.report.listed(&c.path, c.len);
        sel.files.push(c);
    }
    sel
}

/// Removes the selected files, each looked at again first (see the module comment).
pub fn remove(sel: Selection, min_age: Duration, now: SystemTime) -> CleanupReport {
    let mut report = CleanupReport {
        rule: sel.report.rule.clone(),
        errors: sel.report.errors,
        errors_total: sel.report.errors_total,
        hit_limit: sel.report.hit_limit,
        ..Default::default()
    };
    for c in sel.files {
        let same = std::fs::symlink_metadata(&c.path).is_ok_and(|m| {
            m.file_type().is_file()
                && m.dev() == c.dev
                && m.ino() == c.ino
                && is_old(mtime_of(&m), now, min_age)
        });
        if !same {
            report.changed += 1;
            continue;
        }
        match std::fs::remove_file(&c.path) {
            Ok(()) => report.listed(&c.path, c.len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.error(format!("{}: {e}", c.path.display())),
        }
    }
    report
}

/// Selects, and unless a dry run removes, on the blocking pool. The outcome is FAILED when
/// any file could not be removed (the others are removed all the same).
pub async fn run(rule: CleanupRule, dry_run: bool) -> (Outcome, String, CleanupReport) {
    let name = rule.name.clone();
    let done = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        let sel = select(&rule, now);
        if dry_run {
            sel.report
        } else {
            remove(sel, rule.min_age, now)
        }
    })
    .await;
    match done {
        Ok(report) => {
            let outcome = if report.errors_total > 0 && !dry_run {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
            (outcome, report.summary(dry_run), report)
        }
        Err(e) => (
            Outcome::Failed,
            format!("the cleanup task failed: {e}"),
            CleanupReport {
                rule: name,
                ..Default::default()
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    const DAY: Duration = Duration::from_secs(86400);

    fn file(dir: &Path, name: &str, len: usize, age: Duration) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, vec![b'x'; len]).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        p
    }

    fn rule(dir: &Path, pattern: &str) -> CleanupRule {
        CleanupRule {
            name: "t".into(),
            paths: vec![format!("{}/{pattern}", dir.display())],
            min_age: DAY,
            max_bytes: None,
            owner: None,
        }
    }

    fn names(sel: &Selection) -> Vec<String> {
        sel.files
            .iter()
            .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn only_old_regular_matching_files_are_selected_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        file(d.path(), "a.raw", 10, 2 * DAY);
        file(d.path(), "b.raw", 10, 3 * DAY);
        file(d.path(), "young.raw", 10, Duration::from_secs(60));
        file(d.path(), "other.log", 10, 3 * DAY);
        fs::create_dir(d.path().join("dir.raw")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = file(outside.path(), "victim", 10, 5 * DAY);
        symlink(&target, d.path().join("link.raw")).unwrap();
        let sel = select(&rule(d.path(), "*.raw"), SystemTime::now());
        assert_eq!(names(&sel), ["b.raw", "a.raw"]);
        assert_eq!(sel.report.files, 2);
        assert_eq!(sel.report.bytes, 20);
        let report = remove(sel, DAY, SystemTime::now());
        assert_eq!(report.files, 2);
        assert!(target.exists(), "a symlink's target is never touched");
        assert!(d.path().join("link.raw").symlink_metadata().is_ok());
        assert!(d.path().join("young.raw").exists());
        assert!(d.path().join("other.log").exists());
        assert!(!d.path().join("a.raw").exists());
    }

    #[test]
    fn a_directory_reached_through_a_symlink_is_not_entered() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        file(outside.path(), "x.raw", 10, 5 * DAY);
        symlink(outside.path(), d.path().join("sub")).unwrap();
        fs::create_dir(d.path().join("real")).unwrap();
        file(&d.path().join("real"), "x.raw", 10, 5 * DAY);
        let sel = select(&rule(d.path(), "*/x.raw"), SystemTime::now());
        assert_eq!(sel.files.len(), 1, "{:?}", sel.files);
        assert!(sel.files[0].path.starts_with(d.path().join("real")));
    }

    #[test]
    fn owner_filters_by_uid() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a.raw", 10, 2 * DAY);
        let uid = fs::metadata(&p).unwrap().uid();
        let mut r = rule(d.path(), "*.raw");
        r.owner = Some(uid.wrapping_add(1));
        assert!(select(&r, SystemTime::now()).files.is_empty());
        r.owner = Some(uid);
        assert_eq!(select(&r, SystemTime::now()).files.len(), 1);
    }

    #[test]
    fn max_bytes_removes_oldest_first_until_the_set_fits() {
        let d = tempfile::tempdir().unwrap();
        file(d.path(), "old3.raw", 100, 4 * DAY);
        file(d.path(), "old2.raw", 100, 3 * DAY);
        file(d.path(), "old1.raw", 100, 2 * DAY);
        file(d.path(), "young.raw", 100, Duration::from_secs(5));
        let mut r = rule(d.path(), "*.raw");
        // 400 bytes matched; down to 250 takes the two oldest.
        r.max_bytes = Some(250);
        let sel = select(&r, SystemTime::now());
        assert_eq!(names(&sel), ["old3.raw", "old2.raw"]);
        // Young files are never removed, even when they alone exceed the quota.
        r.max_bytes = Some(50);
        assert_eq!(select(&r, SystemTime::now()).files.len(), 3);
        r.max_bytes = Some(400);
        assert!(select(&r, SystemTime::now()).files.is_empty());
    }

    #[test]
    fn a_file_replaced_after_selection_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a.raw", 10, 2 * DAY);
        let q = file(d.path(), "b.raw", 10, 2 * DAY);
        let sel = select(&rule(d.path(), "*.raw"), SystemTime::now());
        assert_eq!(sel.files.len(), 2);
        // A new file (a new inode, old mtime too) renamed over the selected one, and the
        // other rewritten now: both are kept.
        let fresh = file(d.path(), "new.tmp", 10, 2 * DAY);
        fs::rename(&fresh, &p).unwrap();
        fs::write(&q, b"rewritten").unwrap();
        let report = remove(sel, DAY, SystemTime::now());
        assert_eq!(report.files, 0);
        assert_eq!(report.changed, 2);
        assert!(p.exists() && q.exists());
    }

    #[test]
    fn a_dry_run_lists_and_removes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a.raw", 10, 2 * DAY);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (outcome, message, report) = rt.block_on(run(rule(d.path(), "*.raw"), true));
        assert_eq!(outcome, Outcome::Succeeded);
        assert_eq!(report.paths, [p.display().to_string()]);
        assert!(
            message.starts_with("would remove 1 file(s), 10 bytes"),
            "{message}"
        );
        assert!(p.exists());
        let (_, message, report) = rt.block_on(run(rule(d.path(), "*.raw"), false));
        assert_eq!(report.files, 1);
        assert!(message.starts_with("removed 1 file(s)"), "{message}");
        assert!(!p.exists());
    }
}
