//! `[[process]]` rules: which processes the watchdog (`host::procwatch`) follows and what
//! limits they have, parsed here with the rest of the configuration.
//!
//! A rule matches a process by its kernel name (`comm`, exact) and/or a glob over its command
//! line (arguments joined by spaces); with both, both must match. The same matcher decides
//! what the scan reports and what `KillProcess` may signal, so the agent can only kill what it
//! is configured to watch.
//!
//! Errors are [`FieldError`]s naming `process[i].<key>`; the config loader adds the file.

use std::time::Duration;

use serde::Deserialize;

use health_daemon::FieldError;

/// Longest `comm` the kernel keeps (TASK_COMM_LEN is 16 with the NUL).
const COMM_MAX: usize = 15;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    name: String,
    comm: Option<String>,
    cmdline: Option<String>,
    max_runtime: Option<String>,
    max_memory_bytes: Option<u64>,
    #[serde(default)]
    expect_running: bool,
}

/// A validated `[[process]]` rule.
#[derive(Debug, Clone)]
pub struct ProcessRule {
    /// The label in conditions and tables (`process:<name>:<pid>`).
    pub name: String,
    pub comm: Option<String>,
    pub cmdline: Option<glob::Pattern>,
    /// A matching process running longer than this is PROCESS_STUCK.
    pub max_runtime: Option<Duration>,
    /// A matching process with more resident memory than this is HOST_MEMORY_HIGH.
    pub max_memory_bytes: Option<u64>,
    /// No matching (live) process is PROCESS_MISSING, critical: a service that must be up.
    pub expect_running: bool,
}

impl ProcessRule {
    /// Whether a process with this `comm` matches the name part of the rule (cheap: lets the
    /// scan skip reading the command line of most processes).
    pub fn comm_matches(&self, comm: &str) -> bool {
        self.comm.as_deref().is_none_or(|c| c == comm)
    }

    /// Whether a process matches the rule. `cmdline` is the arguments joined by spaces.
    pub fn matches(&self, comm: &str, cmdline: &str) -> bool {
        self.comm_matches(comm) && self.cmdline.as_ref().is_none_or(|p| p.matches(cmdline))
    }

    pub fn needs_cmdline(&self) -> bool {
        self.cmdline.is_some()
    }

    /// What the rule matches, for messages.
    pub fn describe(&self) -> String {
        match (&self.comm, &self.cmdline) {
            (Some(c), Some(p)) => format!("comm {c:?} and cmdline {:?}", p.as_str()),
            (Some(c), None) => format!("comm {c:?}"),
            (None, Some(p)) => format!("cmdline {:?}", p.as_str()),
            (None, None) => "nothing".to_string(),
        }
    }
}

/// Validates the `[[process]]` tables; errors name `process[i].<key>`.
pub fn validate(raw: Vec<RawProcess>) -> Result<Vec<ProcessRule>, FieldError> {
    let fail = |key: String, message: String| FieldError { key, message };
    let mut rules: Vec<ProcessRule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("process[{i}].{k}");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !name_ok {
            return Err(fail(
                key("name"),
                format!(
                    "expected 1-64 characters of [A-Za-z0-9._-], found {:?}",
                    r.name
                ),
            ));
        }
        if rules.iter().any(|p| p.name == r.name) {
            return Err(fail(
                key("name"),
                format!("expected a unique name, found {:?} twice", r.name),
            ));
        }
        if let Some(c) = &r.comm {
            if c.is_empty() || c.len() > COMM_MAX || c.contains('/') {
                return Err(fail(
                    key("comm"),
                    format!(
                        "expected the kernel's process name (1-{COMM_MAX} bytes, no '/'; longer names are truncated by the kernel, match those with cmdline), found {c:?}"
                    ),
                ));
            }
        }
        let cmdline = match &r.cmdline {
            None => None,
            Some(p) if p.trim().is_empty() => {
                return Err(fail(
                    key("cmdline"),
                    "expected a non-empty glob pattern, found \"\"".to_string(),
                ))
            }
            Some(p) => Some(glob::Pattern::new(p).map_err(|e| {
                fail(
                    key("cmdline"),
                    format!("expected a glob pattern like \"*ngspice -b*\", found {p:?} ({e})"),
                )
            })?),
        };
        if r.comm.is_none() && cmdline.is_none() {
            return Err(fail(
                key("comm"),
                "expected comm, cmdline or both to say which processes this rule matches"
                    .to_string(),
            ));
        }
        let max_runtime = match &r.max_runtime {
            None => None,
            Some(s) => {
                let d = humantime::parse_duration(s).map_err(|e| {
                    fail(
                        key("max_runtime"),
                        format!("expected a duration like \"2m\", found {s:?} ({e})"),
                    )
                })?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 86400) {
                    return Err(fail(
                        key("max_runtime"),
                        format!("expected a duration between 1s and 30days, found {s:?}"),
                    ));
                }
                Some(d)
            }
        };
        if let Some(m) = r.max_memory_bytes {
            if !((1 << 20)..=(16u64 << 40)).contains(&m) {
                return Err(fail(
                    key("max_memory_bytes"),
                    format!("expected bytes between 1048576 (1 MiB) and 17592186044416 (16 TiB), found {m}"),
                ));
            }
        }
        rules.push(ProcessRule {
            name: r.name,
            comm: r.comm,
            cmdline,
            max_runtime,
            max_memory_bytes: r.max_memory_bytes,
            expect_running: r.expect_running,
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[process]]` tables as the config loader deserializes them.
    #[derive(Deserialize)]
    struct Tables {
        process: Vec<RawProcess>,
    }

    /// Rule errors are checked where they surface, with the file name: the config tests.
    fn rules(toml_text: &str) -> Result<Vec<ProcessRule>, FieldError> {
        let t: Tables = toml::from_str(toml_text).expect("valid [[process]] tables");
        validate(t.process)
    }

    #[test]
    fn rules_match_by_comm_and_cmdline() {
        let rules = rules(
            "[[process]]\nname = \"ngspice\"\ncomm = \"ngspice\"\nmax_runtime = \"2m\"\n\
             [[process]]\nname = \"solver\"\ncmdline = \"*analog_pde_solver*serve*\"\n\
             max_memory_bytes = 4294967296\nexpect_running = true\n",
        )
        .expect("valid");
        let [spice, solver] = &rules[..] else {
            panic!("two rules: {rules:?}")
        };
        assert_eq!(spice.max_runtime, Some(Duration::from_secs(120)));
        assert!(spice.matches("ngspice", "ngspice -b deck.cir"));
        assert!(!spice.matches("ngspice2", "ngspice -b"));
        assert_eq!(spice.describe(), "comm \"ngspice\"");
        assert!(solver.expect_running && solver.max_memory_bytes == Some(4 << 30));
        assert!(solver.matches("python3", "python3 -m analog_pde_solver.serve --port 8000"));
        assert!(!solver.matches("python3", "python3 -m other"));
    }
}
