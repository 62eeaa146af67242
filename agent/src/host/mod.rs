//! Host health: CPU, memory, disks and load, read with sysinfo on a blocking thread under a
//! deadline, and turned into conditions by the thresholds in `[host]`.
//!
//! Reading disks can block (a dead NFS mount). Measurements therefore run on the blocking
//! pool in two independent jobs (CPU/memory/load, and disks), each under a deadline. A job that
//! misses it makes the host at least UNKNOWN and is not started again until it returns, so a
//! stuck mount costs one thread, not one per interval, and memory keeps being watched.
//!
//! The kernel's OOM-kill and I/O-wait counters (`counters`) are read in the core job from
//! `[host] proc_root`. The `[[log]]` follower (`logs`) and the process watchdog
//! (`procwatch`) run as their own tasks; the node merges their reports into this status.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use health_hal::{rollup, Condition, ConditionCode, ConditionTracker, HealthState, Severity};
use sysinfo::{Disks, System};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::HostConfig;
pub(crate) use job::BoundedJob;

pub mod counters;
pub(crate) mod job;
pub mod logs;
pub mod procwatch;
pub mod services;

#[derive(Debug, Clone, PartialEq)]
pub struct DiskUsage {
    pub mount_point: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct HostStatus {
    pub state: HealthState,
    pub cpu_utilization_ratio: f64,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub load: [f64; 3],
    pub disks: Vec<DiskUsage>,
    pub conditions: Vec<Condition>,
    pub observed_at: Option<SystemTime>,
    /// Processes the `[[process]]` rules match (filled in by the node from the watchdog).
    pub processes: Vec<crate::host::procwatch::ProcessInfo>,
    /// The `[[service]]` rules as last checked (filled in by the node from the checker).
    pub services: Vec<crate::host::services::ServiceStatus>,
    /// I/O wait share of CPU time over the last interval (0 until two reads).
    pub iowait_ratio: f64,
    /// `oom_kill` from vmstat: kills since the host booted.
    pub oom_kills_total: u64,
    /// Kills within `[host] oom_hold`, for HOST_OOM_KILL.
    pub oom: Option<counters::OomKills>,
    /// The `[[log]]` rules (filled in by the node from the log follower).
    pub logs: Vec<logs::LogRuleStatus>,
}

/// File systems that hold no data an operator can run out of.
const PSEUDO_FS: &[&str] = &[
    "tmpfs", "devtmpfs", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts", "nsfs",
];

/// CPU, memory and load: procfs reads that do not block on storage.
fn measure_core(sys: &mut System) -> HostStatus {
    sys.refresh_cpu_usage();
    sys.refresh_memory();
    let load = System::load_average();
    HostStatus {
        state: HealthState::Ok,
        cpu_utilization_ratio: f64::from(sys.global_cpu_usage()) / 100.0,
        cpu_count: sys.cpus().len() as u32,
        memory_total_bytes: sys.total_memory(),
        memory_available_bytes: sys.available_memory(),
        load: [load.one, load.five, load.fifteen],
        disks: Vec::new(),
        conditions: Vec::new(),
        observed_at: Some(SystemTime::now()),
        ..Default::default()
    }
}

/// Usage of every real file system: statfs per mount, which can block on a dead network mount.
fn measure_disks() -> Vec<DiskUsage> {
    let disks = Disks::new_with_refreshed_list();
    let mut usage: Vec<DiskUsage> = disks
        .list()
        .iter()
        .filter(|d| {
            !PSEUDO_FS.contains(&d.file_system().to_string_lossy().as_ref()) && d.total_space() > 0
        })
        .map(|d| DiskUsage {
            mount_point: d.mount_point().display().to_string(),
            total_bytes: d.total_space(),
            available_bytes: d.available_space(),
        })
        .collect();
    usage.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    usage.dedup_by(|a, b| a.mount_point == b.mount_point);
    usage
}

fn grade(used: f64, warn: f64, crit: f64) -> Option<Severity> {
    if used >= crit {
        Some(Severity::Critical)
    } else if used >= warn {
        Some(Severity::Warning)
    } else {
        None
    }
}

/// Conditions the thresholds imply for one measurement.
pub fn evaluate(h: &HostStatus, cfg: &HostConfig, now: SystemTime) -> Vec<Condition> {
    let mut out = Vec::new();
    const GIB: f64 = (1u64 << 30) as f64;
    if h.memory_total_bytes > 0 {
        let used = 1.0 - h.memory_available_bytes as f64 / h.memory_total_bytes as f64;
        if let Some(sev) = grade(used, cfg.memory_warning_ratio, cfg.memory_critical_ratio) {
            out.push(Condition::new(
                ConditionCode::HostMemoryHigh,
                sev,
                "host",
                format!(
                    "memory {:.1} % used ({:.1} of {:.1} GiB), threshold {:.0} %",
                    used * 100.0,
                    (h.memory_total_bytes - h.memory_available_bytes) as f64 / GIB,
                    h.memory_total_bytes as f64 / GIB,
                    if sev == Severity::Critical {
                        cfg.memory_critical_ratio
                    } else {
                        cfg.memory_warning_ratio
                    } * 100.0
                ),
                now,
            ));
        }
    }
    for d in &h.disks {
        let used = 1.0 - d.available_bytes as f64 / d.total_bytes as f64;
        if let Some(sev) = grade(used, cfg.disk_warning_ratio, cfg.disk_critical_ratio) {
            out.push(Condition::new(
                ConditionCode::DiskFull,
                sev,
                d.mount_point.clone(),
                format!(
                    "{} {:.1} % used, {:.2} GiB free",
                    d.mount_point,
                    used * 100.0,
                    d.available_bytes as f64 / GIB
                ),
                now,
            ));
        }
    }
    if h.cpu_count > 0 {
        let per_cpu = h.load[0] / f64::from(h.cpu_count);
        if per_cpu >= cfg.load_warning_per_cpu {
            out.push(Condition::new(
                ConditionCode::HostLoadHigh,
                Severity::Warning,
                "host",
                format!(
                    "load {:.2} on {} CPUs ({per_cpu:.2} per CPU, threshold {:.2})",
                    h.load[0], h.cpu_count, cfg.load_warning_per_cpu
                ),
                now,
            ));
        }
    }
    if h.iowait_ratio >= cfg.iowait_warning_ratio {
        out.push(Condition::new(
            ConditionCode::HostIowaitHigh,
            Severity::Warning,
            "host",
            format!(
                "CPUs waited for I/O {:.0} % of the time over the last interval, threshold {:.0} %",
                h.iowait_ratio * 100.0,
                cfg.iowait_warning_ratio * 100.0
            ),
            now,
        ));
    }
    if let Some(oom) = h.oom.as_ref().filter(|o| {
        now.duration_since(o.last_at)
            .map_or(true, |age| age < cfg.oom_hold)
    }) {
        // Warning, not critical: the kernel has already recovered the memory; what the kill
        // broke (a solver run, a service) raises its own conditions, and memory pressure that
        // persists is HOST_MEMORY_HIGH.
        out.push(Condition::new(
            ConditionCode::HostOomKill,
            Severity::Warning,
            "host",
            format!(
                "{} process(es) killed by the kernel's OOM killer (oom_kill now {}); {}; shown for {} after the last kill",
                oom.kills,
                h.oom_kills_total,
                oom.victims,
                humantime::format_duration(cfg.oom_hold)
            ),
            now,
        ));
    }
    out
}

/// What one core job measured: the sysinfo figures and the kernel counters.
struct CoreRead {
    status: HostStatus,
    counters: Result<counters::CounterRead, String>,
    /// Victims of new kills, when there were any.
    victims: Option<String>,
}

/// The core job: sysinfo, then the counters; on a new OOM kill, the kernel log.
fn measure_core_and_counters(
    state: &mut (System, counters::Counters),
    cfg: &HostConfig,
) -> CoreRead {
    let status = measure_core(&mut state.0);
    let counters = state.1.read(&cfg.proc_root);
    let victims = match &counters {
        Ok(c) if c.oom_kills_new > 0 => {
            let since = SystemTime::now()
                .checked_sub(cfg.interval + std::time::Duration::from_secs(5))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Some(counters::victims_since(since, cfg.deadline / 2))
        }
        _ => None,
    };
    CoreRead {
        status,
        counters,
        victims,
    }
}

/// Adds a read of the counters to the status, and new kills to the ones held.
fn apply_counters(
    status: &mut HostStatus,
    read: Result<counters::CounterRead, String>,
    victims: Option<String>,
    held: &mut Option<counters::OomKills>,
    cfg: &HostConfig,
    now: SystemTime,
) {
    let expired = held.as_ref().is_some_and(|o| {
        now.duration_since(o.last_at)
            .is_ok_and(|age| age >= cfg.oom_hold)
    });
    if expired {
        *held = None;
    }
    match read {
        Ok(c) => {
            status.oom_kills_total = c.oom_kills_total;
            status.iowait_ratio = c.iowait_ratio.unwrap_or(0.0);
            if c.oom_kills_new > 0 {
                let victims = victims.unwrap_or_else(|| "victim unknown".to_string());
                *held = Some(match held.take() {
                    Some(o) => counters::OomKills {
                        last_at: now,
                        kills: o.kills + c.oom_kills_new,
                        victims: if victims.starts_with("killed:") {
                            victims
                        } else {
                            o.victims
                        },
                    },
                    None => counters::OomKills {
                        last_at: now,
                        kills: c.oom_kills_new,
                        victims,
                    },
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "host counters unreadable"),
    }
    status.oom = held.clone();
}

/// Runs the host monitor until `cancel`; the latest status is on the returned channel.
pub fn spawn(
    cfg: HostConfig,
    cancel: CancellationToken,
) -> (watch::Receiver<Arc<HostStatus>>, JoinHandle<()>) {
    let initial = HostStatus {
        state: HealthState::Unknown,
        ..Default::default()
    };
    let (tx, rx) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(async move {
        let sys = Arc::new(Mutex::new((System::new(), counters::Counters::default())));
        let mut held_oom: Option<counters::OomKills> = None;
        let mut tracker = ConditionTracker::default();
        // Two independent jobs, so a hung mount cannot stop memory and CPU monitoring.
        let mut core_job = BoundedJob::new();
        let mut disk_job = BoundedJob::new();
        let mut last_disks: Vec<DiskUsage> = Vec::new();
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let core = core_job
                .poll(cfg.deadline, || {
                    let sys = sys.clone();
                    let cfg = cfg.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut guard = sys.lock().unwrap_or_else(|e| e.into_inner());
                        measure_core_and_counters(&mut guard, &cfg)
                    })
                })
                .await;
            let disks = disk_job
                .poll(cfg.deadline, || tokio::task::spawn_blocking(measure_disks))
                .await;
            let fresh = core.is_some() && disks.is_some();
            if !fresh {
                tracing::warn!(
                    deadline_s = cfg.deadline.as_secs_f64(),
                    core = core.is_some(),
                    disks = disks.is_some(),
                    "host measurement missed its deadline"
                );
            }
            if let Some(d) = disks {
                last_disks = d;
            }
            let now = SystemTime::now();
            let mut status = match core {
                Some(read) => {
                    let mut status = read.status;
                    apply_counters(
                        &mut status,
                        read.counters,
                        read.victims,
                        &mut held_oom,
                        &cfg,
                        now,
                    );
                    status
                }
                None => {
                    let mut previous = (**tx.borrow()).clone();
                    previous.conditions.clear();
                    previous
                }
            };
            status.disks = last_disks.clone();
            status.conditions = tracker.track(evaluate(&status, &cfg, now));
            // Part of the picture is old: never better than UNKNOWN, never hiding a fault.
            status.state = if fresh {
                rollup(&status.conditions)
            } else {
                rollup(&status.conditions).max(HealthState::Unknown)
            };
            tx.send_replace(Arc::new(status));
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> HostConfig {
        HostConfig {
            interval: Duration::from_secs(1),
            deadline: Duration::from_secs(1),
            memory_warning_ratio: 0.9,
            memory_critical_ratio: 0.97,
            disk_warning_ratio: 0.9,
            disk_critical_ratio: 0.97,
            load_warning_per_cpu: 2.0,
            proc_root: "/proc".into(),
            iowait_warning_ratio: 0.3,
            oom_hold: Duration::from_secs(600),
        }
    }

    #[test]
    fn thresholds_become_conditions_with_numbers() {
        let h = HostStatus {
            cpu_count: 2,
            memory_total_bytes: 16 << 30,
            memory_available_bytes: 1 << 30,
            load: [5.0, 1.0, 1.0],
            disks: vec![
                DiskUsage {
                    mount_point: "/".into(),
                    total_bytes: 100 << 30,
                    available_bytes: 2 << 30,
                },
                DiskUsage {
                    mount_point: "/data".into(),
                    total_bytes: 100 << 30,
                    available_bytes: 50 << 30,
                },
            ],
            ..Default::default()
        };
        let c = evaluate(&h, &cfg(), SystemTime::now());
        let mem = c
            .iter()
            .find(|c| c.code == ConditionCode::HostMemoryHigh)
            .expect("memory");
        assert_eq!(
            mem.severity,
            Severity::Warning,
            "93.75 % used is above 90 but below 97"
        );
        assert!(mem.message.contains("93.8 %"), "{}", mem.message);
        let disk: Vec<_> = c
            .iter()
            .filter(|c| c.code == ConditionCode::DiskFull)
            .collect();
        assert_eq!(disk.len(), 1);
        assert_eq!(
            (disk[0].subject.as_str(), disk[0].severity),
            ("/", Severity::Critical)
        );
        assert!(c.iter().any(|c| c.code == ConditionCode::HostLoadHigh));
    }

    #[test]
    fn iowait_and_oom_kills_become_conditions_and_a_kill_is_held() {
        let cfg = cfg();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut held = None;
        let mut h = HostStatus::default();
        let read = |new, iowait| {
            Ok(counters::CounterRead {
                oom_kills_total: 7,
                oom_kills_new: new,
                iowait_ratio: Some(iowait),
            })
        };
        apply_counters(
            &mut h,
            read(2, 0.5),
            Some("killed: pid 9 (ngspice)".into()),
            &mut held,
            &cfg,
            t0,
        );
        let c = evaluate(&h, &cfg, t0);
        let oom = c
            .iter()
            .find(|c| c.code == ConditionCode::HostOomKill)
            .expect("oom");
        assert!(
            oom.message.contains("2 process(es)") && oom.message.contains("pid 9 (ngspice)"),
            "{}",
            oom.message
        );
        assert!(c.iter().any(|c| c.code == ConditionCode::HostIowaitHigh));
        // No new kill, low iowait: the kill stays for oom_hold, then clears.
        let later = t0 + Duration::from_secs(599);
        apply_counters(&mut h, read(0, 0.1), None, &mut held, &cfg, later);
        let c = evaluate(&h, &cfg, later);
        assert!(c.iter().any(|c| c.code == ConditionCode::HostOomKill));
        assert!(!c.iter().any(|c| c.code == ConditionCode::HostIowaitHigh));
        let gone = t0 + Duration::from_secs(600);
        apply_counters(&mut h, read(0, 0.1), None, &mut held, &cfg, gone);
        assert!(evaluate(&h, &cfg, gone).is_empty());
        assert!(held.is_none());
    }

    #[test]
    fn measuring_this_host_gives_plausible_numbers() {
        let mut sys = System::new();
        let h = measure_core(&mut sys);
        assert!(measure_disks()
            .iter()
            .all(|d| d.available_bytes <= d.total_bytes));
        assert!(h.cpu_count >= 1);
        assert!(h.memory_total_bytes > 0 && h.memory_available_bytes <= h.memory_total_bytes);
        assert!(h.load.iter().all(|l| l.is_finite() && *l >= 0.0));
    }
}
