//! `[remediation]` and `[[policy]]`: the ladders the agent walks by itself when a condition
//! matches (see `crate::remediation`). Parsed and checked here like every other section, so a
//! misspelt step or an impossible duration stops the agent at start with the key named,
//! never at 3 a.m. when the ladder first runs.

use std::time::Duration;

use health_daemon::FieldError;
use health_hal::{ConditionCode, Severity};
use serde::Deserialize;

use super::check::{duration, range, ratio, secs};

/// `[remediation]`: limits over every policy of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationConfig {
    /// Destructive steps running at once on this node (reset-hard, power-cycle, disable,
    /// kill-process, restart-service).
    pub max_destructive: u32,
    /// How long to wait for the collector's answer to a lease request.
    pub lease_timeout: Duration,
    /// How often the engine looks at the devices (and re-reads during verification).
    pub interval: Duration,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        RemediationConfig {
            max_destructive: 1,
            lease_timeout: Duration::from_secs(5),
            interval: Duration::from_millis(250),
        }
    }
}

/// What a policy does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    /// Walk the ladder.
    Enforce,
    /// Walk the ladder, but stop before each destructive step until an operator approves.
    Approve,
    /// Record what would be done (audit, metrics) and touch nothing.
    Shadow,
    /// Ignore the policy.
    Off,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Approve => "approve",
            PolicyMode::Shadow => "shadow",
            PolicyMode::Off => "off",
        }
    }
}

/// What a destructive step may do when no collector answers a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutCollector {
    /// Fail closed: only non-destructive steps run (the default).
    SoftOnly,
    /// A node with no collector configured, or a site that accepts the risk: act anyway.
    All,
}

/// One rung of a ladder.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    Calibrate,
    /// `recalibrate`: calibrate once the reset has succeeded, as one step.
    ResetSoft {
        recalibrate: bool,
    },
    ResetHard {
        recalibrate: bool,
    },
    PowerCycle {
        recalibrate: bool,
    },
    /// A lease on the power limit: restored to the previous limit once the condition has
    /// stayed clear for the step's hold.
    SetPowerLimit(PowerTarget),
    /// Quarantine: the ladder ends.
    Disable,
    /// Signal the one process the condition names (PROCESS_STUCK's subject).
    KillProcess {
        kill: bool,
        escalate_after: Option<Duration>,
    },
    /// Restart the unit of the `[[service]]` rule the condition names (`service:<name>`).
    RestartService,
    /// Run a `[[cleanup]]` rule (DISK_FULL's subject, a mount point). Not destructive in the
    /// ladder's sense: it takes no board down, and what it may delete is the rule's, which an
    /// operator wrote for exactly this.
    CleanFiles {
        rule: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PowerTarget {
    /// Of the limit in force now (or, with none set, of the power drawn now).
    Fraction(f64),
    Watts(f64),
}

impl StepAction {
    /// Destructive steps take a lease from the collector and count against
    /// `max_destructive`; they are the ones `approve` stops before.
    pub fn destructive(&self) -> bool {
        matches!(
            self,
            StepAction::ResetHard { .. }
                | StepAction::PowerCycle { .. }
                | StepAction::Disable
                | StepAction::KillProcess { .. }
                | StepAction::RestartService
        )
    }

    /// How the step is named in config, audit and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            StepAction::Calibrate => "calibrate",
            StepAction::ResetSoft { .. } => "reset-soft",
            StepAction::ResetHard { .. } => "reset-hard",
            StepAction::PowerCycle { .. } => "power-cycle",
            StepAction::SetPowerLimit(_) => "set-power-limit",
            StepAction::Disable => "disable",
            StepAction::KillProcess { .. } => "kill-process",
            StepAction::RestartService => "restart-service",
            StepAction::CleanFiles { .. } => "clean-files",
        }
    }

    /// The name with its arguments: `reset-soft+calibrate`, `set-power-limit 70%`.
    pub fn describe(&self) -> String {
        match self {
            StepAction::ResetSoft { recalibrate: true }
            | StepAction::ResetHard { recalibrate: true }
            | StepAction::PowerCycle { recalibrate: true } => format!("{}+calibrate", self.name()),
            StepAction::SetPowerLimit(PowerTarget::Fraction(f)) => {
                format!("set-power-limit {:.0}%", f * 100.0)
            }
            StepAction::SetPowerLimit(PowerTarget::Watts(w)) => format!("set-power-limit {w} W"),
            StepAction::KillProcess { kill: true, .. } => "kill-process KILL".to_string(),
            StepAction::KillProcess {
                escalate_after: Some(d),
                ..
            } => format!(
                "kill-process TERM (KILL after {})",
                humantime::format_duration(*d)
            ),
            StepAction::KillProcess { .. } => "kill-process TERM".to_string(),
            StepAction::CleanFiles { rule } => format!("clean-files {rule}"),
            _ => self.name().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyStep {
    pub action: StepAction,
    /// Whether the step is verified (the matched condition gone, and staying gone for
    /// `hold`); a step without verification ends the ladder (disable).
    pub verify: bool,
    pub hold: Duration,
    /// How long the condition has, after the action, to clear.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyMatch {
    pub codes: Vec<ConditionCode>,
    /// The least severity that matches.
    pub severity: Severity,
    /// Device ids the policy is limited to; empty: every device.
    pub devices: Vec<String>,
}

impl PolicyMatch {
    pub fn matches(&self, code: ConditionCode, severity: Severity, device: &str) -> bool {
        self.codes.contains(&code)
            && severity >= self.severity
            && (self.devices.is_empty() || self.devices.iter().any(|d| d == device))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub matches: PolicyMatch,
    /// How long the condition must last before the first step.
    pub dwell: Duration,
    pub mode: PolicyMode,
    /// Ladders started per device within `window`.
    pub max_attempts: u32,
    pub window: Duration,
    /// A condition back within this of a verified recovery continues the ladder at its next
    /// step; an exhausted ladder is forgotten once the condition has stayed clear this long.
    pub healthy_delay: Duration,
    pub without_collector: WithoutCollector,
    pub steps: Vec<PolicyStep>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRemediation {
    max_destructive: Option<u64>,
    lease_timeout: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    name: String,
    #[serde(rename = "match")]
    matches: RawMatch,
    #[serde(rename = "for")]
    dwell: Option<String>,
    mode: Option<String>,
    max_attempts: Option<u64>,
    window: Option<String>,
    healthy_delay: Option<String>,
    without_collector: Option<String>,
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    codes: Vec<String>,
    severity: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    action: String,
    verify: Option<String>,
    hold: Option<String>,
    timeout: Option<String>,
    recalibrate: Option<bool>,
    fraction: Option<f64>,
    watts: Option<f64>,
    signal: Option<String>,
    escalate_after: Option<String>,
    rule: Option<String>,
}

pub(super) fn remediation(r: RawRemediation) -> Result<RemediationConfig, FieldError> {
    let d = RemediationConfig::default();
    Ok(RemediationConfig {
        max_destructive: range(
            "remediation.max_destructive",
            r.max_destructive,
            u64::from(d.max_destructive),
            1,
            64,
        )? as u32,
        lease_timeout: duration(
            "remediation.lease_timeout",
            r.lease_timeout.as_deref(),
            d.lease_timeout,
            Duration::from_millis(100),
            secs(60),
        )?,
        interval: duration(
            "remediation.interval",
            r.interval.as_deref(),
            d.interval,
            Duration::from_millis(50),
            secs(60),
        )?,
    })
}

pub(super) fn policies(raw: Vec<RawPolicy>) -> Result<Vec<Policy>, FieldError> {
    let mut out: Vec<Policy> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let policy = policy(i, p)?;
        if out.iter().any(|o| o.name == policy.name) {
            return Err(FieldError::new(
                format!("policy[{i}].name"),
                format!("expected a unique name, found {:?} twice", policy.name),
            ));
        }
        out.push(policy);
    }
    Ok(out)
}

fn policy(i: usize, p: RawPolicy) -> Result<Policy, FieldError> {
    let k = |name: &str| format!("policy[{i}].{name}");
    let name = p.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(FieldError::new(
            k("name"),
            format!(
                "expected 1-64 letters, digits, '-' or '_', found {:?}",
                p.name
            ),
        ));
    }
    let matches = policy_match(&k("match"), p.matches)?;
    let mode = match p.mode.as_deref().unwrap_or("enforce") {
        "enforce" => PolicyMode::Enforce,
        "approve" => PolicyMode::Approve,
        "shadow" => PolicyMode::Shadow,
        "off" => PolicyMode::Off,
        other => {
            return Err(FieldError::new(
                k("mode"),
                format!("expected one of enforce, approve, shadow, off; found {other:?}"),
            ))
        }
    };
    let without_collector = match p.without_collector.as_deref().unwrap_or("soft-only") {
        "soft-only" => WithoutCollector::SoftOnly,
        "all" => WithoutCollector::All,
        other => {
            return Err(FieldError::new(
                k("without_collector"),
                format!("expected \"soft-only\" or \"all\", found {other:?}"),
            ))
        }
    };
    if p.steps.is_empty() {
        return Err(FieldError::new(k("steps"), "expected at least one step"));
    }
    let n = p.steps.len();
    let steps = p
        .steps
        .into_iter()
        .enumerate()
        .map(|(j, s)| step(&format!("policy[{i}].steps[{j}]"), s, j + 1 == n))
        .collect::<Result<Vec<_>, _>>()?;
    let window = duration(
        &k("window"),
        p.window.as_deref(),
        secs(900),
        secs(1),
        secs(7 * 86400),
    )?;
    Ok(Policy {
        name,
        matches,
        dwell: duration(
            &k("for"),
            p.dwell.as_deref(),
            Duration::ZERO,
            Duration::ZERO,
            secs(86400),
        )?,
        mode,
        max_attempts: range(&k("max_attempts"), p.max_attempts, 3, 1, 1000)? as u32,
        window,
        healthy_delay: duration(
            &k("healthy_delay"),
            p.healthy_delay.as_deref(),
            secs(120),
            Duration::ZERO,
            secs(86400),
        )?,
        without_collector,
        steps,
    })
}

fn policy_match(key: &str, m: RawMatch) -> Result<PolicyMatch, FieldError> {
    if m.codes.is_empty() {
        return Err(FieldError::new(
            format!("{key}.codes"),
            "expected at least one condition code",
        ));
    }
    let codes = m
        .codes
        .iter()
        .enumerate()
        .map(|(j, c)| {
            ConditionCode::parse(c).ok_or_else(|| {
                FieldError::new(
                    format!("{key}.codes[{j}]"),
                    format!("expected a condition code such as DEVICE_UNRESPONSIVE, found {c:?}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(c) = codes
        .iter()
        .find(|c| **c == ConditionCode::RemediationExhausted)
    {
        return Err(FieldError::new(
            format!("{key}.codes"),
            format!("{c} is raised by remediation itself and cannot start a ladder"),
        ));
    }
    if let Some(c) = codes.iter().find(|c| **c == ConditionCode::Maintenance) {
        return Err(FieldError::new(
            format!("{key}.codes"),
            format!("{c} means no policy acts on the subject, so it cannot start a ladder"),
        ));
    }
    let severity = match m.severity.as_deref().unwrap_or("warning") {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        other => {
            return Err(FieldError::new(
                format!("{key}.severity"),
                format!("expected \"info\", \"warning\" or \"critical\", found {other:?}"),
            ))
        }
    };
    Ok(PolicyMatch {
        codes,
        severity,
        devices: m.devices,
    })
}

fn step(key: &str, s: RawStep, last: bool) -> Result<PolicyStep, FieldError> {
    let k = |name: &str| format!("{key}.{name}");
    let recalibrate = s.recalibrate.unwrap_or(false);
    let action = match s.action.as_str() {
        "calibrate" => StepAction::Calibrate,
        "reset-soft" => StepAction::ResetSoft { recalibrate },
        "reset-hard" => StepAction::ResetHard { recalibrate },
        "power-cycle" => StepAction::PowerCycle { recalibrate },
        "set-power-limit" => StepAction::SetPowerLimit(match (s.fraction, s.watts) {
            (Some(f), None) => PowerTarget::Fraction(ratio(&k("fraction"), Some(f), 1.0)?),
            (None, Some(w)) => PowerTarget::Watts(range(&k("watts"), Some(w), 1.0, 0.001, 1e6)?),
            _ => {
                return Err(FieldError::new(
                    k("fraction"),
                    "set-power-limit takes exactly one of `fraction` (of the limit in force) or `watts`",
                ))
            }
        }),
        "disable" => StepAction::Disable,
        "kill-process" => {
            let kill = match s.signal.as_deref().unwrap_or("TERM") {
                "TERM" | "SIGTERM" => false,
                "KILL" | "SIGKILL" => true,
                other => {
                    return Err(FieldError::new(
                        k("signal"),
                        format!("expected \"TERM\" or \"KILL\", found {other:?}"),
                    ))
                }
            };
            let escalate_after = s
                .escalate_after
                .as_deref()
                .map(|v| duration(&k("escalate_after"), Some(v), secs(10), Duration::from_millis(100), secs(3600)))
                .transpose()?;
            StepAction::KillProcess {
                kill,
                escalate_after,
            }
        }
        "restart-service" => StepAction::RestartService,
        "clean-files" => match s.rule.as_deref() {
            Some(rule) if !rule.is_empty() => StepAction::CleanFiles {
                rule: rule.to_string(),
            },
            _ => {
                return Err(FieldError::new(
                    k("rule"),
                    "clean-files needs `rule`, the name of a [[cleanup]] rule",
                ))
            }
        },
        other => {
            return Err(FieldError::new(
                k("action"),
                format!(
                    "expected one of calibrate, reset-soft, reset-hard, power-cycle, set-power-limit, disable, kill-process, restart-service, clean-files; found {other:?}"
                ),
            ))
        }
    };
    if s.rule.is_some() && !matches!(action, StepAction::CleanFiles { .. }) {
        return Err(FieldError::new(
            k("rule"),
            "only a clean-files step takes `rule`",
        ));
    }
    if recalibrate
        && !matches!(
            action,
            StepAction::ResetSoft { .. }
                | StepAction::ResetHard { .. }
                | StepAction::PowerCycle { .. }
        )
    {
        return Err(FieldError::new(
            k("recalibrate"),
            "only a reset step (reset-soft, reset-hard, power-cycle) can recalibrate after it",
        ));
    }
    let verify = match s.verify.as_deref() {
        None => action != StepAction::Disable,
        Some("cleared") => true,
        Some("none") => false,
        Some(other) => {
            return Err(FieldError::new(
                k("verify"),
                format!("expected \"cleared\" or \"none\", found {other:?}"),
            ))
        }
    };
    if action == StepAction::Disable && !last {
        return Err(FieldError::new(
            k("action"),
            "disable quarantines the device and ends the ladder: it must be the last step",
        ));
    }
    Ok(PolicyStep {
        action,
        verify,
        hold: duration(
            &k("hold"),
            s.hold.as_deref(),
            secs(10),
            Duration::ZERO,
            secs(3600),
        )?,
        timeout: duration(
            &k("timeout"),
            s.timeout.as_deref(),
            secs(60),
            Duration::from_millis(100),
            secs(3600),
        )?,
    })
}

/// Every clean-files step names a `[[cleanup]]` rule that exists.
pub(super) fn check_cleanup_rules(
    policies: &[Policy],
    rules: &[super::CleanupRule],
) -> Result<(), FieldError> {
    for (i, p) in policies.iter().enumerate() {
        for (j, s) in p.steps.iter().enumerate() {
            if let StepAction::CleanFiles { rule } = &s.action {
                if !rules.iter().any(|r| &r.name == rule) {
                    let known: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
                    return Err(FieldError::new(
                        format!("policy[{i}].steps[{j}].rule"),
                        format!(
                            "expected the name of a [[cleanup]] rule ({}), found {rule:?}",
                            if known.is_empty() {
                                "none is configured".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Policy>, FieldError> {
        #[derive(Deserialize)]
        struct Doc {
            policy: Vec<RawPolicy>,
        }
        let doc: Doc = toml::from_str(toml_text).map_err(|e| FieldError::new("", e.to_string()))?;
        policies(doc.policy)
    }

    #[test]
    fn the_issue_example_parses_into_a_four_step_ladder() {
        let p = parse(
            r#"
            [[policy]]
            name = "unresponsive"
            match = { codes = ["DEVICE_UNRESPONSIVE", "DEVICE_ERROR"], severity = "critical" }
            for = "0s"
            mode = "enforce"
            max_attempts = 3
            window = "15m"
            healthy_delay = "2m"
            steps = [
              { action = "reset-soft",  verify = "cleared", hold = "10s", timeout = "60s" },
              { action = "reset-hard",  verify = "cleared", hold = "10s", timeout = "90s" },
              { action = "power-cycle", verify = "cleared", hold = "30s", timeout = "120s" },
              { action = "disable" },
            ]
            "#,
        )
        .unwrap();
        let p = &p[0];
        assert_eq!(p.steps.len(), 4);
        assert!(!p.steps[0].action.destructive());
        assert!(p.steps[1].action.destructive());
        assert_eq!(p.steps[2].hold, secs(30));
        assert!(!p.steps[3].verify);
        assert_eq!(p.window, secs(900));
        assert!(p
            .matches
            .matches(ConditionCode::DeviceError, Severity::Critical, "x"));
        assert!(!p
            .matches
            .matches(ConditionCode::DeviceError, Severity::Warning, "x"));
        assert_eq!(p.without_collector, WithoutCollector::SoftOnly);
    }

    #[test]
    fn bad_policies_name_the_key() {
        let cases = [
            (
                r#"codes = ["DEVICE_ON_FIRE"]"#,
                "",
                "policy[0].match.codes[0]",
            ),
            (
                r#"codes = ["THERMAL_WARNING"]"#,
                r#"{ action = "reboot" }"#,
                "policy[0].steps[0].action",
            ),
            (
                r#"codes = ["THERMAL_WARNING"]"#,
                r#"{ action = "set-power-limit" }"#,
                "policy[0].steps[0].fraction",
            ),
            (
                r#"codes = ["THERMAL_WARNING"]"#,
                r#"{ action = "disable" }, { action = "calibrate" }"#,
                "policy[0].steps[0].action",
            ),
            (
                r#"codes = ["THERMAL_WARNING"]"#,
                r#"{ action = "calibrate", hold = "forever" }"#,
                "policy[0].steps[0].hold",
            ),
            (
                r#"codes = ["REMEDIATION_EXHAUSTED"]"#,
                "",
                "policy[0].match.codes",
            ),
            (r#"codes = ["MAINTENANCE"]"#, "", "policy[0].match.codes"),
            (
                r#"codes = ["DISK_FULL"]"#,
                r#"{ action = "clean-files" }"#,
                "policy[0].steps[0].rule",
            ),
            (
                r#"codes = ["DISK_FULL"]"#,
                r#"{ action = "calibrate", rule = "tmp" }"#,
                "policy[0].steps[0].rule",
            ),
        ];
        for (codes, steps, key) in cases {
            let steps = if steps.is_empty() {
                r#"{ action = "calibrate" }"#
            } else {
                steps
            };
            let text =
                format!("[[policy]]\nname = \"p\"\nmatch = {{ {codes} }}\nsteps = [ {steps} ]\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {}", e.message);
        }
    }

    #[test]
    fn a_clean_files_step_names_an_existing_cleanup_rule() {
        let p = parse(
            "[[policy]]\nname = \"disk\"\nmatch = { codes = [\"DISK_FULL\"] }\nsteps = [ { action = \"clean-files\", rule = \"tmp\" } ]\n",
        )
        .unwrap();
        assert_eq!(
            p[0].steps[0].action,
            StepAction::CleanFiles { rule: "tmp".into() }
        );
        assert!(!p[0].steps[0].action.destructive());
        let e = check_cleanup_rules(&p, &[]).unwrap_err();
        assert_eq!(e.key, "policy[0].steps[0].rule");
        assert!(e.message.contains("none is configured"), "{}", e.message);
        let rule = super::super::CleanupRule {
            name: "tmp".into(),
            paths: vec!["/tmp/x*".into()],
            min_age: secs(60),
            max_bytes: None,
            owner: None,
        };
        check_cleanup_rules(&p, &[rule]).unwrap();
    }

    #[test]
    fn names_are_unique() {
        let one = "[[policy]]\nname = \"p\"\nmatch = { codes = [\"THERMAL_WARNING\"] }\nsteps = [ { action = \"calibrate\" } ]\n";
        let e = parse(&format!("{one}{one}")).unwrap_err();
        assert_eq!(e.key, "policy[1].name");
    }
}
