//! Following a systemd unit's journal: `journalctl -f -o json -n 0 --all -u <unit>` as a
//! child process, one JSON object per line, of which the `MESSAGE` field is the log line.
//!
//! journalctl writes `MESSAGE` as a string, or as an array of bytes when it is not valid
//! UTF-8; both are handled (`--all` stops it from replacing long fields with null). Output is
//! cut into lines by the same bounded [`LineCutter`] as files, allowing for JSON's escaping, so
//! an endless message cannot grow memory; a JSON line cut there no longer parses and is
//! counted as skipped. If journalctl exits (journald restarted, the binary missing) it is
//! started again after a backoff (1 s doubling to 1 min); the child is killed when the agent
//! stops (`kill_on_drop`, and explicitly on cancel).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::lines::LineCutter;
use super::tally::RuleTally;
use crate::config::LogRule;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The `MESSAGE` of one journal entry, cut to `max` bytes; `None` when the line is not an
/// entry with a message.
pub fn message(json_line: &[u8], max: usize) -> Option<Vec<u8>> {
    let entry: serde_json::Value = serde_json::from_slice(json_line).ok()?;
    let mut bytes = match entry.get("MESSAGE")? {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()?,
        _ => return None,
    };
    bytes.truncate(max);
    Some(bytes)
}

/// Runs until `cancel`, restarting journalctl when it exits.
pub async fn follow(
    rule: Arc<LogRule>,
    unit: String,
    tally: Arc<Mutex<RuleTally>>,
    cancel: CancellationToken,
) {
    tally.lock().unwrap_or_else(|e| e.into_inner()).sources = vec![unit.clone()];
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match run_once(&rule, &unit, &tally, &cancel).await {
            Ok(()) if cancel.is_cancelled() => return,
            Ok(()) => tracing::warn!(rule = %rule.name, %unit, "journalctl exited; restarting"),
            Err(e) => {
                tracing::warn!(rule = %rule.name, %unit, error = %e, "journalctl failed; restarting")
            }
        }
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn run_once(
    rule: &LogRule,
    unit: &str,
    tally: &Mutex<RuleTally>,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new("journalctl")
        .args([
            "-f",
            "-o",
            "json",
            "-n",
            "0",
            "--all",
            "--no-pager",
            "-q",
            "-u",
            unit,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("journalctl has no stdout"))?;
    // A byte can take 4 characters in a JSON array, plus the entry's other fields.
    let mut cutter = LineCutter::new(rule.max_line_bytes * 4 + (16 << 10));
    let mut buf = vec![0u8; 64 << 10];
    let source = format!("journal of {unit}");
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = child.kill().await;
                return Ok(());
            }
            r = out.read(&mut buf) => r?,
        };
        if n == 0 {
            let _ = child.wait().await;
            return Ok(());
        }
        let mut messages = Vec::new();
        let mut unparsed = 0u64;
        let skipped = cutter.feed(buf.get(..n).unwrap_or_default(), &mut |l| match message(
            l,
            rule.max_line_bytes,
        ) {
            Some(m) => messages.push(m),
            None => unparsed += l.len() as u64,
        });
        let now = SystemTime::now();
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        t.bytes_skipped += skipped + unparsed;
        for m in &messages {
            t.line(rule, m, &source, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_as_text_or_bytes() {
        assert_eq!(
            message(
                br#"{"MESSAGE":"Traceback (most recent call last):","_PID":"1"}"#,
                100
            ),
            Some(b"Traceback (most recent call last):".to_vec())
        );
        assert_eq!(
            message(br#"{"MESSAGE":[101,114,255,10]}"#, 100),
            Some(vec![101, 114, 255, 10])
        );
        assert_eq!(
            message(br#"{"MESSAGE":"abcdef"}"#, 3),
            Some(b"abc".to_vec())
        );
        assert_eq!(message(br#"{"MESSAGE":null}"#, 100), None);
        assert_eq!(message(br#"{"MESSAGE":[300]}"#, 100), None);
        assert_eq!(message(b"{\"MESSAGE\":\"cut", 100), None);
    }
}
