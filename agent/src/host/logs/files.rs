//! Following a rule's file globs, like `tail -F` over many files: one pass per poll, run on the
//! blocking pool.
//!
//! Files are tracked by (device, inode), not by name, so a renamed file the glob still
//! matches is not read again from the start. Files present at the first pass are read from
//! their end (old lines were seen before the agent started); files that appear later are read
//! from their start. Rotation by rename: the old inode leaves the glob, its open descriptor is
//! read to its end and closed, and the new file at the path is a new inode read from 0.
//! Truncation (`copytruncate`, `> file`): the file is shorter than the offset, so it is read
//! again from 0. A pass reads at most `PASS_BYTES` per file, in `CHUNK` reads, so one busy file
//! costs bounded time and cannot starve the others; it continues at the next pass.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use super::lines::LineCutter;
use super::tally::RuleTally;
use crate::config::LogRule;

/// Bytes per read.
const CHUNK: usize = 64 << 10;
/// Bytes read from one file in one pass, at most.
const PASS_BYTES: u64 = 8 << 20;
/// Files one rule follows at once, at most (open descriptors are bounded too).
pub const MAX_FILES: usize = 256;

type FileId = (u64, u64);

struct Followed {
    path: PathBuf,
    file: File,
    id: FileId,
    offset: u64,
    lines: LineCutter,
}

/// The files of one rule and where each was read to.
pub struct FileSet {
    globs: Vec<glob::Pattern>,
    followed: Vec<Followed>,
    /// After the first pass, new files are read from their start.
    started: bool,
    buf: Vec<u8>,
    /// Whether "too many files" was already logged.
    warned: bool,
}

/// Regular files the globs match now, with their identity. The scan stops at four times
/// `MAX_FILES`, so files already followed stay found (and keep their offsets) when new ones
/// sort ahead of them; the follower then takes at most `MAX_FILES`.
fn expand(globs: &[glob::Pattern]) -> Vec<(PathBuf, FileId)> {
    let mut found: Vec<(PathBuf, FileId)> = Vec::new();
    for g in globs {
        let Ok(paths) = glob::glob(g.as_str()) else {
            continue;
        };
        for path in paths.flatten() {
            if found.len() >= 4 * MAX_FILES {
                return found;
            }
            // metadata follows symlinks: a link to the live log is the log.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if meta.is_file() && !found.iter().any(|(_, f)| *f == id) {
                found.push((path, id));
            }
        }
    }
    found
}

impl Followed {
    /// Reads what was appended since the last pass (from 0 again if the file shrank).
    fn read(&mut self, rule: &LogRule, tally: &Mutex<RuleTally>, buf: &mut [u8]) {
        let len = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        if len < self.offset {
            if self.file.seek(SeekFrom::Start(0)).is_err() {
                return;
            }
            self.offset = 0;
            self.lines.reset();
        }
        let source = self.path.display().to_string();
        let mut budget = PASS_BYTES;
        while budget > 0 {
            let want = buf.len().min(budget as usize);
            let Some(chunk) = buf.get_mut(..want) else {
                break;
            };
            let n = match self.file.read(chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.offset += n as u64;
            budget = budget.saturating_sub(n as u64);
            let now = SystemTime::now();
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            let data = chunk.get(..n).unwrap_or_default();
            let skipped = self
                .lines
                .feed(data, &mut |l| t.line(rule, l, &source, now));
            t.bytes_skipped += skipped;
        }
    }

    /// The file left the glob (rotated away or deleted): read it to its end, then close it.
    fn finish(mut self, rule: &LogRule, tally: &Mutex<RuleTally>, buf: &mut [u8]) {
        self.read(rule, tally, buf);
        let source = self.path.display().to_string();
        let now = SystemTime::now();
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        self.lines.finish(&mut |l| t.line(rule, l, &source, now));
    }
}

impl FileSet {
    pub fn new(globs: Vec<glob::Pattern>) -> FileSet {
        FileSet {
            globs,
            followed: Vec::new(),
            started: false,
            buf: vec![0; CHUNK],
            warned: false,
        }
    }

    /// One pass: finds the files, reads what is new in each, and records what is followed.
    pub fn pass(&mut self, rule: &LogRule, tally: &Mutex<RuleTally>) {
        let found = expand(&self.globs);
        let mut buf = std::mem::take(&mut self.buf);
        let mut kept = Vec::with_capacity(self.followed.len());
        for mut f in self.followed.drain(..) {
            match found.iter().find(|(_, id)| *id == f.id) {
                Some((path, _)) => {
                    f.path.clone_from(path);
                    f.read(rule, tally, &mut buf);
                    kept.push(f);
                }
                None => f.finish(rule, tally, &mut buf),
            }
        }
        for (path, id) in found {
            if kept.iter().any(|f| f.id == id) {
                continue;
            }
            if kept.len() >= MAX_FILES {
                if !self.warned {
                    tracing::warn!(rule = %rule.name, max = MAX_FILES, "log rule matches too many files; following the first");
                    self.warned = true;
                }
                break;
            }
            let Some(mut f) = self.open(path, rule.max_line_bytes) else {
                continue;
            };
            f.read(rule, tally, &mut buf);
            kept.push(f);
        }
        self.followed = kept;
        self.buf = buf;
        self.started = true;
        let sources = self
            .followed
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        tally.lock().unwrap_or_else(|e| e.into_inner()).sources = sources;
    }

    fn open(&self, path: PathBuf, max_line_bytes: usize) -> Option<Followed> {
        // Non-blocking, so a FIFO put where a log was cannot block the pass; only a regular
        // file (checked on the descriptor) is followed. O_NONBLOCK means nothing to a file.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "log file not readable");
                return None;
            }
        };
        // The descriptor's identity, not the name's: the name may have moved on already.
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let offset = if self.started { 0 } else { meta.len() };
        file.seek(SeekFrom::Start(offset)).ok()?;
        Some(Followed {
            path,
            file,
            id: (meta.dev(), meta.ino()),
            offset,
            lines: LineCutter::new(max_line_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogSource;
    use health_hal::Severity;
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    fn rule(dir: &Path, max_line_bytes: usize) -> LogRule {
        let glob = glob::Pattern::new(&format!("{}/*.err", dir.display())).unwrap();
        LogRule {
            name: "spice".into(),
            source: LogSource::Files(vec![glob]),
            pattern: regex::Regex::new("(?i)error").unwrap(),
            count: 1,
            window: Duration::from_secs(60),
            severity: Severity::Warning,
            max_line_bytes,
        }
    }

    fn append(path: &Path, text: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text).unwrap();
    }

    struct Follower {
        rule: LogRule,
        set: FileSet,
        tally: Mutex<RuleTally>,
    }

    impl Follower {
        fn new(dir: &Path, max: usize) -> Follower {
            let rule = rule(dir, max);
            let LogSource::Files(globs) = rule.source.clone() else {
                unreachable!()
            };
            Follower {
                rule,
                set: FileSet::new(globs),
                tally: Mutex::default(),
            }
        }

        /// One pass; (lines, matches, last matching line).
        fn pass(&mut self) -> (u64, u64, String) {
            self.set.pass(&self.rule, &self.tally);
            let t = self.tally.lock().unwrap();
            (t.lines_total, t.matches_total, t.last.line.clone())
        }
    }

    #[test]
    fn existing_files_from_their_end_new_files_from_their_start() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.err");
        append(&old, b"error before the agent\n");
        let mut f = Follower::new(dir.path(), 1024);
        assert_eq!(f.pass(), (0, 0, String::new()), "old lines are not read");
        append(&old, b"ok\nerror: timestep too small\n");
        assert_eq!(f.pass(), (2, 1, "error: timestep too small".into()));
        append(&dir.path().join("new.err"), b"fatal error in new\n");
        append(&dir.path().join("ignored.log"), b"error elsewhere\n");
        assert_eq!(f.pass(), (3, 2, "fatal error in new".into()));
        assert_eq!(f.tally.lock().unwrap().sources.len(), 2);
    }

    #[test]
    fn rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.err");
        append(&log, b"");
        let mut f = Follower::new(dir.path(), 1024);
        f.pass();
        append(&log, b"error 1\n");
        // Written after the last pass, then rotated before the next one.
        append(&log, b"error 2 unterminated");
        std::fs::rename(&log, dir.path().join("run.err.1")).unwrap();
        append(&log, b"error 3 in the new file\n");
        let (lines, matches, _) = f.pass();
        assert_eq!((lines, matches), (3, 3), "nothing lost across the rotation");
        // Renamed within the glob: the same inode is not read again.
        std::fs::rename(&log, dir.path().join("kept.err")).unwrap();
        append(&dir.path().join("kept.err"), b"error 4\n");
        assert_eq!(f.pass(), (4, 4, "error 4".into()));
    }

    #[test]
    fn truncation_reads_from_the_start_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.err");
        append(&log, b"a long line before the truncation\n");
        let mut f = Follower::new(dir.path(), 1024);
        f.pass();
        std::fs::write(&log, b"error after\n").unwrap();
        assert_eq!(f.pass(), (1, 1, "error after".into()));
    }

    #[test]
    fn a_ten_megabyte_line_and_invalid_utf8_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.err");
        append(&log, b"");
        let mut f = Follower::new(dir.path(), 256);
        f.pass();
        let mut big = b"error ".to_vec();
        big.resize(10 << 20, b'x');
        big.extend_from_slice(b"\n\xff\xfe error \xc3(\n");
        append(&log, &big);
        // 10 MiB takes two passes of PASS_BYTES.
        f.pass();
        let (lines, matches, last) = f.pass();
        assert_eq!((lines, matches), (2, 2));
        assert!(last.starts_with('\u{fffd}'), "{last:?}");
        let skipped = f.tally.lock().unwrap().bytes_skipped;
        assert_eq!(skipped, (10 << 20) - 256);
    }
}
