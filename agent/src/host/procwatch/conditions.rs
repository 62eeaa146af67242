//! From one scan to conditions: a pure function, so the thresholds are tested without
//! processes. Zombies are reported as such and never as stuck or over memory (they hold
//! neither CPU nor memory; their parent must reap them).

use std::time::SystemTime;

use health_hal::{Condition, ConditionCode, Severity};

use super::scan::ProcessInfo;
use crate::config::ProcessRule;

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

pub fn evaluate(rules: &[ProcessRule], procs: &[ProcessInfo], now: SystemTime) -> Vec<Condition> {
    let mut out = Vec::new();
    for p in procs {
        let Some(rule) = rules.iter().find(|r| r.name == p.name) else {
            continue;
        };
        if p.is_zombie() {
            out.push(Condition::new(
                ConditionCode::ProcessZombie,
                Severity::Warning,
                p.subject(),
                format!(
                    "pid {} ({}) is a zombie: it exited and its parent pid {} has not reaped it",
                    p.pid, p.comm, p.ppid
                ),
                now,
            ));
            continue;
        }
        if let Some(limit) = rule.max_runtime {
            if p.runtime > limit {
                out.push(Condition::new(
                    ConditionCode::ProcessStuck,
                    Severity::Warning,
                    p.subject(),
                    format!(
                        "pid {} ({}) has run {} (state {}), limit {}: {}",
                        p.pid,
                        p.comm,
                        human(p.runtime),
                        p.state,
                        human(limit),
                        p.cmdline
                    ),
                    now,
                ));
            }
        }
        if let Some(limit) = rule.max_memory_bytes {
            if p.rss_bytes > limit {
                out.push(Condition::new(
                    ConditionCode::HostMemoryHigh,
                    Severity::Warning,
                    p.subject(),
                    format!(
                        "pid {} ({}) has {:.2} GiB resident, limit {:.2} GiB",
                        p.pid,
                        p.comm,
                        gib(p.rss_bytes),
                        gib(limit)
                    ),
                    now,
                ));
            }
        }
    }
    for rule in rules.iter().filter(|r| r.expect_running) {
        let running = procs.iter().any(|p| p.name == rule.name && !p.is_zombie());
        if !running {
            out.push(Condition::new(
                ConditionCode::ProcessMissing,
                Severity::Critical,
                format!("process:{}", rule.name),
                format!(
                    "no running process matches {} ({} must be running)",
                    rule.describe(),
                    rule.name
                ),
                now,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule(name: &str) -> ProcessRule {
        ProcessRule {
            name: name.into(),
            comm: Some(name.into()),
            cmdline: None,
            max_runtime: Some(Duration::from_secs(120)),
            max_memory_bytes: Some(4 << 30),
            expect_running: false,
        }
    }

    fn proc_(name: &str, pid: i32, state: char, runtime_s: u64, rss: u64) -> ProcessInfo {
        ProcessInfo {
            name: name.into(),
            pid,
            ppid: 1,
            comm: name.into(),
            cmdline: format!("{name} -b deck.cir"),
            state,
            start_ticks: 100,
            started_at: SystemTime::UNIX_EPOCH,
            runtime: Duration::from_secs(runtime_s),
            rss_bytes: rss,
            cpu_seconds: 0.0,
            cpu_percent: 0.0,
        }
    }

    #[test]
    fn limits_zombies_and_missing_services_become_conditions() {
        let mut solver = rule("solver");
        solver.expect_running = true;
        let rules = [rule("ngspice"), solver];
        let procs = [
            proc_("ngspice", 10, 'R', 30, 1 << 20),
            proc_("ngspice", 11, 'R', 600, 1 << 20),
            proc_("ngspice", 12, 'Z', 900, 0),
            proc_("ngspice", 13, 'S', 5, 5 << 30),
        ];
        let c = evaluate(&rules, &procs, SystemTime::now());
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.code, c.severity, c.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    ConditionCode::ProcessStuck,
                    Severity::Warning,
                    "process:ngspice:11"
                ),
                (
                    ConditionCode::ProcessZombie,
                    Severity::Warning,
                    "process:ngspice:12"
                ),
                (
                    ConditionCode::HostMemoryHigh,
                    Severity::Warning,
                    "process:ngspice:13"
                ),
                (
                    ConditionCode::ProcessMissing,
                    Severity::Critical,
                    "process:solver"
                ),
            ]
        );
        assert!(c[0].message.contains("10m") && c[0].message.contains("limit 2m"));
        assert!(c[1].message.contains("parent pid 1"), "{}", c[1].message);
        assert!(c[2].message.contains("5.00 GiB"), "{}", c[2].message);

        // A zombie does not count as the service running.
        let c = evaluate(&rules, &[proc_("solver", 20, 'Z', 1, 0)], SystemTime::now());
        assert!(c.iter().any(|c| c.code == ConditionCode::ProcessMissing));
        let c = evaluate(&rules, &[proc_("solver", 20, 'S', 1, 0)], SystemTime::now());
        assert!(c.is_empty(), "{c:?}");
    }
}
