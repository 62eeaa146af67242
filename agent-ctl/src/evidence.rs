//! `agent-ctl evidence --out DIR` and `agent-ctl evidence verify DIR`: what a post-mortem or an
//! auditor needs from one node, gathered in one directory with a SHA-256 manifest.
//!
//! Gathering never stops at the first thing it cannot get: a node whose agent is down is the
//! node one most needs evidence from. Each part is written if it can be had, and the manifest's
//! `NOTES` file says which parts are missing and why. The manifest (`MANIFEST.sha256`) is in
//! `sha256sum` format, so `sha256sum -c MANIFEST.sha256` checks it as well as
//! `agent-ctl evidence verify` does; it lists every file but itself.
//!
//! The parts: the audit log as it is on disk and its verification (the hash chain, and with
//! `--collector` the head the collector holds for this node), the agent's config as validated
//! by the agent's own loader, the node snapshot the agent serves, the agent's journal
//! (`journalctl`, where it exists), and from the collector the node's history and incidents.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use health_proto::v1 as pb;
use serde_json::{json, Value};

use health_agent::config;

use crate::invocation::Invocation;
use crate::{audit, json};

pub(crate) const MANIFEST: &str = "MANIFEST.sha256";
const NOTES: &str = "NOTES";
/// The journal excerpt is capped: evidence is for reading, and a runaway log must not fill
/// the disk the evidence is written to.
const MAX_JOURNAL_BYTES: u64 = 16 * 1024 * 1024;
const JOURNAL_DEADLINE: Duration = Duration::from_secs(30);

/// What `evidence --out` was asked for.
pub(crate) struct Request<'a> {
    pub out: &'a Path,
    pub since: Duration,
    pub config: Option<&'a Path>,
    pub audit_file: Option<&'a Path>,
    pub node: Option<&'a str>,
}

/// Gathers the evidence into `out` (created; must be empty if it exists).
pub(crate) async fn gather(ctl: &mut Invocation, request: Request<'_>) -> anyhow::Result<()> {
    prepare(request.out)?;
    let mut notes = Vec::new();
    let since_time = SystemTime::now()
        .checked_sub(request.since)
        .unwrap_or(SystemTime::UNIX_EPOCH);

    let config_path = request.config.map_or_else(
        || PathBuf::from(config::DEFAULT_CONFIG_PATH),
        Path::to_path_buf,
    );
    let checked = copy_config(request.out, &config_path, &mut notes);

    let snapshot = match ctl.agent().await {
        Ok(mut agent) => match agent.get_node(pb::GetNodeRequest {}).await {
            Ok(node) => Some(node.into_inner()),
            Err(e) => {
                notes.push(format!(
                    "snapshot.json: the agent refused GetNode: {}",
                    e.message()
                ));
                None
            }
        },
        Err(e) => {
            notes.push(format!("snapshot.json: cannot reach the agent: {e:#}"));
            None
        }
    };
    if let Some(s) = &snapshot {
        write_json(request.out, "snapshot.json", &json::node(s))?;
    }
    let node = request
        .node
        .map(str::to_string)
        .or_else(|| snapshot.as_ref().map(|s| s.node.clone()));

    let audit_path = match request.audit_file {
        Some(f) => f.to_path_buf(),
        None => match &checked {
            Some(c) => c.audit_log.clone(),
            None => audit::default_path(None)?,
        },
    };
    // The head before the copy: it only moves forward, so a copy taken after it holds it even
    // while the agent keeps writing.
    let head = match (&ctl.cli.collector, node.as_deref()) {
        (Some(_), Some(n)) => reported_head(ctl, n).await,
        _ => Ok(None),
    };
    let verification = copy_audit(request.out, &audit_path, &mut notes);

    let collector = if ctl.cli.collector.is_some() {
        from_collector(
            ctl,
            request.out,
            node.as_deref(),
            since_time,
            head,
            &mut notes,
        )
        .await
    } else {
        notes.push("history.json, incidents.json: no --collector given".to_string());
        json!(null)
    };
    write_json(
        request.out,
        "audit-verification.json",
        &json!({"file": audit_path, "chain": verification, "collector_head": collector}),
    )?;

    journal(request.out, since_time, &mut notes);
    let summary = json!({
        "node": node,
        "collected_at": crate::render::time(&Some(SystemTime::now().into())),
        "since": crate::render::time(&Some(since_time.into())),
        "config": config_path,
        "audit_log": audit_path,
        "missing": notes,
    });
    write_json(request.out, "summary.json", &summary)?;
    let mut text = notes.join("\n");
    text.push('\n');
    std::fs::write(request.out.join(NOTES), text)
        .with_context(|| format!("cannot write {}", request.out.join(NOTES).display()))?;
    let files = write_manifest(request.out)?;
    ctl.show(&summary, Clone::clone, |_| {
        let mut out = format!(
            "evidence in {} ({} files, manifest {MANIFEST})\n",
            request.out.display(),
            files
        );
        for note in &notes {
            let _ = writeln!(out, "  missing: {note}");
        }
        out
    })
}

fn prepare(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: evidence goes into a new or empty directory, so nothing \
                 else can be mistaken for part of it",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

fn write_json(out: &Path, name: &str, value: &Value) -> anyhow::Result<()> {
    let path = out.join(name);
    let text = format!("{value:#}\n");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Copies the config file and validates it with the agent's own loader; the validation's
/// result goes into `config-check.txt`. Returns the checked config when it is valid.
fn copy_config(out: &Path, path: &Path, notes: &mut Vec<String>) -> Option<config::AgentConfig> {
    match std::fs::read(path) {
        Ok(bytes) => {
            if let Err(e) = std::fs::write(out.join("agent.toml"), bytes) {
                notes.push(format!("agent.toml: cannot write the copy: {e}"));
            }
        }
        Err(e) => {
            notes.push(format!("agent.toml: cannot read {}: {e}", path.display()));
            return None;
        }
    }
    let (checked, verdict) = match config::load(path) {
        Ok(c) => (Some(c), format!("{}: valid\n", path.display())),
        Err(e) => (None, format!("{e}\n")),
    };
    if let Err(e) = std::fs::write(out.join("config-check.txt"), verdict) {
        notes.push(format!("config-check.txt: {e}"));
    }
    checked
}

/// Copies the audit log byte for byte and verifies the copy's chain.
fn copy_audit(out: &Path, path: &Path, notes: &mut Vec<String>) -> Value {
    let copy = out.join("audit.jsonl");
    if let Err(e) = std::fs::copy(path, &copy) {
        notes.push(format!("audit.jsonl: cannot copy {}: {e}", path.display()));
        return json!({"intact": null, "error": e.to_string()});
    }
    match std::fs::File::open(&copy)
        .map(std::io::BufReader::new)
        .and_then(health_agent::audit::verify)
    {
        Ok(v) => json!({
            "intact": v.intact(),
            "entries": v.entries,
            "breaks": v.breaks.iter().map(|(line, why)| json!({"line": line, "why": why})).collect::<Vec<_>>(),
            "chain_restarts": v.restarts,
            "unterminated": v.unterminated.map(|(line, bytes)| json!({"line": line, "bytes": bytes})),
        }),
        Err(e) => json!({"intact": null, "error": e.to_string()}),
    }
}

/// The node's history and incidents from the collector, and its check of the audit head.
async fn from_collector(
    ctl: &mut Invocation,
    out: &Path,
    node: Option<&str>,
    since: SystemTime,
    head: Result<Option<pb::AuditHead>, String>,
    notes: &mut Vec<String>,
) -> Value {
    let Some(node) = node else {
        notes.push(
            "history.json, incidents.json: the node's name is unknown (agent down: give --node)"
                .into(),
        );
        return json!(null);
    };
    let mut collector = match ctl.collector().await {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("history.json, incidents.json: {e:#}"));
            return json!(null);
        }
    };
    let history = collector
        .query_history(pb::QueryHistoryRequest {
            node: node.to_string(),
            since: Some(since.into()),
            limit: 10_000,
            oldest_first: true,
            ..Default::default()
        })
        .await;
    match history {
        Ok(r) => {
            let entries: Vec<Value> = r
                .into_inner()
                .entries
                .iter()
                .map(json::history_entry)
                .collect();
            if let Err(e) = write_json(out, "history.json", &Value::Array(entries)) {
                notes.push(format!("history.json: {e:#}"));
            }
        }
        Err(e) => notes.push(format!("history.json: {}", e.message())),
    }
    let incidents = collector
        .list_incidents(pb::ListIncidentsRequest {
            node: node.to_string(),
            since: Some(since.into()),
            ..Default::default()
        })
        .await;
    match incidents {
        Ok(r) => {
            let mut full = Vec::new();
            for listed in r.into_inner().incidents {
                let one = collector
                    .get_incident(pb::GetIncidentRequest {
                        id: listed.id.clone(),
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .unwrap_or(listed);
                full.push(json::incident(&one));
            }
            if let Err(e) = write_json(out, "incidents.json", &Value::Array(full)) {
                notes.push(format!("incidents.json: {e:#}"));
            }
        }
        Err(e) => notes.push(format!("incidents.json: {}", e.message())),
    }
    let head = match head {
        Ok(head) => head,
        Err(e) => {
            notes.push(format!("collector audit head: {e}"));
            return json!(null);
        }
    };
    match head {
        None => json!({"checked": false, "why": "the collector holds no audit head for this node"}),
        // Against the copy in the bundle: that is what the evidence claims holds the head.
        Some(head) => match audit::check_head(&out.join("audit.jsonl"), &head, node, true) {
            Ok(_) => json!({"checked": true, "found": true, "seq": head.seq, "hash": head.hash}),
            Err(e) => json!({"checked": true, "found": false, "seq": head.seq, "hash": head.hash,
                             "error": format!("{e:#}")}),
        },
    }
}

/// The audit head the collector holds for `node`, if any; the error as text for the notes.
async fn reported_head(ctl: &mut Invocation, node: &str) -> Result<Option<pb::AuditHead>, String> {
    match ctl.fleet_node(node).await {
        Ok(n) => Ok(n.snapshot.and_then(|s| s.agent).and_then(|a| a.audit_head)),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// `journalctl -u health-agent` since `since`, where journalctl exists, bounded in time and size.
fn journal(out: &Path, since: SystemTime, notes: &mut Vec<String>) {
    let since = humantime::format_rfc3339_seconds(since).to_string();
    // journalctl wants "YYYY-MM-DD HH:MM:SS" (UTC with the suffix).
    let since = format!("{} UTC", since.trim_end_matches('Z').replacen('T', " ", 1));
    let child = Command::new("journalctl")
        .args([
            "-u",
            "health-agent",
            "--no-pager",
            "-o",
            "short-iso-precise",
            "--since",
        ])
        .arg(&since)
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("journal.txt: journalctl not run: {e}"));
            return;
        }
    };
    let mut text = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(MAX_JOURNAL_BYTES).read_to_end(&mut buf);
            buf
        });
        let t0 = std::time::Instant::now();
        while t0.elapsed() < JOURNAL_DEADLINE {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        text = reader.join().unwrap_or_default();
    }
    if let Err(e) = std::fs::write(out.join("journal.txt"), &text) {
        notes.push(format!("journal.txt: {e}"));
    }
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The files of `dir` but the manifest, by name, with their hashes.
fn hashes(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MANIFEST || !entry.file_type()?.is_file() {
            continue;
        }
        out.insert(name, sha256_file(&entry.path())?);
    }
    Ok(out)
}

fn write_manifest(dir: &Path) -> anyhow::Result<usize> {
    let files = hashes(dir)?;
    let mut text = String::new();
    for (name, hash) in &files {
        let _ = writeln!(text, "{hash}  {name}");
    }
    let path = dir.join(MANIFEST);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(files.len())
}

/// `evidence verify DIR`: every file listed has its hash, and nothing was added.
pub(crate) fn verify(ctl: &mut Invocation, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(MANIFEST);
    let manifest = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}: not an evidence directory?", path.display()))?;
    let mut listed = BTreeMap::new();
    for (i, line) in manifest.lines().enumerate() {
        let Some((hash, name)) = line.split_once("  ") else {
            bail!(
                "{}: line {}: expected \"<sha256>  <file>\"",
                path.display(),
                i + 1
            );
        };
        listed.insert(name.to_string(), hash.to_string());
    }
    let found = hashes(dir)?;
    let mut problems = Vec::new();
    for (name, hash) in &listed {
        match found.get(name) {
            None => problems.push(format!("{name}: listed in the manifest but missing")),
            Some(h) if h != hash => {
                problems.push(format!("{name}: changed (sha256 {h}, manifest {hash})"))
            }
            Some(_) => {}
        }
    }
    for name in found.keys().filter(|n| !listed.contains_key(*n)) {
        problems.push(format!("{name}: not in the manifest (added afterwards)"));
    }
    let report = json!({"dir": dir, "files": listed.len(), "intact": problems.is_empty(), "problems": problems});
    if !problems.is_empty() {
        if ctl.cli.json {
            ctl.print_json(&report)?;
        }
        bail!("{}: {}", dir.display(), problems.join("; "));
    }
    ctl.show(&report, Clone::clone, |_| {
        format!(
            "{}: intact ({} files match {MANIFEST})\n",
            dir.display(),
            listed.len()
        )
    })
}
