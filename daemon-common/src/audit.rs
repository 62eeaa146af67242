//! The hash-chained audit log both daemons keep: one JSON object per line, each carrying the
//! SHA-256 hash of the line before it, written and fsynced before the change it describes.
//!
//! The agent records its actions in it (`health_agent::audit`), the collector its operators'
//! changes (silences, incident notes: `health_collector::audit`). Each daemon defines its own
//! entry type and line format with serde and implements [`ChainRecord`] for it; this module
//! owns what must not differ between them: the chain, the writer and [`verify`], so one
//! `agent-ctl audit --verify` checks either log.
//!
//! The hash of an entry is SHA-256 over its canonical form: the JSON object without `hash`,
//! keys sorted, no whitespace. The canonical form contains `prev_hash`, so each entry commits
//! to all entries before it: editing, removing or reordering a line breaks the chain at that
//! line. The chain has no key, so someone who can rewrite the whole file can also recompute
//! every hash after their edit; and removing entries from the end leaves a valid, shorter
//! chain. Detecting those needs the head hash ([`ChainLog::head`]) kept somewhere else.
//!
//! On open only the last line is read. If it is intact (parses, hash matches) the chain
//! continues from it. If not (a torn write from a crash, or an edit), the log starts anyway,
//! logs an error and writes a `chain-restart` entry whose `prev_hash` is the zero hash;
//! [`verify`] still reports the broken line, so a restart never hides a break.
//!
//! Writes run one at a time under a mutex ([`ChainLog::append`] moves them to the blocking
//! pool: fsync can take milliseconds, or much longer on a sick disk). A failed write drops the
//! file handle; the next append reopens the file and re-reads its tail, so a torn partial line
//! becomes a recorded restart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{Map, Value};

pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The `phase` of the entry that starts a new chain after a broken last line.
pub const CHAIN_RESTART: &str = "chain-restart";

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("audit log {path}: {reason}")]
pub struct AuditError {
    pub path: String,
    pub reason: String,
}

/// Where an appended entry landed in the chain: what a result or a post-mortem cites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// Hex SHA-256 of the entry, its `hash` field.
    pub hash: String,
}

/// The place in the chain a new line takes; the writer fills it in.
#[derive(Debug, Clone)]
pub struct Link<'a> {
    pub seq: u64,
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    pub prev_hash: &'a str,
}

/// One daemon's entry type: how it becomes a line, and the entry that restarts the chain.
pub trait ChainRecord {
    /// The line's JSON object without `hash`. It must carry `seq`, `prev_hash` (from `link`)
    /// and a `phase` (a string; [`CHAIN_RESTART`] only for [`ChainRecord::chain_restart`]).
    fn line(&self, link: &Link<'_>) -> Result<Value, String>;
    /// The entry written when the last line was found broken.
    fn chain_restart(reason: &str) -> Self;
}

pub fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical form of an entry: its object without `hash`, serialized with sorted keys.
pub fn canonical(obj: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> =
        obj.iter().filter(|(k, _)| k.as_str() != "hash").collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// Checks one line on its own: it parses, and its hash matches its contents. Returns the
/// object.
pub fn check_line(line: &str) -> Result<Map<String, Value>, String> {
    let obj = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("not a JSON object".into()),
        Err(e) => return Err(format!("not valid JSON ({e}): a torn write or an edit")),
    };
    let Some(Value::String(hash)) = obj.get("hash") else {
        return Err("no \"hash\" field".into());
    };
    if !matches!(obj.get("prev_hash"), Some(Value::String(_))) {
        return Err("no \"prev_hash\" field".into());
    }
    if !obj.get("seq").is_some_and(Value::is_u64) {
        return Err("no \"seq\" number".into());
    }
    let want = sha256_hex(canonical(&obj).as_bytes());
    if *hash != want {
        return Err("hash does not match the entry's contents: the line was edited".into());
    }
    Ok(obj)
}

struct Open {
    file: File,
    next_seq: u64,
    prev_hash: String,
}

/// An append-only, hash-chained, fsynced log of `R` entries.
pub struct ChainLog<R> {
    path: PathBuf,
    open: Mutex<Option<Open>>,
    /// (seq, hash) of the newest entry written. A lock of its own, so that reading it never
    /// waits for a write's fsync.
    head: Mutex<Option<(u64, String)>>,
    /// Why the last open or write failed, and when; cleared by the next successful write.
    failure: Mutex<Option<(String, SystemTime)>>,
    record: PhantomData<fn(&R)>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<R: ChainRecord> ChainLog<R> {
    /// Opens (or creates) the log and continues its chain. A log that cannot be opened is not
    /// fatal here: [`ChainLog::failure`] says why, and each append retries the open.
    pub fn open(path: &Path) -> ChainLog<R> {
        let log = ChainLog {
            path: path.to_path_buf(),
            open: Mutex::new(None),
            head: Mutex::new(None),
            failure: Mutex::new(None),
            record: PhantomData,
        };
        {
            let mut slot = relock(&log.open);
            match log.reopen() {
                Ok(o) => *slot = Some(o),
                Err(e) => {
                    tracing::error!(target: "audit", error = %e, "audit log unavailable: changes that need it are refused until it can be written");
                    log.set_failure(Some(&e));
                }
            }
        }
        log
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (seq, hash) of the newest entry in the log, once it has been opened or written.
    pub fn head(&self) -> Option<(u64, String)> {
        relock(&self.head).clone()
    }

    /// Why the last attempt to open or write the log failed, and since when; `None` once a
    /// write has succeeded.
    pub fn failure(&self) -> Option<(String, SystemTime)> {
        relock(&self.failure).clone()
    }

    fn set_failure(&self, e: Option<&AuditError>) {
        *relock(&self.failure) = e.map(|e| (e.to_string(), SystemTime::now()));
    }

    fn set_head(&self, seq: u64, hash: &str) {
        *relock(&self.head) = Some((seq, hash.to_string()));
    }

    fn err(&self, reason: String) -> AuditError {
        AuditError {
            path: self.path.display().to_string(),
            reason,
        }
    }

    fn reopen(&self) -> Result<Open, AuditError> {
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| self.err(format!("creating {}: {e}", dir.display())))?;
            }
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(|e| self.err(format!("cannot open for appending: {e}")))?;
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let tail = if regular {
            read_tail(&mut file).map_err(|e| self.err(format!("reading the last entry: {e}")))?
        } else {
            Tail::Empty
        };
        let mut open = Open {
            file,
            next_seq: 1,
            prev_hash: ZERO_HASH.to_string(),
        };
        match tail {
            Tail::Empty => {}
            Tail::Intact { seq, hash } => {
                self.set_head(seq, &hash);
                open.next_seq = seq + 1;
                open.prev_hash = hash;
            }
            Tail::Broken { reason, torn } => {
                tracing::error!(
                    target: "audit", path = %self.path.display(), %reason,
                    "the audit log's last entry is broken: starting a new chain (verify will report the break)"
                );
                if torn {
                    // Finish the torn line so the restart entry is a line of its own.
                    open.file
                        .write_all(b"\n")
                        .map_err(|e| self.err(format!("write failed: {e}")))?;
                }
                let restart =
                    R::chain_restart(&format!("the previous last entry was broken: {reason}"));
                self.write(&mut open, &restart)?;
            }
        }
        Ok(open)
    }

    /// Appends one entry to an open log: write, then fsync. On failure the chain state is
    /// left where it was.
    fn write(&self, open: &mut Open, record: &R) -> Result<Appended, AuditError> {
        let link = Link {
            seq: open.next_seq,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            prev_hash: &open.prev_hash,
        };
        let Value::Object(mut obj) = record.line(&link).map_err(|e| self.err(e))? else {
            return Err(self.err("an entry did not serialize to an object".into()));
        };
        let hash = sha256_hex(canonical(&obj).as_bytes());
        obj.insert("hash".into(), hash.clone().into());
        let mut line = serde_json::to_string(&obj).map_err(|e| self.err(e.to_string()))?;
        line.push('\n');
        open.file
            .write_all(line.as_bytes())
            .map_err(|e| self.err(format!("write failed: {e}")))?;
        open.file
            .sync_data()
            .map_err(|e| self.err(format!("fsync failed: {e}")))?;
        let seq = open.next_seq;
        self.set_head(seq, &hash);
        open.next_seq += 1;
        open.prev_hash = hash.clone();
        Ok(Appended { seq, hash })
    }

    /// Appends one entry, durably, on this thread. [`ChainLog::append`] is the async form.
    pub fn append_blocking(&self, record: &R) -> Result<Appended, AuditError> {
        let result = self.append_locked(record);
        let failed = relock(&self.failure).is_some();
        match &result {
            Ok(_) if failed => self.set_failure(None),
            Err(e) => self.set_failure(Some(e)),
            Ok(_) => {}
        }
        result
    }

    fn append_locked(&self, record: &R) -> Result<Appended, AuditError> {
        let mut slot = relock(&self.open);
        if slot.is_none() {
            *slot = Some(self.reopen()?);
        }
        let open = slot.as_mut().ok_or_else(|| self.err("not open".into()))?;
        let len = open.file.metadata().map(|m| m.len()).ok();
        match self.write(open, record) {
            Ok(appended) => Ok(appended),
            Err(e) => {
                // Undo a partial line where we can; either way reopen (and re-read the tail)
                // next time, so whatever is on disk decides how the chain continues.
                if let (Some(len), Some(o)) = (len, slot.as_ref()) {
                    let _ = o.file.set_len(len);
                }
                *slot = None;
                Err(e)
            }
        }
    }
}

impl<R: ChainRecord + Send + 'static> ChainLog<R> {
    /// Appends one entry, durably, on the blocking pool. Returns its sequence number and hash.
    pub async fn append(self: &Arc<Self>, record: R) -> Result<Appended, AuditError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.append_blocking(&record))
            .await
            .unwrap_or_else(|e| Err(self.err(format!("the writer task failed: {e}"))))
    }
}

/// The intact lines in the last `max_bytes` of the log at `path`, oldest first (a partial
/// first line and broken lines are skipped), as objects. For state a daemon restores at start;
/// empty when the log is missing or unreadable.
pub fn recent_lines(path: &Path, max_bytes: u64) -> Vec<Map<String, Value>> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let start = len.saturating_sub(max_bytes);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(len - start).read_to_end(&mut buf).is_err()
    {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.lines();
    if start > 0 {
        lines.next();
    }
    lines.filter_map(|l| check_line(l).ok()).collect()
}

/// The intact lines containing `needle` in the last `max_bytes` of the log, oldest first,
/// read line by line: for state kept longer than the tail `recent_lines` reads (maintenance
/// windows last up to days), without holding the whole span in memory or parsing every line.
pub fn recent_lines_containing(
    path: &Path,
    max_bytes: u64,
    needle: &str,
) -> Vec<Map<String, Value>> {
    use std::io::BufRead as _;
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let start = len.saturating_sub(max_bytes);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut reader = std::io::BufReader::new(file.take(len - start));
    let mut found = Vec::new();
    let mut line = Vec::new();
    let mut first = start > 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // The first line of a tail that starts mid-file is a partial one.
        if std::mem::take(&mut first) {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.contains(needle) {
            if let Ok(obj) = check_line(text.trim_end()) {
                found.push(obj);
            }
        }
    }
    found
}

enum Tail {
    Empty,
    Intact { seq: u64, hash: String },
    Broken { reason: String, torn: bool },
}

/// The last line of the log, read from at most the last 64 KiB (entries are far smaller).
fn read_tail(file: &mut File) -> std::io::Result<Tail> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.take(len - start).read_to_end(&mut buf)?;
    let torn = buf.last() != Some(&b'\n');
    let text = String::from_utf8_lossy(&buf);
    let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Ok(Tail::Empty);
    };
    if torn {
        return Ok(Tail::Broken {
            reason: "the last line has no newline: a torn write".into(),
            torn,
        });
    }
    Ok(match check_line(last) {
        Ok(obj) => Tail::Intact {
            seq: obj.get("seq").and_then(Value::as_u64).unwrap_or(0),
            hash: obj
                .get("hash")
                .and_then(Value::as_str)
                .unwrap_or(ZERO_HASH)
                .to_string(),
        },
        Err(reason) => Tail::Broken { reason, torn },
    })
}

/// The result of checking a whole log.
#[derive(Debug, Default)]
pub struct Verification {
    pub entries: u64,
    /// Every break found: (1-based line number, what is wrong).
    pub breaks: Vec<(u64, String)>,
    /// Lines where the writer restarted the chain after finding it broken.
    pub restarts: Vec<u64>,
    /// A last line without its newline: (line number, bytes). It is not an entry yet: a write
    /// in progress (a reader can see one half done), or a tail torn by a crash, which the
    /// writer ends and follows with a `chain-restart` when it next opens the log. Either way
    /// it is reported and not verified, and on its own it does not break the chain.
    pub unterminated: Option<(u64, usize)>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.breaks.is_empty() && self.restarts.is_empty()
    }
}

/// Checks the chain line by line, as generic JSON objects (so a line written by an older or
/// newer daemon, or by the other daemon, still verifies): each line's own hash, `prev_hash`
/// against the line before, and `seq` increasing by one. A `chain-restart` entry starts a new
/// chain (it is reported, and a log with one never verifies as intact). A last line without
/// its newline is reported in [`Verification::unterminated`], not checked: a live log is read
/// while its writer appends.
pub fn verify(mut reader: impl BufRead) -> std::io::Result<Verification> {
    let mut v = Verification::default();
    let mut prev: Option<(u64, String)> = None;
    let mut line = Vec::new();
    for n in 1u64.. {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else {
            // Only a line that ends in its newline is an entry.
            if !String::from_utf8_lossy(&line).trim().is_empty() {
                v.unterminated = Some((n, line.len()));
            }
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        v.entries += 1;
        let obj = match check_line(&text) {
            Ok(o) => o,
            Err(reason) => {
                v.breaks.push((n, reason));
                prev = None;
                continue;
            }
        };
        let seq = obj.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let prev_hash = obj.get("prev_hash").and_then(Value::as_str).unwrap_or("");
        let hash = obj.get("hash").and_then(Value::as_str).unwrap_or("");
        let phase = obj.get("phase").and_then(Value::as_str).unwrap_or("");
        if phase == CHAIN_RESTART {
            v.restarts.push(n);
        } else {
            match &prev {
                Some((pseq, phash)) => {
                    if prev_hash != phash {
                        v.breaks.push((n, format!("prev_hash does not match the hash of the entry before it (seq {pseq}): an entry was removed, inserted or reordered")));
                    } else if seq != pseq + 1 {
                        v.breaks
                            .push((n, format!("seq {seq} does not follow seq {pseq}")));
                    }
                }
                None if v.entries == 1 && prev_hash != ZERO_HASH => v.breaks.push((
                    n,
                    "the first entry does not start a chain (prev_hash is not zero): the log's beginning was removed".into(),
                )),
                None => {}
            }
        }
        prev = Some((seq, hash.to_string()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal entry type, as a daemon would define one.
    struct Note(String, &'static str);

    impl ChainRecord for Note {
        fn line(&self, link: &Link<'_>) -> Result<Value, String> {
            Ok(serde_json::json!({
                "seq": link.seq, "time": link.time, "phase": self.1,
                "note": self.0, "prev_hash": link.prev_hash,
            }))
        }
        fn chain_restart(reason: &str) -> Self {
            Note(reason.to_string(), CHAIN_RESTART)
        }
    }

    fn check(path: &Path) -> Verification {
        verify(std::io::BufReader::new(File::open(path).unwrap())).unwrap()
    }

    #[test]
    fn a_chain_continues_across_opens_and_a_torn_tail_restarts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = ChainLog::<Note>::open(&path);
        let first = log.append_blocking(&Note("a".into(), "note")).unwrap();
        assert_eq!(first.seq, 1);
        drop(log);
        let log = ChainLog::<Note>::open(&path);
        assert_eq!(log.head(), Some((1, first.hash.clone())));
        assert_eq!(
            log.append_blocking(&Note("b".into(), "note")).unwrap().seq,
            2
        );
        assert!(check(&path).intact());
        assert_eq!(recent_lines(&path, 1 << 20).len(), 2);
        drop(log);

        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"ti").unwrap();
        drop(f);
        // Seen before the writer opens the log again, the torn line is not an entry yet.
        let v = check(&path);
        assert!(v.intact(), "{v:?}");
        assert_eq!((v.entries, v.unterminated), (2, Some((3, 12))), "{v:?}");
        let log = ChainLog::<Note>::open(&path);
        log.append_blocking(&Note("c".into(), "note")).unwrap();
        let v = check(&path);
        assert_eq!(v.breaks.len(), 1, "{v:?}");
        assert_eq!(v.breaks[0].0, 3);
        assert_eq!(v.restarts, vec![4]);
        assert_eq!(v.unterminated, None);
    }

    #[test]
    fn a_line_being_written_is_not_checked_until_its_newline_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = ChainLog::<Note>::open(&path);
        for note in ["a", "b", "c"] {
            log.append_blocking(&Note(note.into(), "note")).unwrap();
        }
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        let last_start = whole[..whole.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        // Every prefix a reader can see while the third line is being written.
        for cut in last_start..whole.len() {
            let v = verify(&whole[..cut]).unwrap();
            assert!(v.intact(), "cut at {cut}: {v:?}");
            assert_eq!(v.entries, 2, "cut at {cut}");
            let pending = (cut > last_start).then_some((3, cut - last_start));
            assert_eq!(v.unterminated, pending, "cut at {cut}");
        }
        let v = verify(&whole[..]).unwrap();
        assert_eq!((v.entries, v.unterminated), (3, None));
        assert!(v.intact());
        // A complete line that is not an entry is still a break.
        let mut edited = whole[..last_start].to_vec();
        edited.extend_from_slice(b"{\"seq\":3}\n");
        let v = verify(&edited[..]).unwrap();
        assert_eq!(v.breaks.len(), 1, "{v:?}");
        assert_eq!(v.breaks[0].0, 3);
    }

    #[test]
    fn an_unwritable_log_says_why_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("state");
        std::fs::write(&blocker, "a file where the directory should be").unwrap();
        let log = ChainLog::<Note>::open(&blocker.join("audit.jsonl"));
        assert!(log.failure().is_some());
        assert!(log.append_blocking(&Note("a".into(), "note")).is_err());
        std::fs::remove_file(&blocker).unwrap();
        assert_eq!(
            log.append_blocking(&Note("a".into(), "note"))
                .map(|a| a.seq),
            Ok(1)
        );
        assert!(log.failure().is_none());
    }
}
