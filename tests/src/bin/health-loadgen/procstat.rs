//! CPU time and resident memory of a process, read from `/proc/<pid>`.
//!
//! CPU comes from `stat` (user + system time of all threads, in USER_HZ ticks, which the kernel
//! fixes at 100 per second in its user-space ABI; `schedstat` would be nanoseconds but only of
//! the main thread); memory from `status` (`VmRSS` now, `VmHWM` the peak since the start).

use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Clock ticks per second of `/proc/<pid>/stat` times.
const USER_HZ: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub at: Instant,
    pub cpu: Duration,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// `pid` is `None` for this process.
pub fn read(pid: Option<u32>) -> anyhow::Result<Reading> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |pid| format!("/proc/{pid}"));
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("{dir}/stat: cannot read (is the process running?)"))?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{dir}/stat: expected utime and stime, found {stat:?}"))
    };
    // utime and stime are fields 14 and 15; the first field after ')' is field 3.
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("{dir}/status: cannot read"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .with_context(|| format!("{dir}/status: no {key} line in kB"))
    };
    Ok(Reading {
        at,
        cpu: Duration::from_millis(cpu_ticks * (1000 / USER_HZ)),
        rss_bytes: kib("VmRSS:")? * 1024,
        peak_rss_bytes: kib("VmHWM:")? * 1024,
    })
}

/// CPU use between two readings, in percent of one core.
pub fn cpu_percent(from: &Reading, to: &Reading) -> f64 {
    let wall = to.at.saturating_duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    to.cpu.saturating_sub(from.cpu).as_secs_f64() / wall * 100.0
}

/// Busy and total CPU time of the whole machine, from the first line of `/proc/stat`, in ticks.
/// The benchmark shares its cores with whatever else runs; this shows how much that was.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    busy: u64,
    total: u64,
}

pub fn machine() -> anyhow::Result<Machine> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat: cannot read")?;
    let values: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(values.len() >= 5, "/proc/stat: expected a 'cpu' line first");
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are the 4th and 5th values.
    let idle = values[3] + values[4];
    Ok(Machine {
        busy: total - idle,
        total,
    })
}

/// Machine CPU use between two readings, in percent of one core, and the number of cores.
pub fn machine_percent(from: &Machine, to: &Machine) -> f64 {
    let total = to.total.saturating_sub(from.total);
    if total == 0 {
        return 0.0;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    to.busy.saturating_sub(from.busy) as f64 / total as f64 * cores * 100.0
}

/// The 1-minute load average at the end of the run.
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
