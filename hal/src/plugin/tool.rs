//! A configured vendor tool: each operation run through the [`runner`](super::runner), its exit
//! code and JSON turned into samples, records and errors.
//!
//! This is the plugin backend without a device identity, so that a composite backend (a Loihi 2
//! board read through sysfs, reset and calibrated by the site's tool) can use the same
//! operations as a [`PluginDevice`](super::device::PluginDevice).
//!
//! What stdout may hold, per exit code (see [`schema`](super::schema) for the JSON):
//!
//! | operation | exit 0 | exit 1 |
//! |---|---|---|
//! | read | a JSON report (required) | nothing, plain text, or a JSON report: a sample with the problem as a condition |
//! | actions | nothing, plain text, or a JSON report | the action failed: `message`, else the text, else stderr |
//! | matvec | a JSON report with `output` | failed, as actions |
//!
//! A stdout that starts with `{` is always parsed strictly, so a broken plugin is found out at
//! once; plain text is allowed where the exit code alone carries the answer, because many site
//! tools print "done".

use std::time::SystemTime;

use crate::device::HalError;
use crate::model::{
    CalibrationRecord, Capability, Condition, ConditionCode, Quantity, ResetKind, Sample, Severity,
};
use crate::plugin::config::{Operation, PluginConfig, WATTS_PLACEHOLDER};
use crate::plugin::runner::{first_line, CommandOutput, VendorCommand, Verdict};
use crate::plugin::schema::{parse_report, PluginReport, ReportedIdentity};

/// What a successful read produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolReading {
    pub sample: Sample,
    /// The identity the tool reported, if any.
    pub identity: Option<ReportedIdentity>,
}

#[derive(Debug, Clone)]
pub struct VendorTool {
    cfg: PluginConfig,
    command: VendorCommand,
}

/// What stdout held.
enum Answer {
    Empty,
    Text(String),
    Report(Box<PluginReport>),
}

impl VendorTool {
    /// A tool from a config checked with [`PluginConfig::validate_tool`] (read optional).
    pub fn new(cfg: PluginConfig) -> Result<Self, HalError> {
        cfg.validate_tool()
            .map_err(|(k, m)| HalError::InvalidArgument(format!("{k}: {m}")))?;
        let command = cfg.command();
        Ok(VendorTool { cfg, command })
    }

    pub fn config(&self) -> &PluginConfig {
        &self.cfg
    }

    pub fn capabilities(&self) -> Vec<Capability> {
        self.cfg.capabilities()
    }

    /// Runs `op` with its configured arguments, `{watts}` replaced by `watts` if given.
    async fn run(
        &self,
        op: Operation,
        watts: Option<f64>,
        stdin: Option<Vec<u8>>,
    ) -> Result<(CommandOutput, String), HalError> {
        let Some(args) = self.cfg.args_of(op) else {
            return Err(HalError::Unsupported(format!(
                "{}: no `{}` operation is configured for {}",
                op.key(),
                op.key(),
                self.cfg.command.display()
            )));
        };
        let args: Vec<String> = match watts {
            Some(w) => args
                .iter()
                .map(|a| a.replace(WATTS_PLACEHOLDER, &w.to_string()))
                .collect(),
            None => args.clone(),
        };
        let shown = self.command.display(&args);
        let out = self.command.run(&args, stdin).await?;
        Ok((out, shown))
    }

    /// Reads stdout as nothing, plain text or a strictly parsed JSON report.
    fn answer(out: &CommandOutput, shown: &str) -> Result<Answer, HalError> {
        let text = out.stdout.trim_ascii();
        if text.is_empty() {
            return Ok(Answer::Empty);
        }
        if text.starts_with(b"{") {
            return parse_report(text)
                .map(|r| Answer::Report(Box::new(r)))
                .map_err(|e| HalError::Protocol(format!("{shown}: {e}")));
        }
        Ok(Answer::Text(first_line(text).unwrap_or_default()))
    }

    /// Why an operation that exited with 1 failed, from the best source there is.
    fn problem(answer: &Answer, out: &CommandOutput) -> Option<String> {
        match answer {
            Answer::Report(r) => r
                .message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .or_else(|| {
                    r.conditions
                        .iter()
                        .map(|c| c.message.clone())
                        .find(|m| !m.trim().is_empty())
                }),
            Answer::Text(t) => Some(t.clone()),
            Answer::Empty => None,
        }
        .or_else(|| out.stderr_line())
    }

    /// One read: exit 0 needs a JSON report; exit 1 is a sample that carries the problem.
    pub async fn read(&self, subject: &str) -> Result<ToolReading, HalError> {
        let (out, shown) = self.run(Operation::Read, None, None).await?;
        let now = SystemTime::now();
        let answer = Self::answer(&out, &shown)?;
        match (out.verdict, answer) {
            (Verdict::Ok, Answer::Report(r)) => Ok(ToolReading {
                sample: r.to_sample(subject, now),
                identity: r.identity.clone(),
            }),
            (Verdict::Ok, Answer::Empty) => Err(HalError::Protocol(format!(
                "{shown}: exited 0 but printed nothing; a read must print a JSON report"
            ))),
            (Verdict::Ok, Answer::Text(t)) => Err(HalError::Protocol(format!(
                "{shown}: $: expected a JSON report, found text {t:?}"
            ))),
            (Verdict::Problem, answer) => {
                let why = Self::problem(&answer, &out);
                let (mut sample, identity) = match answer {
                    Answer::Report(r) => (r.to_sample(subject, now), r.identity.clone()),
                    _ => (PluginReport::default().to_sample(subject, now), None),
                };
                // Exit 1 means "the device has a problem". If the plugin did not say which,
                // say so ourselves, so the problem is never lost as an OK sample.
                if !sample
                    .conditions
                    .iter()
                    .any(|c| c.severity >= Severity::Warning)
                {
                    let message = match why {
                        Some(w) => format!("plugin reports a problem: {w}"),
                        None => "plugin exited with status 1 (device has a problem) without saying which".to_string(),
                    };
                    sample.conditions.push(Condition::new(
                        ConditionCode::DeviceError,
                        Severity::Warning,
                        subject,
                        message,
                        now,
                    ));
                }
                Ok(ToolReading { sample, identity })
            }
        }
    }

    /// Runs an action; exit 0 is success, exit 1 is [`HalError::Failed`] with the reason.
    async fn act(
        &self,
        op: Operation,
        watts: Option<f64>,
        stdin: Option<Vec<u8>>,
    ) -> Result<Option<PluginReport>, HalError> {
        let (out, shown) = self.run(op, watts, stdin).await?;
        match out.verdict {
            Verdict::Ok => match Self::answer(&out, &shown)? {
                Answer::Report(r) => Ok(Some(*r)),
                Answer::Empty | Answer::Text(_) => Ok(None),
            },
            Verdict::Problem => {
                // A malformed JSON answer does not change the verdict: the action failed.
                let answer = Self::answer(&out, &shown).unwrap_or(Answer::Empty);
                let why = Self::problem(&answer, &out)
                    .unwrap_or_else(|| "exited with status 1 and gave no reason".to_string());
                Err(HalError::Failed(format!("{shown}: {why}")))
            }
        }
    }

    pub async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        let op = match kind {
            ResetKind::Soft => Operation::ResetSoft,
            ResetKind::Hard => Operation::ResetHard,
            ResetKind::PowerCycle => Operation::PowerCycle,
        };
        self.act(op, None, None).await.map(|_| ())
    }

    /// Calibrates. The record is the one the tool reports; a tool that reports none is followed
    /// by a read (if configured), whose record is used, or else now and the hottest temperature
    /// it reads.
    pub async fn calibrate(&self, subject: &str) -> Result<CalibrationRecord, HalError> {
        let report = self.act(Operation::Calibrate, None, None).await?;
        if let Some(record) = report.and_then(|r| r.calibration) {
            return Ok(record);
        }
        let shown = self
            .command
            .display(self.cfg.calibrate.as_deref().unwrap_or_default());
        if self.cfg.read.is_none() {
            return Err(HalError::Protocol(format!(
                "{shown}: calibrated (exit 0) but reported no calibrated_at_unix and \
                 calibration_temperature_celsius, and no read is configured to find them"
            )));
        }
        let sample = self.read(subject).await?.sample;
        if let Some(record) = sample.calibration {
            return Ok(record);
        }
        match sample.max_of(Quantity::TemperatureCelsius) {
            Some((_, t)) => Ok(CalibrationRecord {
                calibrated_at: SystemTime::now(),
                temperature_celsius: t,
            }),
            None => Err(HalError::Protocol(format!(
                "{shown}: calibrated (exit 0) but neither it nor the read after it reported a \
                 calibration record or a temperature"
            ))),
        }
    }

    pub async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        if !watts.is_finite() || watts < 0.0 {
            return Err(HalError::InvalidArgument(format!(
                "power limit: expected a finite number of watts >= 0, found {watts}"
            )));
        }
        // `-0` would reach the tool as "-0".
        let watts = if watts == 0.0 { 0.0 } else { watts };
        self.act(Operation::SetPowerLimit, Some(watts), None)
            .await
            .map(|_| ())
    }

    pub async fn set_enabled(&self, enabled: bool) -> Result<(), HalError> {
        let op = if enabled {
            Operation::Enable
        } else {
            Operation::Disable
        };
        self.act(op, None, None).await.map(|_| ())
    }

    /// Sends `{"input":[...]}` on stdin and returns the report's `output`.
    pub async fn matvec(&self, input: &[f64]) -> Result<Vec<f64>, HalError> {
        if let Some((i, x)) = input.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(HalError::InvalidArgument(format!(
                "matvec input[{i}]: expected a finite number, found {x}"
            )));
        }
        let stdin = serde_json::to_vec(&serde_json::json!({ "input": input }))
            .map_err(|e| HalError::InvalidArgument(format!("matvec input: {e}")))?;
        let report = self.act(Operation::Matvec, None, Some(stdin)).await?;
        match report.and_then(|r| r.output) {
            Some(output) => Ok(output),
            None => Err(HalError::Protocol(format!(
                "{}: output: missing; matvec must print a JSON report with the output vector",
                self.command
                    .display(self.cfg.matvec.as_deref().unwrap_or_default())
            ))),
        }
    }
}
