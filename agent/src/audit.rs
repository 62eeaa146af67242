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
//!
//! The chain, the writer and [`verify`] are `health_daemon::audit`, shared with the
//! collector's own audit log; this module holds the agent's line format and its condition.

use std::path::Path;
use std::sync::Arc;

use health_daemon::audit::{ChainLog, ChainRecord, Link};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Outcome;

pub use health_daemon::audit::{verify, Appended, AuditError, Verification, ZERO_HASH};

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

/// One line to write: the phase and the action's fields.
struct Line {
    phase: Phase,
    entry: Entry,
}

impl ChainRecord for Line {
    fn line(&self, link: &Link<'_>) -> Result<Value, String> {
        let mut entry = self.entry.clone();
        if entry.args.is_null() {
            entry.args = Value::Object(Map::new());
        }
        let record = Record {
            seq: link.seq,
            time: link.time.clone(),
            phase: self.phase,
            entry,
            prev_hash: link.prev_hash.to_string(),
            hash: None,
        };
        serde_json::to_value(&record).map_err(|e| e.to_string())
    }

    fn chain_restart(reason: &str) -> Line {
        Line {
            phase: Phase::ChainRestart,
            entry: Entry {
                action: "chain-restart".into(),
                message: reason.to_string(),
                ..Default::default()
            },
        }
    }
}

pub struct AuditLog {
    chain: ChainLog<Line>,
}

impl AuditLog {
    /// Opens (or creates) the log and continues its chain. A log that cannot be opened is
    /// not fatal: the agent still monitors, and every mutating action is refused until an
    /// append succeeds (each append retries the open).
    pub fn open(path: &Path) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            chain: ChainLog::open(path),
        })
    }

    pub fn path(&self) -> &Path {
        self.chain.path()
    }

    /// (seq, hash) of the newest entry in the log, once it has been opened or written.
    pub fn head(&self) -> Option<(u64, String)> {
        self.chain.head()
    }

    /// AUDIT_LOG_UNWRITABLE while the last attempt to open or write the log failed. Nothing
    /// retries on its own (a retry that wrote nothing would prove nothing about a full disk):
    /// the next action, or a dry run, does.
    pub fn condition(&self) -> Option<health_hal::Condition> {
        self.chain.failure().map(|(why, since)| {
            health_hal::Condition::new(
                health_hal::ConditionCode::AuditLogUnwritable,
                health_hal::Severity::Warning,
                "audit-log",
                format!("{why}; every action is refused until an entry can be written"),
                since,
            )
        })
    }

    /// Appends one entry, durably, on this thread. [`AuditLog::append`] is the async form.
    pub fn append_blocking(&self, phase: Phase, entry: &Entry) -> Result<Appended, AuditError> {
        self.chain.append_blocking(&Line {
            phase,
            entry: entry.clone(),
        })
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
            .unwrap_or_else(|e| {
                Err(AuditError {
                    path: self.path().display().to_string(),
                    reason: format!("the writer task failed: {e}"),
                })
            })
    }
}

/// The intact entries in the last `max_bytes` of the log at `path`, oldest first (a partial
/// first line, broken lines and lines of another format are skipped). For state an agent
/// restores at start (idempotency keys); empty when the log is missing or unreadable.
pub fn recent_entries(path: &Path, max_bytes: u64) -> Vec<Record> {
    health_daemon::audit::recent_lines(path, max_bytes)
        .into_iter()
        .filter_map(|obj| serde_json::from_value(Value::Object(obj)).ok())
        .collect()
}

/// The intact entries whose line contains `needle` in the last `max_bytes` of the log,
/// oldest first; the other lines are skipped unparsed.
pub fn entries_containing(path: &Path, max_bytes: u64, needle: &str) -> Vec<Record> {
    health_daemon::audit::recent_lines_containing(path, max_bytes, needle)
        .into_iter()
        .filter_map(|obj| serde_json::from_value(Value::Object(obj)).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::io::Write;

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
    async fn entries_containing_reads_only_matching_intact_lines_of_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path);
        for a in [
            "maintenance-start",
            "reset-soft",
            "maintenance-start",
            "calibrate",
            "maintenance-end",
        ] {
            log.append(Phase::End, entry(a)).await.unwrap();
        }
        let all = entries_containing(&path, 1 << 20, "\"maintenance-");
        let actions: Vec<&str> = all.iter().map(|r| r.entry.action.as_str()).collect();
        assert_eq!(
            actions,
            ["maintenance-start", "maintenance-start", "maintenance-end"]
        );
        // A tail that starts inside the first line skips it rather than misreading it.
        let len = std::fs::metadata(&path).unwrap().len();
        let cut = entries_containing(&path, len - 10, "\"maintenance-");
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].seq, all[1].seq);
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
