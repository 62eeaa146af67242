//! The persistent audit log: one JSON object per line, each carrying the SHA-256 hash of the
//! line before it, written and fsynced before the action it describes starts.
//!
//! [`crate::action::Actions`] writes every entry about an action: a `begin` entry before a
//! mutating action runs (if it cannot be made durable, the action is refused), an `end` entry
//! with outcome and duration after it (or `interrupted` if the agent stopped first), and
//! single entries for requests that were `denied` (role), `refused` (a safety check, an
//! idempotency key reused for another request) or only a `dry-run`. The only other writer is
//! [`crate::wire::authn`], which records the `denied` entry of a caller with no role at all.
//! `agent-ctl audit --verify` reads the file directly and checks the chain with [`verify`].
//!
//! The line format is defined once, with serde: [`Record`] (seq, time, phase, the action's
//! [`Entry`] flattened, prev_hash, hash). [`verify`] checks lines as generic JSON objects
//! instead, so a line written by an older or newer agent still verifies.
//!
//! The hash of an entry is SHA-256 over its canonical form: the JSON object without `hash`,
//! keys sorted, no whitespace. The canonical form contains `prev_hash`, so each entry commits
//! to all entries before it: editing, removing or reordering a line breaks the chain at that
//! line. The chain has no key, so someone who can rewrite the whole file can also recompute
//! every hash after their edit; and removing entries from the end leaves a valid, shorter chain.
//! Detecting those needs the head hash kept somewhere else: [`AuditLog::head`] goes out in
//! every report (`AgentStatus.audit_head`), and `agent-ctl --collector C audit --verify --node
//! N` checks the file against the copy the collector holds.
//!
//! On start the agent reads only the last line. If it is intact (parses, hash matches) the
//! chain continues from it. If not (a torn write from a crash, or an edit), the agent starts
//! anyway, logs an error and writes a `chain-restart` entry whose `prev_hash` is the zero hash;
//! `verify` still reports the broken line, so a restart never hides a break.
//!
//! Writes run on the blocking pool (fsync can take milliseconds, or much longer on a sick
//! disk), one at a time under a mutex. A failed write drops the file handle; the next append
//! reopens the file and re-reads its tail, so a torn partial line becomes a recorded restart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Outcome;

pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What one entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Begin,
    End,
    Denied,
    Refused,
    DryRun,
    /// The agent stopped after an action's begin and before its end.
    Interrupted,
    ChainRestart,
    /// A remediation step a shadow policy would have taken; nothing was done.
    Shadow,
    /// A remediation step the device cannot do (its backend lacks the capability): skipped,
    /// not failed.
    Skipped,
    /// An operator's control of the remediation engine (pause, resume, approve, clear), or
    /// the engine's own decision (a ladder exhausted, a step never retried after a restart).
    Control,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Begin => "begin",
            Phase::End => "end",
            Phase::Denied => "denied",
            Phase::Refused => "refused",
            Phase::DryRun => "dry-run",
            Phase::Interrupted => "interrupted",
            Phase::ChainRestart => "chain-restart",
            Phase::Shadow => "shadow",
            Phase::Skipped => "skipped",
            Phase::Control => "control",
        }
    }
}

/// How the request an entry records ended. `None` on a `begin` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    Succeeded,
    Failed,
    TimedOut,
    Refused,
    Denied,
    Interrupted,
}

impl From<Outcome> for Recorded {
    fn from(o: Outcome) -> Recorded {
        match o {
            Outcome::Succeeded => Recorded::Succeeded,
            Outcome::Failed => Recorded::Failed,
            Outcome::TimedOut => Recorded::TimedOut,
            Outcome::Refused => Recorded::Refused,
        }
    }
}

/// The fields an action supplies; the log adds seq, time and the hashes ([`Record`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Entry {
    pub action_id: String,
    pub caller: String,
    pub role: String,
    pub action: String,
    pub target: String,
    /// The action's arguments: an object, `{}` when it has none.
    pub args: Value,
    pub idempotency_key: String,
    pub outcome: Option<Recorded>,
    pub message: String,
    pub duration_ms: Option<u64>,
    /// A remediation step: the condition that triggered it (`CODE: message`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    /// A remediation step: how its verification ended.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub verification: String,
}

/// One line of the log: the one definition of its format, written by [`AuditLog`] and read
/// back by [`recent_entries`]. [`verify`] checks lines as generic JSON objects instead, so a
/// line from an older or newer agent still verifies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    pub phase: Phase,
    #[serde(flatten)]
    pub entry: Entry,
    pub prev_hash: String,
    /// SHA-256 of the canonical form of every other field; absent only while it is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("audit log {path}: {reason}")]
pub struct AuditError {
    pub path: String,
    pub reason: String,
}

struct Open {
    file: File,
    next_seq: u64,
    prev_hash: String,
}

/// Where an appended entry landed in the chain: what a post-mortem cites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// Hex SHA-256 of the entry, its `hash` field.
    pub hash: String,
}

pub struct AuditLog {
    path: PathBuf,
    open: Mutex<Option<Open>>,
    /// (seq, hash) of the newest entry written, for reports. A lock of its own, so that
    /// reading it never waits for a write's fsync.
    head: Mutex<Option<(u64, String)>>,
    /// Why the last open or write failed, and when; cleared by the next successful write.
    failure: Mutex<Option<(String, SystemTime)>>,
}

fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical form of an entry: its object without `hash`, serialized with sorted keys.
fn canonical(obj: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> =
        obj.iter().filter(|(k, _)| k.as_str() != "hash").collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// Checks one line on its own: it parses, and its hash matches its contents. Returns the
/// object.
fn check_line(line: &str) -> Result<Map<String, Value>, String> {
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

impl AuditLog {
    /// Opens (or creates) the log and continues its chain. A log that cannot be opened is
    /// not fatal: the agent still monitors, and every mutating action is refused until an
    /// append succeeds (each append retries the open).
    pub fn open(path: &Path) -> Arc<AuditLog> {
        let log = AuditLog {
            path: path.to_path_buf(),
            open: Mutex::new(None),
            head: Mutex::new(None),
            failure: Mutex::new(None),
        };
        {
            let mut slot = log.lock();
            match log.reopen() {
                Ok(o) => *slot = Some(o),
                Err(e) => {
                    tracing::error!(
                        target: "audit", error = %e,
                        "audit log unavailable: mutating actions are refused until it can be written"
                    );
                    log.set_failure(Some(&e));
                }
            }
        }
        Arc::new(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (seq, hash) of the newest entry in the log, once it has been opened or written.
    pub fn head(&self) -> Option<(u64, String)> {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_failure(&self, e: Option<&AuditError>) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) =
            e.map(|e| (e.to_string(), SystemTime::now()));
    }

    /// AUDIT_LOG_UNWRITABLE while the last attempt to open or write the log failed. Nothing
    /// retries on its own (a retry that wrote nothing would prove nothing about a full disk):
    /// the next action, or a dry run, does.
    pub fn condition(&self) -> Option<health_hal::Condition> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.as_ref().map(|(why, since)| {
            health_hal::Condition::new(
                health_hal::ConditionCode::AuditLogUnwritable,
                health_hal::Severity::Warning,
                "audit-log",
                format!("{why}; every action is refused until an entry can be written"),
                *since,
            )
        })
    }

    fn set_head(&self, seq: u64, hash: &str) {
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = Some((seq, hash.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
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
                let entry = Entry {
                    action: "chain-restart".into(),
                    message: format!("the previous last entry was broken: {reason}"),
                    ..Default::default()
                };
                self.write(&mut open, Phase::ChainRestart, &entry)?;
            }
        }
        Ok(open)
    }

    /// Appends one entry to an open log: write, then fsync. On failure the chain state is
    /// left where it was.
    fn write(&self, open: &mut Open, phase: Phase, e: &Entry) -> Result<Appended, AuditError> {
        let mut entry = e.clone();
        if entry.args.is_null() {
            entry.args = Value::Object(Map::new());
        }
        let record = Record {
            seq: open.next_seq,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            phase,
            entry,
            prev_hash: open.prev_hash.clone(),
            hash: None,
        };
        let Value::Object(mut obj) =
            serde_json::to_value(&record).map_err(|e| self.err(e.to_string()))?
        else {
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

    /// Appends one entry, durably, on this thread. [`AuditLog::append`] is the async form.
    pub fn append_blocking(&self, phase: Phase, entry: &Entry) -> Result<Appended, AuditError> {
        let result = self.append_locked(phase, entry);
        let failed = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        match &result {
            Ok(_) if failed => self.set_failure(None),
            Err(e) => self.set_failure(Some(e)),
            Ok(_) => {}
        }
        result
    }

    fn append_locked(&self, phase: Phase, entry: &Entry) -> Result<Appended, AuditError> {
        let mut slot = self.lock();
        if slot.is_none() {
            *slot = Some(self.reopen()?);
        }
        let open = slot.as_mut().ok_or_else(|| self.err("not open".into()))?;
        let len = open.file.metadata().map(|m| m.len()).ok();
        match self.write(open, phase, entry) {
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

    /// Appends one entry, durably, on the blocking pool. Returns its sequence number and hash.
    pub async fn append(
        self: &Arc<Self>,
        phase: Phase,
        entry: Entry,
    ) -> Result<Appended, AuditError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_blocking(phase, &entry))
            .await
            .unwrap_or_else(|e| Err(self.err(format!("the writer task failed: {e}"))))
    }
}

/// The intact entries in the last `max_bytes` of the log at `path`, oldest first (a partial
/// first line, broken lines and lines of another format are skipped). For state an agent
/// restores at start (idempotency keys); empty when the log is missing or unreadable.
pub fn recent_entries(path: &Path, max_bytes: u64) -> Vec<Record> {
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
    lines
        .filter_map(|l| check_line(l).ok())
        .filter_map(|obj| serde_json::from_value(Value::Object(obj)).ok())
        .collect()
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
    /// Lines where the agent restarted the chain after finding it broken.
    pub restarts: Vec<u64>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.breaks.is_empty() && self.restarts.is_empty()
    }
}

/// Checks the chain line by line: each line's own hash, `prev_hash` against the line before,
/// and `seq` increasing by one. A `chain-restart` entry starts a new chain (it is reported,
/// and a log with one never verifies as intact).
pub fn verify(reader: impl BufRead) -> std::io::Result<Verification> {
    let mut v = Verification::default();
    let mut prev: Option<(u64, String)> = None;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let n = i as u64 + 1;
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
        if phase == Phase::ChainRestart.as_str() {
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

    fn entry(action: &str) -> Entry {
        Entry {
            action_id: "a-1".into(),
            caller: "uid 0 (unix socket)".into(),
            role: "operator".into(),
            action: action.into(),
            target: "loihi-0".into(),
            args: serde_json::json!({"kind": "soft"}),
            ..Default::default()
        }
    }

    fn check(path: &Path) -> Verification {
        verify(std::io::BufReader::new(File::open(path).unwrap())).unwrap()
    }

    #[tokio::test]
    async fn entries_chain_and_an_edit_breaks_the_chain_at_that_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path);
        for a in ["reset-soft", "calibrate", "reset-hard"] {
            log.append(Phase::Begin, entry(a)).await.unwrap();
        }
        let v = check(&path);
        assert!(v.intact(), "{v:?}");
        assert_eq!(v.entries, 3);

        // A reopened log continues the chain.
        drop(log);
        let log = AuditLog::open(&path);
        assert_eq!(log.append(Phase::End, entry("x")).await.unwrap().seq, 4);
        assert!(check(&path).intact());

        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("calibrate", "calibrat3", 1);
        std::fs::write(&path, &edited).unwrap();
        let v = check(&path);
        assert_eq!(v.breaks.len(), 1, "{v:?}");
        assert_eq!(v.breaks[0].0, 2);

        // Removing a line breaks the chain at the line after it.
        let removed: Vec<&str> = text.lines().filter(|l| !l.contains("calibrate")).collect();
        std::fs::write(&path, removed.join("\n") + "\n").unwrap();
        let v = check(&path);
        assert_eq!(v.breaks[0].0, 2, "{v:?}");
        assert!(v.breaks[0].1.contains("prev_hash"), "{v:?}");
    }

    #[tokio::test]
    async fn a_torn_tail_is_recorded_as_a_chain_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path);
        log.append(Phase::Begin, entry("reset-soft")).await.unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"ti").unwrap();
        drop(f);
        let log = AuditLog::open(&path);
        log.append(Phase::Begin, entry("calibrate")).await.unwrap();
        let v = check(&path);
        assert_eq!(v.breaks.len(), 1, "{v:?}");
        assert_eq!(v.breaks[0].0, 2);
        assert_eq!(v.restarts, vec![3]);
        assert!(!v.intact());
    }

    #[tokio::test]
    async fn the_unwritable_condition_lasts_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("state");
        std::fs::write(&blocker, "a file where the log's directory should be").unwrap();
        let log = AuditLog::open(&blocker.join("audit.jsonl"));
        let c = log.condition().expect("unwritable from the start");
        assert_eq!(c.code, health_hal::ConditionCode::AuditLogUnwritable);
        assert!(log.append(Phase::Begin, entry("calibrate")).await.is_err());
        assert!(log.condition().is_some());
        std::fs::remove_file(&blocker).unwrap();
        assert_eq!(
            log.append(Phase::Begin, entry("calibrate"))
                .await
                .map(|a| a.seq),
            Ok(1)
        );
        assert_eq!(log.condition(), None);
        assert_eq!(log.head().map(|h| h.0), Some(1));
    }

    #[tokio::test]
    async fn an_unwritable_log_fails_every_append() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let log = AuditLog::open(&file.join("audit.jsonl"));
        let e = log
            .append(Phase::Begin, entry("reset-soft"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("a-file/audit.jsonl"), "{e}");
        let full = AuditLog::open(Path::new("/dev/full"));
        let e = full
            .append(Phase::Begin, entry("reset-soft"))
            .await
            .unwrap_err();
        assert!(
            e.reason.contains("write failed") || e.reason.contains("fsync"),
            "{e}"
        );
    }
}
