//! The collector's audit log (`audit_log`): every change an operator makes through the
//! collector (a silence created or expired, an incident note) and every refused attempt, one
//! hash-chained JSON line each. The chain, the fsynced writer and `verify` are
//! `health_daemon::audit`, the same as the agent's, so `agent-ctl audit --verify --file PATH`
//! checks this log too.
//!
//! A line: `seq`, `time`, `phase` (`change`, `denied`, or `chain-restart`), `who` (the
//! caller's identity, as `crate::authz` renders it), `role`, `what` (the RPC or the collector's
//! own duty, e.g. `maintenance-silence`), `args` (an object), `outcome` (`succeeded`,
//! `failed`, `denied`), `message`, `prev_hash`, `hash`.
//!
//! The collector's own actions (the maintenance silences it keeps in Alertmanager) are
//! recorded too, with `who` = `health-collector`.

use std::path::Path;
use std::sync::Arc;

use health_daemon::audit::{ChainLog, ChainRecord, Link, CHAIN_RESTART};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use health_daemon::audit::{Appended, AuditError};

/// What one entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A change made (or attempted and failed: see `outcome`).
    Change,
    /// A caller without the operator role asked for a change.
    Denied,
    ChainRestart,
}

/// How the request an entry records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Denied,
}

/// The fields a caller supplies; the log adds seq, time and the hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub who: String,
    pub role: String,
    pub what: String,
    /// An object; `{}` when there are none.
    pub args: Value,
    pub outcome: Option<Outcome>,
    pub message: String,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    seq: u64,
    time: String,
    phase: Phase,
    #[serde(flatten)]
    entry: Entry,
    prev_hash: String,
}

struct Line {
    phase: Phase,
    entry: Entry,
}

impl ChainRecord for Line {
    fn line(&self, link: &Link<'_>) -> Result<Value, String> {
        let mut entry = self.entry.clone();
        if !entry.args.is_object() {
            entry.args = Value::Object(Map::new());
        }
        serde_json::to_value(Record {
            seq: link.seq,
            time: link.time.clone(),
            phase: self.phase,
            entry,
            prev_hash: link.prev_hash.to_string(),
        })
        .map_err(|e| e.to_string())
    }

    fn chain_restart(reason: &str) -> Line {
        Line {
            phase: Phase::ChainRestart,
            entry: Entry {
                who: "health-collector".into(),
                role: String::new(),
                what: CHAIN_RESTART.into(),
                args: Value::Object(Map::new()),
                outcome: None,
                message: reason.to_string(),
            },
        }
    }
}

pub struct AuditLog {
    chain: Arc<ChainLog<Line>>,
}

impl AuditLog {
    /// Opens (or creates) the log. One that cannot be opened is not fatal: each append
    /// retries, and the change waiting on it is refused while it fails.
    pub fn open(path: &Path) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            chain: Arc::new(ChainLog::open(path)),
        })
    }

    pub fn path(&self) -> &Path {
        self.chain.path()
    }

    /// (seq, hash) of the newest entry.
    pub fn head(&self) -> Option<(u64, String)> {
        self.chain.head()
    }

    /// Appends one entry, durably, on the blocking pool.
    pub async fn append(&self, phase: Phase, entry: Entry) -> Result<Appended, AuditError> {
        self.chain.append(Line { phase, entry }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_chain_and_verify_with_the_agents_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path);
        let entry = |what: &str, outcome| Entry {
            who: "uid 1000 (unix socket)".into(),
            role: "reader".into(),
            what: what.into(),
            args: serde_json::json!({"id": "x"}),
            outcome: Some(outcome),
            message: String::new(),
        };
        log.append(Phase::Denied, entry("CreateSilence", Outcome::Denied))
            .await
            .unwrap();
        let second = log
            .append(Phase::Change, entry("ExpireSilence", Outcome::Succeeded))
            .await
            .unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(log.head(), Some((2, second.hash.clone())));
        let text = std::fs::read_to_string(&path).unwrap();
        let v = health_daemon::audit::verify(text.as_bytes()).unwrap();
        assert!(v.intact(), "{v:?}");
        assert_eq!(v.entries, 2);
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["phase"], "denied");
        assert_eq!(first["outcome"], "denied");
        assert_eq!(first["who"], "uid 1000 (unix socket)");
        // An edit breaks it.
        let edited = text.replacen("ExpireSilence", "ExpireSilencf", 1);
        let v = health_daemon::audit::verify(edited.as_bytes()).unwrap();
        assert_eq!(v.breaks.len(), 1, "{v:?}");
    }
}
