//! Reading /proc: one pass over every process, keeping those a `[[process]]` rule matches,
//! and reading a single pid again for the kill action. Blocking: callers run these on the
//! blocking pool under a deadline (reading a process's command line can block while that
//! process's memory map is locked).
//!
//! This is what on-call does with `ps aux | grep ngspice` and `ps ... <defunct>`: name,
//! command line, state letter, runtime and resident memory of each match.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use procfs::process::Process;
use procfs::Current;

use crate::config::ProcessRule;

/// Command lines are cut to this many bytes in reports.
const CMDLINE_MAX: usize = 256;

/// One process that matched a rule, as /proc showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// The rule's name.
    pub name: String,
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub cmdline: String,
    /// The kernel's state letter: R, S, D, Z, T, t, X, I.
    pub state: char,
    /// Start time in clock ticks since boot: identifies the process across pid reuse.
    pub start_ticks: u64,
    pub started_at: SystemTime,
    pub runtime: Duration,
    pub rss_bytes: u64,
    /// User plus system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
    /// CPU use since the previous scan (100 = one core); on the first sight of a process,
    /// its average since it started.
    pub cpu_percent: f64,
}

impl ProcessInfo {
    pub fn subject(&self) -> String {
        format!("process:{}:{}", self.name, self.pid)
    }

    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Seconds since boot, from /proc/uptime.
fn uptime() -> std::io::Result<f64> {
    procfs::Uptime::current()
        .map(|u| u.uptime)
        .map_err(|e| std::io::Error::other(format!("/proc/uptime: {e}")))
}

fn joined_cmdline(p: &Process) -> String {
    let mut s = p.cmdline().unwrap_or_default().join(" ");
    if s.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// What one pid is now, seen through the rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// No such process.
    Gone,
    /// A process no rule matches.
    Unwatched {
        comm: String,
        cmdline: String,
    },
    Watched(ProcessInfo),
}

struct Clock {
    ticks_per_second: f64,
    uptime: f64,
    now: SystemTime,
    page_size: u64,
}

impl Clock {
    fn read() -> std::io::Result<Clock> {
        Ok(Clock {
            ticks_per_second: procfs::ticks_per_second().max(1) as f64,
            uptime: uptime()?,
            now: SystemTime::now(),
            page_size: procfs::page_size(),
        })
    }
}

/// Reads one process and checks it against the rules (first match wins).
fn inspect(p: &Process, rules: &[ProcessRule], clock: &Clock) -> Lookup {
    let stat = match p.stat() {
        Ok(s) => s,
        // It exited between the listing and the read.
        Err(_) => return Lookup::Gone,
    };
    let candidates: Vec<&ProcessRule> = rules
        .iter()
        .filter(|r| r.comm_matches(&stat.comm))
        .collect();
    let cmdline = if candidates.iter().any(|r| r.needs_cmdline()) || candidates.is_empty() {
        joined_cmdline(p)
    } else {
        // Only needed for the report; read once the process is known to match.
        String::new()
    };
    let Some(rule) = candidates
        .iter()
        .find(|r| !r.needs_cmdline() || r.matches(&stat.comm, &cmdline))
    else {
        return Lookup::Unwatched {
            comm: stat.comm,
            cmdline,
        };
    };
    let cmdline = if cmdline.is_empty() {
        joined_cmdline(p)
    } else {
        cmdline
    };
    let started = stat.starttime as f64 / clock.ticks_per_second;
    let runtime = Duration::from_secs_f64((clock.uptime - started).max(0.0));
    let cpu_seconds = stat.utime.saturating_add(stat.stime) as f64 / clock.ticks_per_second;
    let cpu_percent = if runtime.as_secs_f64() > 0.0 {
        cpu_seconds / runtime.as_secs_f64() * 100.0
    } else {
        0.0
    };
    Lookup::Watched(ProcessInfo {
        name: rule.name.clone(),
        pid: stat.pid,
        ppid: stat.ppid,
        comm: stat.comm,
        cmdline,
        state: stat.state,
        start_ticks: stat.starttime,
        started_at: clock.now.checked_sub(runtime).unwrap_or(clock.now),
        runtime,
        rss_bytes: stat.rss.saturating_mul(clock.page_size),
        cpu_seconds,
        cpu_percent,
    })
}

/// Every process a rule matches, except the agent itself, sorted by rule then pid.
pub fn scan(rules: &[ProcessRule]) -> std::io::Result<Vec<ProcessInfo>> {
    let own = std::process::id() as i32;
    let clock = Clock::read()?;
    let all = procfs::process::all_processes()
        .map_err(|e| std::io::Error::other(format!("listing /proc: {e}")))?;
    let mut found = Vec::new();
    // A process that exits between the listing and the read is simply not there.
    for p in all.flatten() {
        if p.pid == own {
            continue;
        }
        if let Lookup::Watched(info) = inspect(&p, rules, &clock) {
            found.push(info);
        }
    }
    let order = |name: &str| rules.iter().position(|r| r.name == name);
    found.sort_by_key(|p| (order(&p.name), p.pid));
    Ok(found)
}

/// CPU seconds of each process at the previous scan, keyed by (pid, start ticks) so a reused
/// pid starts afresh.
pub type CpuSeen = HashMap<(i32, u64), (f64, Instant)>;

/// Replaces each process's average since start with its CPU % since the previous scan, where
/// there was one, and remembers this scan for the next (forgetting processes that are gone).
pub fn rate_cpu(seen: &mut CpuSeen, processes: &mut [ProcessInfo], now: Instant) {
    let mut next = CpuSeen::with_capacity(processes.len());
    for p in processes.iter_mut() {
        let key = (p.pid, p.start_ticks);
        if let Some((cpu0, t0)) = seen.get(&key) {
            let wall = now.saturating_duration_since(*t0).as_secs_f64();
            if wall > 0.0 {
                p.cpu_percent = ((p.cpu_seconds - cpu0) / wall * 100.0).max(0.0);
            }
        }
        next.insert(key, (p.cpu_seconds, now));
    }
    *seen = next;
}

/// One pid, now.
pub fn lookup(pid: i32, rules: &[ProcessRule]) -> std::io::Result<Lookup> {
    let clock = Clock::read()?;
    match Process::new(pid) {
        Ok(p) => Ok(inspect(&p, rules, &clock)),
        Err(_) => Ok(Lookup::Gone),
    }
}

/// The state letter and start time of a pid, or `None` if there is no such process: enough to
/// tell whether a signalled process has exited (or its pid was taken by another).
pub fn state_of(pid: i32) -> Option<(char, u64)> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some((stat.state, stat.starttime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_the_rate_between_scans_keyed_by_start_time() {
        let rule = crate::config::ProcessRule {
            name: "me".into(),
            comm: None,
            cmdline: Some(glob::Pattern::new("*").unwrap()),
            max_runtime: None,
            max_memory_bytes: None,
            expect_running: false,
        };
        let Lookup::Watched(me) = lookup(std::process::id() as i32, &[rule]).unwrap() else {
            panic!("this test process is watched by a rule matching everything")
        };
        let t0 = Instant::now();
        let mut seen = CpuSeen::new();
        let mut first = vec![me.clone()];
        rate_cpu(&mut seen, &mut first, t0);
        assert_eq!(first[0].cpu_percent, me.cpu_percent, "first sight: average");
        let mut later = me.clone();
        later.cpu_seconds += 0.5;
        let mut second = vec![later.clone()];
        rate_cpu(&mut seen, &mut second, t0 + Duration::from_secs(2));
        assert!((second[0].cpu_percent - 25.0).abs() < 1e-9);
        // The same pid with another start time is another process.
        later.start_ticks += 1;
        let mut reused = vec![later];
        rate_cpu(&mut seen, &mut reused, t0 + Duration::from_secs(4));
        assert_eq!(reused[0].cpu_percent, me.cpu_percent);
    }
}
