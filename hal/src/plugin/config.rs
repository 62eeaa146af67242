//! Configuration of a vendor-command plugin: which program, with which arguments per operation.
//!
//! Every operation runs `command args... <operation args...>`. The operations configured are
//! the device's capabilities: a site that gives no `reset_hard` gets no hard reset, rather than
//! a guess. In the agent's TOML this looks like:
//!
//! ```toml
//! [device.plugin]
//! command = "/usr/local/libexec/health-agent/loihi-tool"
//! args = ["--board", "kp0"]
//! deadline_ms = 10000
//! read = ["status", "--json"]
//! reset_soft = ["reset", "--soft"]
//! set_power_limit = ["power-limit", "--watts", "{watts}"]
//! enable = ["enable"]
//! disable = ["disable"]
//! ```
//!
//! `{watts}` in `set_power_limit` is replaced by the requested limit (a decimal number, e.g.
//! `42.5`); it is the only placeholder, and the arguments are passed to the program directly,
//! never through a shell, so no quoting is needed or interpreted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deadline::MinDeadlines;
use crate::model::Capability;
use crate::plugin::runner::VendorCommand;

pub const DEFAULT_DEADLINE_MS: u64 = 10_000;
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 65_536;
/// A deadline shorter than this cannot even start a process reliably under load.
pub const MIN_DEADLINE_MS: u64 = 10;
/// Ten minutes: a vendor calibration can be slow, but never unbounded.
pub const MAX_DEADLINE_MS: u64 = 600_000;
pub const MIN_MAX_OUTPUT_BYTES: usize = 1024;
/// 16 MiB: the most stdout the agent will hold for one call.
pub const MAX_MAX_OUTPUT_BYTES: usize = 16 << 20;
/// The placeholder replaced by the requested power limit.
pub const WATTS_PLACEHOLDER: &str = "{watts}";

fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE_MS
}
fn default_max_output_bytes() -> usize {
    DEFAULT_MAX_OUTPUT_BYTES
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Absolute path of the program.
    pub command: PathBuf,
    /// Arguments before every operation's own.
    #[serde(default)]
    pub args: Vec<String>,
    /// Deadline of one run, in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Cap on stdout (and on the stderr kept) of one run, in bytes.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// Arguments of one read (required for a plugin device; may be `[]`).
    #[serde(default)]
    pub read: Option<Vec<String>>,
    #[serde(default)]
    pub reset_soft: Option<Vec<String>>,
    #[serde(default)]
    pub reset_hard: Option<Vec<String>>,
    #[serde(default)]
    pub power_cycle: Option<Vec<String>>,
    #[serde(default)]
    pub calibrate: Option<Vec<String>>,
    /// Must contain `{watts}`.
    #[serde(default)]
    pub set_power_limit: Option<Vec<String>>,
    /// `enable` and `disable` come as a pair.
    #[serde(default)]
    pub enable: Option<Vec<String>>,
    #[serde(default)]
    pub disable: Option<Vec<String>>,
    /// The input vector goes to stdin as `{"input":[...]}`; the answer's `output` is the result.
    #[serde(default)]
    pub matvec: Option<Vec<String>>,
}

impl PluginConfig {
    /// A config for `command` with defaults and no operations.
    pub fn new(command: impl Into<PathBuf>) -> Self {
        PluginConfig {
            command: command.into(),
            args: Vec::new(),
            deadline_ms: DEFAULT_DEADLINE_MS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            read: None,
            reset_soft: None,
            reset_hard: None,
            power_cycle: None,
            calibrate: None,
            set_power_limit: None,
            enable: None,
            disable: None,
            matvec: None,
        }
    }

    /// Checks a plugin *device* config: as [`PluginConfig::validate_tool`], and `read` is
    /// required (a device that cannot be read cannot be watched). Errors are
    /// `(key, "expected ..., found ...")`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.validate_tool()?;
        if self.read.is_none() {
            return Err((
                "read".into(),
                "expected the arguments of a read (a list, may be empty), found nothing".into(),
            ));
        }
        Ok(())
    }

    /// Checks the config of a vendor *tool* used only for actions (a Loihi 2 board's reset and
    /// calibration tool, beside sysfs readings): `read` may be absent.
    pub fn validate_tool(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: String| Err((k.to_string(), m));
        if !self.command.is_absolute() {
            return e(
                "command",
                format!(
                    "expected an absolute path (no PATH lookup), found {:?}",
                    self.command.display().to_string()
                ),
            );
        }
        if !(MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&self.deadline_ms) {
            return e(
                "deadline_ms",
                format!(
                    "expected {MIN_DEADLINE_MS}..={MAX_DEADLINE_MS} milliseconds, found {}",
                    self.deadline_ms
                ),
            );
        }
        if !(MIN_MAX_OUTPUT_BYTES..=MAX_MAX_OUTPUT_BYTES).contains(&self.max_output_bytes) {
            return e(
                "max_output_bytes",
                format!(
                    "expected {MIN_MAX_OUTPUT_BYTES}..={MAX_MAX_OUTPUT_BYTES} bytes, found {}",
                    self.max_output_bytes
                ),
            );
        }
        check_args("args", &self.args)?;
        for (op, args) in self.operations() {
            let Some(args) = args else { continue };
            check_args(op.key(), args)?;
            let has_watts = args.iter().any(|a| a.contains(WATTS_PLACEHOLDER));
            match op {
                Operation::SetPowerLimit if !has_watts => {
                    return e(
                        op.key(),
                        format!("expected an argument containing {WATTS_PLACEHOLDER}, found {args:?}"),
                    )
                }
                Operation::SetPowerLimit => {}
                _ if has_watts => {
                    return e(
                        op.key(),
                        format!("expected no {WATTS_PLACEHOLDER} (only set_power_limit takes one), found {args:?}"),
                    )
                }
                _ => {}
            }
        }
        if self.args.iter().any(|a| a.contains(WATTS_PLACEHOLDER)) {
            return e(
                "args",
                format!(
                    "expected no {WATTS_PLACEHOLDER} (only set_power_limit takes one), found {:?}",
                    self.args
                ),
            );
        }
        match (&self.enable, &self.disable) {
            (Some(_), None) => e(
                "disable",
                "expected disable beside enable, found nothing".into(),
            ),
            (None, Some(_)) => e(
                "enable",
                "expected enable beside disable, found nothing".into(),
            ),
            _ => Ok(()),
        }
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Every operation is one run under `deadline_ms`.
    pub fn min_deadlines(&self) -> MinDeadlines {
        MinDeadlines::with_slack(self.deadline(), self.deadline())
    }

    /// The runner for this config (per-operation arguments are added per call).
    pub fn command(&self) -> VendorCommand {
        VendorCommand::new(
            self.command.clone(),
            self.args.clone(),
            self.deadline(),
            self.max_output_bytes,
        )
    }

    pub fn program(&self) -> &Path {
        &self.command
    }

    /// Each operation with its configured arguments, if any.
    pub fn operations(&self) -> [(Operation, Option<&Vec<String>>); 9] {
        [
            (Operation::Read, self.read.as_ref()),
            (Operation::ResetSoft, self.reset_soft.as_ref()),
            (Operation::ResetHard, self.reset_hard.as_ref()),
            (Operation::PowerCycle, self.power_cycle.as_ref()),
            (Operation::Calibrate, self.calibrate.as_ref()),
            (Operation::SetPowerLimit, self.set_power_limit.as_ref()),
            (Operation::Enable, self.enable.as_ref()),
            (Operation::Disable, self.disable.as_ref()),
            (Operation::Matvec, self.matvec.as_ref()),
        ]
    }

    pub fn args_of(&self, op: Operation) -> Option<&Vec<String>> {
        self.operations()
            .into_iter()
            .find(|(o, _)| *o == op)
            .and_then(|(_, a)| a)
    }

    /// The capabilities the configured operations give.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut caps: Vec<Capability> = self
            .operations()
            .into_iter()
            .filter(|(_, a)| a.is_some())
            .filter_map(|(op, _)| op.capability())
            .collect();
        // Enable/disable is one capability that needs both operations.
        if self.enable.is_none() || self.disable.is_none() {
            caps.retain(|c| *c != Capability::EnableDisable);
        }
        caps.sort();
        caps.dedup();
        caps
    }
}

fn check_args(key: &str, args: &[String]) -> Result<(), (String, String)> {
    match args.iter().find(|a| a.contains('\0')) {
        Some(a) => Err((
            key.to_string(),
            format!("expected arguments without NUL bytes, found {a:?}"),
        )),
        None => Ok(()),
    }
}

/// One operation a plugin can be configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    ResetSoft,
    ResetHard,
    PowerCycle,
    Calibrate,
    SetPowerLimit,
    Enable,
    Disable,
    Matvec,
}

impl Operation {
    /// Its config key, also used in messages.
    pub fn key(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::ResetSoft => "reset_soft",
            Operation::ResetHard => "reset_hard",
            Operation::PowerCycle => "power_cycle",
            Operation::Calibrate => "calibrate",
            Operation::SetPowerLimit => "set_power_limit",
            Operation::Enable => "enable",
            Operation::Disable => "disable",
            Operation::Matvec => "matvec",
        }
    }

    pub fn capability(self) -> Option<Capability> {
        match self {
            Operation::Read => None,
            Operation::ResetSoft => Some(Capability::ResetSoft),
            Operation::ResetHard => Some(Capability::ResetHard),
            Operation::PowerCycle => Some(Capability::PowerCycle),
            Operation::Calibrate => Some(Capability::Calibrate),
            Operation::SetPowerLimit => Some(Capability::SetPowerLimit),
            Operation::Enable | Operation::Disable => Some(Capability::EnableDisable),
            Operation::Matvec => Some(Capability::Matvec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<PluginConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_capabilities() {
        let c = cfg(r#"{"command":"/opt/tool","read":[],"reset_soft":["r"],"enable":["e"],"disable":["d"],"matvec":["m"]}"#).unwrap();
        assert_eq!(c.deadline_ms, DEFAULT_DEADLINE_MS);
        assert_eq!(c.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.capabilities(),
            vec![
                Capability::ResetSoft,
                Capability::EnableDisable,
                Capability::Matvec
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = cfg(r#"{"command":"/opt/tool","raed":[]}"#).unwrap_err();
        assert!(e.contains("raed"), "{e}");
        let e = cfg(r#"{"read":[]}"#).unwrap_err();
        assert!(e.contains("command"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let base = || {
            let mut c = PluginConfig::new("/opt/tool");
            c.read = Some(vec![]);
            c
        };
        let check = |c: PluginConfig, key: &str, text: &str| {
            let (k, m) = c.validate().unwrap_err();
            assert_eq!(k, key, "{m}");
            assert!(m.contains(text) && m.contains("found"), "{m}");
        };
        check(
            PluginConfig::new("/opt/tool"),
            "read",
            "expected the arguments",
        );
        let mut c = base();
        c.command = "tool".into();
        check(c, "command", "absolute path");
        let mut c = base();
        c.deadline_ms = 0;
        check(c, "deadline_ms", "expected 10..=600000");
        let mut c = base();
        c.deadline_ms = 3_600_000;
        check(c, "deadline_ms", "3600000");
        let mut c = base();
        c.max_output_bytes = 10;
        check(c, "max_output_bytes", "expected 1024");
        let mut c = base();
        c.set_power_limit = Some(vec!["limit".into()]);
        check(c, "set_power_limit", "{watts}");
        let mut c = base();
        c.reset_soft = Some(vec!["{watts}".into()]);
        check(c, "reset_soft", "only set_power_limit");
        let mut c = base();
        c.enable = Some(vec![]);
        check(c, "disable", "beside enable");
        let mut c = base();
        c.read = Some(vec!["a\0b".into()]);
        check(c, "read", "NUL");

        let mut tool = PluginConfig::new("/opt/tool");
        tool.reset_soft = Some(vec!["reset".into()]);
        assert_eq!(tool.validate_tool(), Ok(()));
    }

    #[test]
    fn min_deadlines_are_one_run_each() {
        let mut c = PluginConfig::new("/opt/tool");
        let ms = Duration::from_millis;
        assert_eq!(
            c.min_deadlines(),
            MinDeadlines {
                read: ms(10_000 + 500),
                action: ms(10_000 + 500)
            }
        );
        c.deadline_ms = 250;
        assert_eq!(
            c.min_deadlines(),
            MinDeadlines {
                read: ms(750),
                action: ms(750)
            }
        );
    }
}
