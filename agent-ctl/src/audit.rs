//! `agent-ctl audit [--verify] [--file PATH] [--tail N] [--json]`: reads the agent's audit log
//! straight from the file (no RPC: the log must be checkable when the agent is down, and
//! reading it needs only file permissions, which root or the agent's group have) and checks
//! its hash chain with [`health_agent::audit::verify`]. With `--collector` and `--node`, it also checks
//! that the file still holds the newest entry the agent reported to the collector: the chain
//! alone cannot show that entries were cut off the end or the whole file rewritten.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use health_agent::config;

use crate::invocation::Invocation;

/// `agent-ctl audit`: the log's entries, or with `verify` its check; with `node` also the check
/// against the head that node last reported to the collector.
pub(crate) async fn command(
    ctl: &mut Invocation,
    verify: bool,
    file: Option<&Path>,
    tail: Option<usize>,
    node: Option<&str>,
) -> anyhow::Result<()> {
    let path = default_path(file)?;
    let json = ctl.cli.json;
    let mut text = run(&path, verify, tail, json)?;
    if let Some(node) = node {
        let head = ctl
            .fleet_node(node)
            .await?
            .snapshot
            .and_then(|s| s.agent)
            .and_then(|a| a.audit_head)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the collector has no audit head for node {node:?} (an agent older than this check, or no report yet)"
                )
            })?;
        text.push_str(&check_head(&path, &head, node, json)?);
    }
    ctl.print(&text)
}

/// `--file`, else `audit_log` from the default agent config if there is one, else the default.
pub fn default_path(file: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    let cfg = Path::new(config::DEFAULT_CONFIG_PATH);
    if cfg.exists() {
        let c = config::load(cfg).map_err(|e| anyhow::anyhow!("{e} (or give --file)"))?;
        return Ok(c.audit_log);
    }
    Ok(PathBuf::from(config::DEFAULT_AUDIT_LOG))
}

/// Checks that the log holds the entry the collector last heard of: the same seq with the same
/// hash. Returns the line to print; an error (exit 1) when it does not.
pub fn check_head(
    path: &Path,
    head: &health_proto::v1::AuditHead,
    node: &str,
    json: bool,
) -> anyhow::Result<String> {
    let mut last_seq = None;
    let mut same_seq_hash = None;
    let mut reader = open(path)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        // Only a line with its newline is an entry, as for `verify`: a last line without one
        // is not checked there, so it cannot stand for the head here either (a rewritten log
        // could end in a copy of the real head line with its newline removed).
        if read == 0 || line.pop() != Some(b'\n') {
            break;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let seq = v.get("seq").and_then(Value::as_u64);
        let hash = v.get("hash").and_then(Value::as_str).unwrap_or("");
        if seq == Some(head.seq) {
            if hash == head.hash {
                return Ok(if json {
                    format!(
                        "{}\n",
                        serde_json::json!({"node": node, "reported_head": {"seq": head.seq, "hash": head.hash}, "found": true})
                    )
                } else {
                    format!(
                        "{}: holds entry {} that {node} reported to the collector (hash matches)\n",
                        path.display(),
                        head.seq
                    )
                });
            }
            same_seq_hash = Some(hash.to_string());
        }
        last_seq = seq.or(last_seq);
    }
    match same_seq_hash {
        Some(h) => bail!(
            "{}: entry {} has hash {h}, but {node} reported {} to the collector: the log was rewritten",
            path.display(),
            head.seq,
            head.hash
        ),
        None => bail!(
            "{}: no entry {} (the file ends at {}), but {node} reported it to the collector with hash {}: entries were cut off or the log was replaced",
            path.display(),
            head.seq,
            last_seq.map_or("no entry".to_string(), |s| format!("entry {s}")),
            head.hash
        ),
    }
}

fn open(path: &Path) -> anyhow::Result<std::io::BufReader<std::fs::File>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open the audit log {}", path.display()))?;
    Ok(std::io::BufReader::new(f))
}

/// The text to print; an error (exit 1) when `verify` finds a break.
pub fn run(path: &Path, verify: bool, tail: Option<usize>, json: bool) -> anyhow::Result<String> {
    if verify {
        let v = health_agent::audit::verify(open(path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some((line, why)) = v.breaks.first() {
            let more = match v.breaks.len() {
                1 => String::new(),
                n => format!(" ({} more break(s) after it)", n - 1),
            };
            bail!(
                "{}: chain broken at line {line}: {why}{more}",
                path.display()
            );
        }
        if let Some(line) = v.restarts.first() {
            bail!(
                "{}: the agent restarted the chain at line {line} after finding the entry before it broken",
                path.display()
            );
        }
        let unterminated = v
            .unterminated
            .map(|(line, bytes)| serde_json::json!({"line": line, "bytes": bytes}));
        return Ok(if json {
            format!(
                "{}\n",
                serde_json::json!({"file": path.display().to_string(), "entries": v.entries, "intact": true, "unterminated": unterminated})
            )
        } else {
            let tail = v.unterminated.map_or(String::new(), |(line, bytes)| {
                format!("; line {line} ({bytes} bytes) has no newline yet and was not checked: a write in progress, or cut short (after a crash the agent ends it and restarts the chain when it next starts)")
            });
            format!(
                "{}: {} entries, chain intact{tail}\n",
                path.display(),
                v.entries
            )
        });
    }
    let mut lines: Vec<String> = Vec::new();
    for line in open(path)?.lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if !line.trim().is_empty() {
            lines.push(line);
        }
    }
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let lines = &lines[skip..];
    if json {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => {
                let s = |k: &str| match v.get(k) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                vec![
                    s("seq"),
                    s("time"),
                    s("phase"),
                    s("caller"),
                    s("role"),
                    s("action"),
                    s("target"),
                    s("outcome"),
                    s("duration_ms"),
                    s("message"),
                ]
            }
            Err(_) => vec![
                "?".into(),
                String::new(),
                "(unreadable line)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                l.chars().take(60).collect(),
            ],
        })
        .collect();
    Ok(crate::render::table(
        &[
            "SEQ", "TIME", "PHASE", "CALLER", "ROLE", "ACTION", "TARGET", "OUTCOME", "MS",
            "MESSAGE",
        ],
        &rows,
    ))
}
