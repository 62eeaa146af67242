//! `agent-ctl evidence --out DIR [--since 24h] [--collector C]` gathers what a post-mortem or
//! an auditor asks for about this node into one directory, and `agent-ctl evidence verify DIR`
//! checks that nothing in it changed since.
//!
//! The directory holds: the audit log (a copy of the file) and its verification (the hash
//! chain, and with `--collector` the head the collector holds, which a rewritten or cut log
//! cannot match); the node's snapshot as `agent-ctl --json status` prints it; the agent config
//! and whether it validates; the agent's journal since `--since` where `journalctl` exists;
//! with `--collector`, the node's history since `--since`; and `MANIFEST.sha256`, one
//! `sha256sum`-style line per file. A part that cannot be had (the agent down, no journal) is
//! a file saying why, so the bundle is always complete about what it lacks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::invocation::Invocation;
use crate::{audit, history, json};

pub const MANIFEST: &str = "MANIFEST.sha256";
/// How long `journalctl` may take, and how much of its output is kept.
const JOURNAL_DEADLINE: Duration = Duration::from_secs(30);
const JOURNAL_MAX_BYTES: usize = 16 << 20;
const HISTORY_LIMIT: u32 = 10_000;

fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Gathers the bundle into `out` (created; must be empty if it exists).
pub(crate) async fn collect(
    ctl: &mut Invocation,
    out: &Path,
    since: Duration,
    audit_file: Option<&Path>,
) -> anyhow::Result<()> {
    prepare(out)?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let audit_path = audit::default_path(audit_file)?;
    match std::fs::read(&audit_path) {
        Ok(bytes) => {
            files.insert("audit.jsonl".into(), bytes);
        }
        Err(e) => {
            files.insert(
                "audit.unavailable.txt".into(),
                format!("{}: {e}\n", audit_path.display()).into_bytes(),
            );
        }
    }
    let verified =
        audit::run(&audit_path, true, None, false).unwrap_or_else(|e| format!("FAILED: {e:#}\n"));
    let mut verification = verified;
    let node = ctl.node().await;
    match &node {
        Ok(n) => {
            files.insert("node.json".into(), pretty(&json::node(n))?);
        }
        Err(e) => {
            files.insert(
                "node.unavailable.txt".into(),
                format!("the agent did not answer: {e:#}\n").into_bytes(),
            );
        }
    }
    if ctl.cli.collector.is_some() {
        let name = node.as_ref().map(|n| n.node.clone()).unwrap_or_default();
        verification.push_str(&collector_head(ctl, &audit_path, &name).await);
        files.insert(
            "history.json".into(),
            history_of(ctl, &name, since).await.unwrap_or_else(|e| {
                format!("{{\"error\": {:?}}}\n", format!("{e:#}")).into_bytes()
            }),
        );
    }
    files.insert("audit-verification.txt".into(), verification.into_bytes());
    files.insert("config.txt".into(), config_text().into_bytes());
    let (name, journal) = journal(since).await;
    files.insert(name, journal);
    write_all(out, &files)?;
    ctl.print(&format!(
        "evidence for {} in {}: {} files and {MANIFEST}; check with agent-ctl evidence verify {}\n",
        node.map(|n| n.node).unwrap_or_else(|_| "this node".into()),
        out.display(),
        files.len(),
        out.display()
    ))
}

fn prepare(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("--out {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "--out {}: expected a new or empty directory, found files in it",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating --out {}", out.display()))
}

fn pretty(v: &Value) -> anyhow::Result<Vec<u8>> {
    let mut s = serde_json::to_vec_pretty(v)?;
    s.push(b'\n');
    Ok(s)
}

/// The check of the log against the head the collector holds for `node`.
async fn collector_head(ctl: &Invocation, path: &Path, node: &str) -> String {
    let head = match ctl.fleet_node(node).await {
        Ok(n) => n.snapshot.and_then(|s| s.agent).and_then(|a| a.audit_head),
        Err(e) => {
            return format!("collector head: not checked, the collector did not answer: {e:#}\n")
        }
    };
    match head {
        None => format!("collector head: the collector holds no audit head for node {node:?}\n"),
        Some(h) => match audit::check_head(path, &h, node, false) {
            Ok(line) => format!("collector head: {line}"),
            Err(e) => format!("collector head: FAILED: {e:#}\n"),
        },
    }
}

async fn history_of(ctl: &Invocation, node: &str, since: Duration) -> anyhow::Result<Vec<u8>> {
    let request = history::request(
        Some(node),
        None,
        Some(since),
        HISTORY_LIMIT,
        SystemTime::now(),
    );
    let mut collector = ctl.collector().await?;
    let r = collector
        .query_history(ctl.req(request))
        .await?
        .into_inner();
    pretty(&Value::Array(
        r.entries.iter().map(json::history_entry).collect(),
    ))
}

/// The agent config as the agent would read it, and whether it validates.
fn config_text() -> String {
    let path = Path::new(health_agent::config::DEFAULT_CONFIG_PATH);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return format!("{}: not read: {e}\n", path.display()),
    };
    let verdict = match health_agent::config::load(path) {
        Ok(_) => "valid".to_string(),
        Err(e) => format!("INVALID: {e}"),
    };
    format!("# {}: {verdict}\n{text}", path.display())
}

/// `journalctl -u health-agent --since -Ns`, bounded in time and size; a note where there is
/// no journal.
async fn journal(since: Duration) -> (String, Vec<u8>) {
    let Some(journalctl) = ["/usr/bin/journalctl", "/bin/journalctl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        return (
            "journal.unavailable.txt".into(),
            b"journalctl not found on this host\n".to_vec(),
        );
    };
    let mut cmd = tokio::process::Command::new(journalctl);
    cmd.args([
        "-u",
        "health-agent",
        "--no-pager",
        "-o",
        "short-iso",
        "--since",
    ])
    .arg(format!("-{}s", since.as_secs()))
    .kill_on_drop(true);
    match tokio::time::timeout(JOURNAL_DEADLINE, cmd.output()).await {
        Ok(Ok(out)) => {
            let mut text = out.stdout;
            text.truncate(JOURNAL_MAX_BYTES);
            if !out.status.success() {
                text.extend_from_slice(b"\n# journalctl: ");
                text.extend_from_slice(&out.stderr);
            }
            ("journal.txt".into(), text)
        }
        Ok(Err(e)) => (
            "journal.unavailable.txt".into(),
            format!("journalctl: {e}\n").into_bytes(),
        ),
        Err(_) => (
            "journal.unavailable.txt".into(),
            format!(
                "journalctl did not finish within {}s\n",
                JOURNAL_DEADLINE.as_secs()
            )
            .into_bytes(),
        ),
    }
}

fn write_all(out: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    let mut manifest = String::new();
    for (name, bytes) in files {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        manifest.push_str(&format!("{}  {name}\n", sha256_hex(bytes)));
    }
    let path = out.join(MANIFEST);
    std::fs::write(&path, manifest).with_context(|| format!("writing {}", path.display()))
}

/// Recomputes every file's SHA-256 against the manifest: an error names the first file that
/// differs, is missing, or is not in the manifest.
pub fn verify(dir: &Path) -> anyhow::Result<String> {
    let manifest_path = dir.join(MANIFEST);
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let mut listed = Vec::new();
    for (i, line) in manifest.lines().enumerate() {
        let Some((hash, name)) = line.split_once("  ") else {
            bail!(
                "{MANIFEST} line {}: expected \"SHA256  FILE\", found {line:?}",
                i + 1
            );
        };
        if name.contains('/') || name == ".." || name == MANIFEST {
            bail!(
                "{MANIFEST} line {}: {name:?} is not a file of the bundle",
                i + 1
            );
        }
        let bytes = std::fs::read(dir.join(name))
            .with_context(|| format!("{name}: listed in {MANIFEST} but not readable"))?;
        if sha256_hex(&bytes) != hash {
            bail!("{name}: its SHA-256 differs from {MANIFEST}: the file changed");
        }
        listed.push(name.to_string());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != MANIFEST && !listed.contains(&name) {
            bail!("{name}: in the directory but not in {MANIFEST}");
        }
    }
    Ok(format!(
        "{}: {} files match {MANIFEST}\n",
        dir.display(),
        listed.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_the_file_that_changed_went_missing_or_was_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("audit.jsonl".to_string(), b"{}\n".to_vec());
        files.insert("node.json".to_string(), b"{\"node\":\"a\"}\n".to_vec());
        write_all(dir.path(), &files).unwrap();
        assert!(verify(dir.path()).unwrap().contains("2 files match"));
        std::fs::write(dir.path().join("node.json"), b"{\"node\":\"b\"}\n").unwrap();
        let e = format!("{:#}", verify(dir.path()).unwrap_err());
        assert!(e.starts_with("node.json: its SHA-256 differs"), "{e}");
        std::fs::write(dir.path().join("node.json"), b"{\"node\":\"a\"}\n").unwrap();
        std::fs::write(dir.path().join("extra.txt"), b"x").unwrap();
        let e = format!("{:#}", verify(dir.path()).unwrap_err());
        assert!(e.starts_with("extra.txt: in the directory"), "{e}");
        std::fs::remove_file(dir.path().join("extra.txt")).unwrap();
        std::fs::remove_file(dir.path().join("audit.jsonl")).unwrap();
        let e = format!("{:#}", verify(dir.path()).unwrap_err());
        assert!(e.starts_with("audit.jsonl: listed"), "{e}");
    }

    #[test]
    fn the_out_directory_must_be_new_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(prepare(&dir.path().join("new")).is_ok());
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        assert!(prepare(dir.path()).is_err());
    }
}
