//! `agent-ctl processes` and `agent-ctl kill-process`: the watched processes as a table (the
//! JSON is in [`crate::json`]), and the kill request built from what the operator typed plus
//! the start time the agent reported for that pid (so a pid reused in between is refused by
//! the agent).

use std::time::Duration;

use health_proto::v1 as pb;

use crate::render::table;

fn runtime(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 20) as f64)
}

/// The conditions about one process: `process:<name>:<pid>`.
fn codes(p: &pb::ProcessStatus, conditions: &[pb::Condition]) -> String {
    crate::render::codes_about(&format!("process:{}:{}", p.name, p.pid), conditions)
}

pub fn processes_table(h: &pb::HostHealth) -> String {
    let rows: Vec<Vec<String>> = h
        .processes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.pid.to_string(),
                p.ppid.to_string(),
                p.state.clone(),
                runtime(p.runtime_seconds),
                mib(p.rss_bytes),
                format!("{:.1}", p.cpu_percent),
                codes(p, &h.conditions),
                p.command_line.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "PID",
            "PPID",
            "STATE",
            "RUNTIME",
            "RSS_MIB",
            "CPU%",
            "CONDITIONS",
            "COMMAND",
        ],
        &rows,
    );
    // Services that must run and do not have no row: say so under the table.
    for c in h
        .conditions
        .iter()
        .filter(|c| c.code() == pb::ConditionCode::ProcessMissing)
    {
        out.push_str(&format!("{} PROCESS_MISSING: {}\n", c.subject, c.message));
    }
    out
}

/// `--signal term|kill` → the proto value.
pub fn signal(s: &str) -> anyhow::Result<pb::ProcessSignal> {
    match s.to_ascii_lowercase().trim_start_matches("sig") {
        "term" | "15" => Ok(pb::ProcessSignal::Term),
        "kill" | "9" => Ok(pb::ProcessSignal::Kill),
        _ => anyhow::bail!("--signal {s:?}: expected term or kill"),
    }
}

/// Builds the request; the start time is the one the agent shows for this pid now, if any.
pub fn kill_request(
    pid: u32,
    signal: pb::ProcessSignal,
    escalate_after: Option<Duration>,
    host: Option<&pb::HostHealth>,
) -> anyhow::Result<pb::KillProcessRequest> {
    let escalate_after_ms = match escalate_after {
        None => 0,
        Some(d) => u32::try_from(d.as_millis())
            .map_err(|_| anyhow::anyhow!("--escalate-after: too long"))?,
    };
    let start_time_ticks = host
        .and_then(|h| h.processes.iter().find(|p| p.pid == pid))
        .map_or(0, |p| p.start_time_ticks);
    Ok(pb::KillProcessRequest {
        pid,
        signal: signal as i32,
        start_time_ticks,
        escalate_after_ms,
        ..Default::default()
    })
}
