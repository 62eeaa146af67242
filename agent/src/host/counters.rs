//! The host's kernel counters: OOM kills (`vmstat` `oom_kill`) and I/O wait (`stat`'s `cpu`
//! line), read from `[host] proc_root` each host interval inside the core measurement job, and
//! the victim of a new OOM kill from the kernel log when it is readable.
//!
//! Both counters only mean something as a difference between two reads, so [`Counters`] keeps
//! the previous read. An OOM kill is an event: the host monitor keeps HOST_OOM_KILL up for
//! `[host] oom_hold` after the last one (see [`OomKills`]), so a kill between two reports is
//! still seen by whoever looks within that time.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Kills seen recently, for HOST_OOM_KILL.
#[derive(Debug, Clone, PartialEq)]
pub struct OomKills {
    /// When the last rise of the counter was seen.
    pub last_at: SystemTime,
    /// Kills since the condition was last clear.
    pub kills: u64,
    /// What the kernel log says was killed ("pid 123 (ngspice)"), or why it is not known.
    pub victims: String,
}

/// What one read of the counters found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterRead {
    pub oom_kills_total: u64,
    /// Kills since the previous read (0 on the first read).
    pub oom_kills_new: u64,
    /// I/O wait share since the previous read; `None` on the first read.
    pub iowait_ratio: Option<f64>,
}

/// The previous read, for differences.
#[derive(Debug, Default)]
pub struct Counters {
    oom_kill: Option<u64>,
    /// (iowait ticks, all ticks) of the aggregate `cpu` line.
    cpu: Option<(u64, u64)>,
}

/// `oom_kill N` from a vmstat file.
fn parse_vmstat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// (iowait, total) ticks of the aggregate `cpu` line: user nice system idle iowait irq softirq
/// steal (guest time is already in user and nice, so it is not added again).
fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    Some((v[4], v.iter().sum()))
}

impl Counters {
    /// Reads both counters. A file that is missing or unreadable is an error naming it; the
    /// kernel has `oom_kill` in vmstat since 4.13, so its absence is reported, not guessed.
    pub fn read(&mut self, proc_root: &Path) -> Result<CounterRead, String> {
        let vmstat = proc_root.join("vmstat");
        let text =
            std::fs::read_to_string(&vmstat).map_err(|e| format!("{}: {e}", vmstat.display()))?;
        let total = parse_vmstat(&text)
            .ok_or_else(|| format!("{}: expected an `oom_kill N` line", vmstat.display()))?;
        let stat = proc_root.join("stat");
        let text =
            std::fs::read_to_string(&stat).map_err(|e| format!("{}: {e}", stat.display()))?;
        let cpu = parse_stat(&text).ok_or_else(|| {
            format!(
                "{}: expected a `cpu` line of at least 5 counters",
                stat.display()
            )
        })?;
        let iowait_ratio = self.cpu.and_then(|(io0, all0)| {
            let all = cpu.1.checked_sub(all0).filter(|d| *d > 0)?;
            Some((cpu.0.saturating_sub(io0) as f64 / all as f64).clamp(0.0, 1.0))
        });
        // A counter that went down (a fixture rewritten, a new boot) starts over, not a rise.
        let oom_kills_new = self.oom_kill.map_or(0, |prev| total.saturating_sub(prev));
        self.oom_kill = Some(total);
        self.cpu = Some(cpu);
        Ok(CounterRead {
            oom_kills_total: total,
            oom_kills_new,
            iowait_ratio,
        })
    }
}

/// Lines of the kernel log read for victims, at most.
const KERNEL_LOG_LINES: &str = "200";
/// Bytes of journalctl output read, at most.
const KERNEL_LOG_BYTES: u64 = 256 << 10;

/// "pid 123 (ngspice)" for each `Killed process 123 (ngspice)` line.
fn victims_in(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("Killed process ")? + "Killed process ".len()..];
            let (pid, rest) = rest.split_once(' ')?;
            let comm = rest.strip_prefix('(')?.split(')').next()?;
            pid.parse::<u32>().ok()?;
            Some(format!("pid {pid} ({comm})"))
        })
        .collect()
}

/// The victims of kills since `since`, from the kernel log through journalctl, bounded in time
/// (`limit`) and size; when it cannot be read the text says why, since the kill itself is
/// known from the counter either way.
pub fn victims_since(since: SystemTime, limit: Duration) -> String {
    let secs = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let child = Command::new("journalctl")
        .args([
            "-k",
            "-o",
            "cat",
            "--no-pager",
            "-q",
            "-n",
            KERNEL_LOG_LINES,
        ])
        .arg(format!("--since=@{secs}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("victim unknown (kernel log not readable: journalctl: {e})"),
    };
    let Some(stdout) = child.stdout.take() else {
        return "victim unknown (kernel log not readable)".to_string();
    };
    // Read on a thread so the deadline holds even if journalctl stalls mid-output.
    let reader = std::thread::spawn(move || {
        // Bytes, then lossy: one invalid byte (or a character cut at the cap) must not lose
        // the whole excerpt.
        let mut bytes = Vec::new();
        let _ = stdout.take(KERNEL_LOG_BYTES).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let start = std::time::Instant::now();
    let exited = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        return "victim unknown (kernel log: journalctl did not answer in time)".to_string();
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return "victim unknown (kernel log not readable by the agent)".to_string();
    }
    let found = victims_in(&text);
    if found.is_empty() {
        "victim not found in the kernel log".to_string()
    } else {
        format!("killed: {}", found.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, oom: u64, iowait: u64, idle: u64) {
        std::fs::write(
            dir.join("vmstat"),
            format!("nr_free_pages 1\noom_kill {oom}\npgfault 3\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("cpu  100 0 100 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"),
        )
        .unwrap();
    }

    #[test]
    fn differences_between_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counters::default();
        write(dir.path(), 2, 0, 800);
        let first = c.read(dir.path()).unwrap();
        assert_eq!((first.oom_kills_total, first.oom_kills_new), (2, 0));
        assert_eq!(first.iowait_ratio, None, "one read is no interval");
        // 100 more ticks: 40 iowait, 60 idle.
        write(dir.path(), 5, 40, 860);
        let second = c.read(dir.path()).unwrap();
        assert_eq!((second.oom_kills_total, second.oom_kills_new), (5, 3));
        assert_eq!(second.iowait_ratio, Some(0.4));
        write(dir.path(), 1, 40, 960);
        assert_eq!(
            c.read(dir.path()).unwrap().oom_kills_new,
            0,
            "a counter going down is not a kill"
        );
    }

    #[test]
    fn missing_or_garbled_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counters::default();
        let e = c.read(dir.path()).unwrap_err();
        assert!(e.contains("vmstat"), "{e}");
        std::fs::write(dir.path().join("vmstat"), "nr_free_pages 1\n").unwrap();
        let e = c.read(dir.path()).unwrap_err();
        assert!(e.contains("oom_kill"), "{e}");
        std::fs::write(dir.path().join("vmstat"), "oom_kill 0\n").unwrap();
        std::fs::write(dir.path().join("stat"), "cpu  a b\n").unwrap();
        let e = c.read(dir.path()).unwrap_err();
        assert!(e.contains("stat") && e.contains("cpu"), "{e}");
    }

    #[test]
    fn victims_from_kernel_lines() {
        let log = "Out of memory: Killed process 4242 (ngspice) total-vm:123kB, anon-rss:9kB\n\
                   oom_reaper: reaped process 4242 (ngspice)\n\
                   Memory cgroup out of memory: Killed process 77 (python3) total-vm:1kB\n";
        assert_eq!(
            victims_in(log),
            vec!["pid 4242 (ngspice)".to_string(), "pid 77 (python3)".into()]
        );
        assert!(victims_in("Killed process x (y)").is_empty());
    }

    #[test]
    fn this_host_has_both_counters() {
        let mut c = Counters::default();
        let r = c.read(Path::new("/proc")).unwrap();
        assert_eq!(r.oom_kills_new, 0);
    }
}
