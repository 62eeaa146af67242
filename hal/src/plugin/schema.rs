//! The JSON a plugin prints on stdout (schema version 1), and its strict parser.
//!
//! One JSON object, nothing before or after it (whitespace aside):
//!
//! ```json
//! {
//!   "version": 1,
//!   "identity": {"vendor": "Intel", "model": "Kapoho Point", "serial": "KP-0042", "firmware": "2.1.0"},
//!   "readings": [
//!     {"sensor": "chip0", "quantity": "temperature_celsius", "value": 51.2},
//!     {"sensor": "board", "quantity": "power_watts", "value": 18.5}
//!   ],
//!   "conditions": [
//!     {"code": "THERMAL_WARNING", "severity": "warning", "message": "chip0 at 51.2 C, limit 50 C"}
//!   ],
//!   "powered": true,
//!   "power_limit_watts": 30.0,
//!   "calibrated_at_unix": 1767225600,
//!   "calibration_temperature_celsius": 45.0,
//!   "message": "board ok",
//!   "output": [0.5, -1.25]
//! }
//! ```
//!
//! | key | type | required | meaning |
//! |---|---|---|---|
//! | `version` | integer | yes | schema version; only `1` exists |
//! | `identity` | object | no | `vendor`, `model`, `serial`, `firmware`: strings, each optional |
//! | `readings` | array | no | at most 1024 of `{sensor, quantity, value}` |
//! | `readings[i].sensor` | string | yes | non-empty, at most 128 bytes, no control characters |
//! | `readings[i].quantity` | string | yes | a quantity name (below), with its base unit |
//! | `readings[i].value` | number | yes | finite |
//! | `conditions` | array | no | at most 256 of `{code, severity, message}` |
//! | `conditions[i].code` | string | yes | a condition code (below) |
//! | `conditions[i].severity` | string | yes | `info`, `warning` or `critical` |
//! | `conditions[i].message` | string | no | what is wrong, with numbers; at most 4096 bytes |
//! | `powered` | bool | no | whether the device is powered; default `true` |
//! | `power_limit_watts` | number | no | power limit in force, finite, >= 0 |
//! | `calibrated_at_unix` | number | with the next | seconds since the Unix epoch of the last calibration |
//! | `calibration_temperature_celsius` | number | with the previous | temperature at that calibration |
//! | `message` | string | no | free text; for an action that failed (exit 1), why; at most 4096 bytes |
//! | `output` | array of numbers | for `matvec` | the output vector, finite values, at most 1 048 576 |
//!
//! Quantities (snake case, base units): `temperature_celsius`, `power_watts`, `energy_joules`,
//! `voltage_volts`, `current_amperes`, `fan_rpm`, `phase_error_radians`, `optical_power_watts`,
//! `conductance_drift_ratio`, `stuck_cells_ratio`, `effective_bits`, `calibration_age_seconds`,
//! `setpoint_celsius`.
//!
//! Condition codes: the names of [`ConditionCode`] as printed by the agent, e.g.
//! `THERMAL_WARNING`, `THERMAL_CRITICAL`, `POWER_OVER_LIMIT`, `CALIBRATION_STALE`,
//! `CALIBRATION_DRIFT`, `DEVICE_UNRESPONSIVE`, `DEVICE_MISSING`, `LINK_DEGRADED`,
//! `RESET_FAILED`, `DEVICE_DISABLED`, `DEVICE_ERROR` (and the rest of the list).
//!
//! Unknown keys are rejected at every level (`deny_unknown_fields`): a typo such as
//! `"reading"` must fail loudly, not silently drop every reading. `null` is a wrong type, never
//! "absent". Errors name the JSON path of the offending value, e.g. `readings[3].quantity:
//! unknown quantity "temp" (expected one of ...)`; `$` is the whole document.
//!
//! The format is the serde types below, read from a parsed `Value` (bounded nesting, no
//! panics; the input is already bounded by the runner's stdout cap) by `strict`, which names
//! the path and keeps every message short. What the types cannot say (presence, counts,
//! lengths, ranges) is checked after, in `Document::into_report`, with paths spelled alike.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, DeserializeSeed};
use serde::Deserialize;
use serde_json::{Number, Value};

use super::strict::{self, quoted, Given, Object, Shape, Strict};

use crate::model::{
    CalibrationRecord, Condition, ConditionCode, Quantity, Reading, Sample, Severity,
};

pub const SCHEMA_VERSION: u64 = 1;
pub const MAX_READINGS: usize = 1024;
pub const MAX_CONDITIONS: usize = 256;
pub const MAX_OUTPUT_VALUES: usize = 1 << 20;
pub const MAX_SENSOR_BYTES: usize = 128;
pub const MAX_TEXT_BYTES: usize = 4096;

/// A schema violation, with the JSON path of the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct SchemaError {
    pub path: String,
    pub problem: String,
}

fn err<T>(path: impl Into<String>, problem: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError {
        path: path.into(),
        problem: problem.into(),
    })
}

/// Identity fields a plugin reported; absent ones are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedIdentity {
    pub vendor: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportedReading {
    pub sensor: String,
    pub quantity: Quantity,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedCondition {
    pub code: ConditionCode,
    pub severity: Severity,
    pub message: String,
}

/// A parsed, validated plugin report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginReport {
    pub identity: Option<ReportedIdentity>,
    pub readings: Vec<ReportedReading>,
    pub conditions: Vec<ReportedCondition>,
    pub powered: Option<bool>,
    pub power_limit_watts: Option<f64>,
    pub calibration: Option<CalibrationRecord>,
    pub message: Option<String>,
    pub output: Option<Vec<f64>>,
}

impl PluginReport {
    /// The report as a [`Sample`] observed at `at`; conditions are about `subject` (the device
    /// id) and begin at `at` (the agent's condition tracker keeps the real start across polls).
    pub fn to_sample(&self, subject: &str, at: SystemTime) -> Sample {
        Sample {
            readings: self
                .readings
                .iter()
                .map(|r| Reading::new(r.sensor.clone(), r.quantity, r.value, at))
                .collect(),
            calibration: self.calibration,
            power_limit_watts: self.power_limit_watts,
            powered: self.powered.unwrap_or(true),
            conditions: self
                .conditions
                .iter()
                .map(|c| Condition::new(c.code, c.severity, subject, c.message.clone(), at))
                .collect(),
        }
    }
}

const QUANTITIES: [(Quantity, &str); 13] = [
    (Quantity::TemperatureCelsius, "temperature_celsius"),
    (Quantity::PowerWatts, "power_watts"),
    (Quantity::EnergyJoules, "energy_joules"),
    (Quantity::VoltageVolts, "voltage_volts"),
    (Quantity::CurrentAmperes, "current_amperes"),
    (Quantity::FanRpm, "fan_rpm"),
    (Quantity::PhaseErrorRadians, "phase_error_radians"),
    (Quantity::OpticalPowerWatts, "optical_power_watts"),
    (Quantity::ConductanceDriftRatio, "conductance_drift_ratio"),
    (Quantity::StuckCellsRatio, "stuck_cells_ratio"),
    (Quantity::EffectiveBits, "effective_bits"),
    (Quantity::CalibrationAgeSeconds, "calibration_age_seconds"),
    (Quantity::SetpointCelsius, "setpoint_celsius"),
];

/// Whether a plugin may report `code`: every code but those only the agent itself can know
/// (a TEC it reads over SCPI, its process watchdog, its audit log, its remediation engine, the
/// callers it refused).
fn plugin_may_report(code: ConditionCode) -> bool {
    !matches!(
        code,
        ConditionCode::TecSetpointDeviation
            | ConditionCode::ProcessZombie
            | ConditionCode::ProcessMissing
            | ConditionCode::AuditLogUnwritable
            | ConditionCode::RemediationExhausted
            | ConditionCode::AccessDenied
            | ConditionCode::ProbeFailed
            | ConditionCode::ServiceDown
            | ConditionCode::ServiceUnhealthy
            | ConditionCode::PortNotListening
            | ConditionCode::LogPattern
            | ConditionCode::HostOomKill
            | ConditionCode::HostIowaitHigh
    )
}

/// Every condition code a plugin may report, in the model's order.
fn codes() -> impl Iterator<Item = ConditionCode> {
    ConditionCode::ALL
        .into_iter()
        .filter(|c| plugin_may_report(*c))
}

/// The schema name of a quantity (`temperature_celsius`).
pub fn quantity_name(q: Quantity) -> &'static str {
    QUANTITIES
        .iter()
        .find(|(x, _)| *x == q)
        .map_or("unknown", |(_, n)| n)
}

pub fn quantity_from_name(name: &str) -> Option<Quantity> {
    QUANTITIES.iter().find(|(_, n)| *n == name).map(|(q, _)| *q)
}

pub fn condition_code_from_name(name: &str) -> Option<ConditionCode> {
    codes().find(|c| c.as_str() == name)
}

pub fn severity_from_name(name: &str) -> Option<Severity> {
    match name {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// Parses and validates a plugin's stdout.
pub fn parse_report(stdout: &[u8]) -> Result<PluginReport, SchemaError> {
    let doc: Value = match serde_json::from_slice(stdout) {
        Ok(v) => v,
        Err(e) => return err("$", format!("not a JSON document: {e}")),
    };
    parse_value(&doc)
}

/// Validates an already parsed document.
pub fn parse_value(doc: &Value) -> Result<PluginReport, SchemaError> {
    // The version first: a document of another version is likely shaped differently, and then
    // "unsupported version" is the one useful message.
    if let Some(v) = doc.get("version") {
        if let Err(e) = Strict::<Version>::new().deserialize(v) {
            return err("version", e.to_string());
        }
    }
    match strict::read::<Object<Document>>(doc) {
        Ok(Object(doc)) => doc.into_report(),
        Err((path, problem)) => Err(SchemaError { path, problem }),
    }
}

// ---- the schema as serde types ----

/// The document. Every key is optional to serde (`default`): presence is checked in
/// [`Document::into_report`], where the message can say what the key is needed for.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Document {
    version: Given<Version>,
    identity: Given<Object<IdentityDoc>>,
    readings: Given<Vec<Object<ReadingDoc>>>,
    conditions: Given<Vec<Object<ConditionDoc>>>,
    powered: Given<bool>,
    power_limit_watts: Given<f64>,
    calibrated_at_unix: Given<f64>,
    calibration_temperature_celsius: Given<f64>,
    message: Given<String>,
    output: Given<Vec<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct IdentityDoc {
    vendor: Given<String>,
    model: Given<String>,
    serial: Given<String>,
    firmware: Given<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ReadingDoc {
    sensor: Given<String>,
    quantity: Given<Quantity>,
    value: Given<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ConditionDoc {
    code: Given<ConditionCode>,
    severity: Given<Severity>,
    message: Given<String>,
}

/// The `version` key's value: only [`SCHEMA_VERSION`] is accepted.
struct Version;

// ---- the limits pass ----

impl Document {
    /// Presence, counts, lengths and ranges, then the report.
    fn into_report(self) -> Result<PluginReport, SchemaError> {
        if self.version.0.is_none() {
            return err(
                "version",
                format!("missing (this agent reads version {SCHEMA_VERSION})"),
            );
        }
        let readings = at_most(
            self.readings.0.unwrap_or_default(),
            "readings",
            MAX_READINGS,
        )?;
        let conditions = at_most(
            self.conditions.0.unwrap_or_default(),
            "conditions",
            MAX_CONDITIONS,
        )?;
        if let Some(w) = self.power_limit_watts.0.filter(|w| *w < 0.0) {
            return err(
                "power_limit_watts",
                format!("expected a number >= 0, found {w}"),
            );
        }
        Ok(PluginReport {
            identity: self.identity.0.map(|Object(i)| i.check()).transpose()?,
            readings: (readings.into_iter().enumerate())
                .map(|(i, Object(r))| r.check(&format!("readings[{i}]")))
                .collect::<Result<_, _>>()?,
            conditions: (conditions.into_iter().enumerate())
                .map(|(i, Object(c))| c.check(&format!("conditions[{i}]")))
                .collect::<Result<_, _>>()?,
            powered: self.powered.0,
            power_limit_watts: self.power_limit_watts.0,
            calibration: calibration(
                self.calibrated_at_unix.0,
                self.calibration_temperature_celsius.0,
            )?,
            message: (self.message.0)
                .map(|m| text(m, "message", MAX_TEXT_BYTES))
                .transpose()?,
            output: (self.output.0)
                .map(|o| at_most(o, "output", MAX_OUTPUT_VALUES))
                .transpose()?,
        })
    }
}

impl IdentityDoc {
    fn check(self) -> Result<ReportedIdentity, SchemaError> {
        let field = |v: Given<String>, key: &str| -> Result<String, SchemaError> {
            v.0.map_or(Ok(String::new()), |s| name(s, &format!("identity.{key}")))
        };
        Ok(ReportedIdentity {
            vendor: field(self.vendor, "vendor")?,
            model: field(self.model, "model")?,
            serial: field(self.serial, "serial")?,
            firmware: field(self.firmware, "firmware")?,
        })
    }
}

impl ReadingDoc {
    fn check(self, path: &str) -> Result<ReportedReading, SchemaError> {
        let sensor_path = format!("{path}.sensor");
        let sensor = name(required(self.sensor, &sensor_path)?, &sensor_path)?;
        if sensor.trim().is_empty() {
            return err(sensor_path, "expected a sensor name, found an empty string");
        }
        Ok(ReportedReading {
            sensor,
            quantity: required(self.quantity, &format!("{path}.quantity"))?,
            value: required(self.value, &format!("{path}.value"))?,
        })
    }
}

impl ConditionDoc {
    fn check(self, path: &str) -> Result<ReportedCondition, SchemaError> {
        let message_path = format!("{path}.message");
        Ok(ReportedCondition {
            code: required(self.code, &format!("{path}.code"))?,
            severity: required(self.severity, &format!("{path}.severity"))?,
            message: (self.message.0).map_or(Ok(String::new()), |m| {
                text(m, &message_path, MAX_TEXT_BYTES)
            })?,
        })
    }
}

fn required<T>(v: Given<T>, path: &str) -> Result<T, SchemaError> {
    v.0.map_or_else(|| err(path, "missing"), Ok)
}

fn at_most<T>(items: Vec<T>, path: &str, max: usize) -> Result<Vec<T>, SchemaError> {
    if items.len() > max {
        return err(
            path,
            format!("at most {max} entries allowed, found {}", items.len()),
        );
    }
    Ok(items)
}

fn text(s: String, path: &str, max_bytes: usize) -> Result<String, SchemaError> {
    if s.len() > max_bytes {
        return err(
            path,
            format!("at most {max_bytes} bytes allowed, found {}", s.len()),
        );
    }
    Ok(s)
}

/// A short label shown beside readings and in identity: bounded, and one line.
fn name(s: String, path: &str) -> Result<String, SchemaError> {
    let s = text(s, path, MAX_SENSOR_BYTES)?;
    if s.chars().any(char::is_control) {
        return err(path, "control characters are not allowed");
    }
    Ok(s)
}

fn calibration(
    at: Option<f64>,
    temp: Option<f64>,
) -> Result<Option<CalibrationRecord>, SchemaError> {
    const AT: &str = "calibrated_at_unix";
    const TEMP: &str = "calibration_temperature_celsius";
    let (secs, temperature_celsius) = match (at, temp) {
        (None, None) => return Ok(None),
        (Some(_), None) => return err(TEMP, format!("missing (required with {AT})")),
        (None, Some(_)) => return err(AT, format!("missing (required with {TEMP})")),
        (Some(a), Some(t)) => (a, t),
    };
    // Checked all the way: `Duration::from_secs_f64` and `SystemTime + Duration` panic on
    // overflow, and this value comes from a plugin.
    let calibrated_at = Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d));
    let Some(calibrated_at) = calibrated_at else {
        return err(
            AT,
            format!("expected seconds since 1970 (>= 0), found {secs}"),
        );
    };
    Ok(Some(CalibrationRecord {
        calibrated_at,
        temperature_celsius,
    }))
}

impl<'de> Shape<'de> for Version {
    const EXPECTED: &'static str = "version 1";
    fn number<E: de::Error>(n: Number) -> Result<Self, E> {
        match n.as_u64() {
            Some(SCHEMA_VERSION) => Ok(Version),
            _ => Err(unsupported_version(&n)),
        }
    }
    fn string<E: de::Error>(s: &str) -> Result<Self, E> {
        Err(unsupported_version(&quoted(s)))
    }
}

fn unsupported_version<E: de::Error>(v: &dyn fmt::Display) -> E {
    E::custom(format_args!(
        "unsupported version {v} (this agent reads version {SCHEMA_VERSION})"
    ))
}

impl<'de> Shape<'de> for Quantity {
    const EXPECTED: &'static str = "a string";
    fn string<E: de::Error>(s: &str) -> Result<Self, E> {
        quantity_from_name(s).ok_or_else(|| {
            let names: Vec<&str> = QUANTITIES.iter().map(|(_, n)| *n).collect();
            unknown("quantity", s, &format!("one of {}", names.join(", ")))
        })
    }
}

impl<'de> Shape<'de> for ConditionCode {
    const EXPECTED: &'static str = "a string";
    fn string<E: de::Error>(s: &str) -> Result<Self, E> {
        condition_code_from_name(s).ok_or_else(|| {
            let names: Vec<&str> = codes().map(|c| c.as_str()).collect();
            unknown("condition code", s, &format!("one of {}", names.join(", ")))
        })
    }
}

impl<'de> Shape<'de> for Severity {
    const EXPECTED: &'static str = "a string";
    fn string<E: de::Error>(s: &str) -> Result<Self, E> {
        severity_from_name(s).ok_or_else(|| unknown("severity", s, "info, warning or critical"))
    }
}

fn unknown<E: de::Error>(what: &str, found: &str, expected: &str) -> E {
    E::custom(format_args!(
        "unknown {what} {} (expected {expected})",
        quoted(found)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PluginReport, String> {
        parse_report(s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = r#"{
          "version": 1,
          "identity": {"vendor": "Intel", "model": "Kapoho Point", "serial": "KP-0042", "firmware": "2.1.0"},
          "readings": [
            {"sensor": "chip0", "quantity": "temperature_celsius", "value": 51.2},
            {"sensor": "board", "quantity": "power_watts", "value": 18.5}
          ],
          "conditions": [
            {"code": "THERMAL_WARNING", "severity": "warning", "message": "chip0 at 51.2 C, limit 50 C"}
          ],
          "powered": true,
          "power_limit_watts": 30.0,
          "calibrated_at_unix": 1767225600,
          "calibration_temperature_celsius": 45.0,
          "message": "board ok",
          "output": [0.5, -1.25]
        }"#;
        let r = parse(doc).unwrap();
        assert_eq!(r.identity.as_ref().unwrap().serial, "KP-0042");
        assert_eq!(r.readings.len(), 2);
        assert_eq!(r.readings[0].quantity, Quantity::TemperatureCelsius);
        assert_eq!(r.conditions[0].code, ConditionCode::ThermalWarning);
        assert_eq!(r.conditions[0].severity, Severity::Warning);
        assert_eq!(r.power_limit_watts, Some(30.0));
        let cal = r.calibration.unwrap();
        assert_eq!(
            cal.calibrated_at,
            UNIX_EPOCH + Duration::from_secs(1_767_225_600)
        );
        assert_eq!(r.output, Some(vec![0.5, -1.25]));

        let at = SystemTime::now();
        let s = r.to_sample("loihi-0", at);
        assert_eq!(s.get("board", Quantity::PowerWatts), Some(18.5));
        assert!(s.powered);
        assert_eq!(s.conditions[0].subject, "loihi-0");
    }

    #[test]
    fn minimal_document() {
        let r = parse(r#"{"version":1}"#).unwrap();
        assert_eq!(r, PluginReport::default());
        assert!(r.to_sample("d", SystemTime::now()).powered);
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            ("", "$: not a JSON document"),
            ("[]", "$: expected an object, found an array"),
            // serde would fill a struct from an array by position.
            ("[1]", "$: expected an object, found an array"),
            (
                r#"{"version":1,"identity":["a","b"]}"#,
                "identity: expected an object, found an array",
            ),
            // null is a wrong type, not an absent key.
            (
                r#"{"version":1,"powered":null}"#,
                "powered: expected true or false, found null",
            ),
            (
                r#"{"version":2,"readings":[1]}"#,
                "version: unsupported version 2 (this agent reads version 1)",
            ),
            (
                r#"{"version":true}"#,
                "version: expected version 1, found a boolean",
            ),
            (r#"{"version":1} x"#, "$: not a JSON document"),
            ("{}", "version: missing"),
            (r#"{"version":2}"#, "version: unsupported version 2"),
            (r#"{"version":"1"}"#, "version: unsupported version \"1\""),
            (r#"{"version":1,"reading":[]}"#, "reading: unknown key"),
            (
                r#"{"version":1,"readings":[{"sensor":"a","quantity":"power_watts","value":1},{"sensor":"a","quantity":"power_watts","value":1},{"sensor":"a","quantity":"power_watts","value":1},{"sensor":"b","quantity":"temp","value":1}]}"#,
                r#"readings[3].quantity: unknown quantity "temp""#,
            ),
            (
                r#"{"version":1,"readings":[{"sensor":"","quantity":"fan_rpm","value":1}]}"#,
                "readings[0].sensor: expected a sensor name, found an empty string",
            ),
            (
                r#"{"version":1,"readings":[{"sensor":"a","quantity":"fan_rpm","value":"1"}]}"#,
                "readings[0].value: expected a number, found a string",
            ),
            (
                r#"{"version":1,"readings":[{"sensor":"a","quantity":"fan_rpm"}]}"#,
                "readings[0].value: missing",
            ),
            (
                r#"{"version":1,"readings":[{"sensor":"a","quantity":"fan_rpm","value":1,"unit":"rpm"}]}"#,
                "readings[0].unit: unknown key",
            ),
            (
                r#"{"version":1,"readings":[{"sensor":"a","quantity":"fan_rpm","value":1e999}]}"#,
                "$: not a JSON document",
            ),
            (
                r#"{"version":1,"conditions":[{"code":"HOT","severity":"warning"}]}"#,
                r#"conditions[0].code: unknown condition code "HOT""#,
            ),
            (
                r#"{"version":1,"conditions":[{"code":"DEVICE_ERROR","severity":"fatal"}]}"#,
                r#"conditions[0].severity: unknown severity "fatal""#,
            ),
            (
                r#"{"version":1,"identity":{"vendor":"x","board":"y"}}"#,
                "identity.board: unknown key",
            ),
            (
                r#"{"version":1,"powered":"yes"}"#,
                "powered: expected true or false",
            ),
            (
                r#"{"version":1,"power_limit_watts":-1}"#,
                "power_limit_watts: expected a number >= 0",
            ),
            (
                r#"{"version":1,"calibrated_at_unix":5}"#,
                "calibration_temperature_celsius: missing (required with calibrated_at_unix)",
            ),
            (
                r#"{"version":1,"calibrated_at_unix":-5,"calibration_temperature_celsius":20}"#,
                "calibrated_at_unix: expected seconds since 1970",
            ),
            (
                r#"{"version":1,"calibrated_at_unix":1e300,"calibration_temperature_celsius":20}"#,
                "calibrated_at_unix: expected seconds since 1970",
            ),
            (
                r#"{"version":1,"output":[1,null]}"#,
                "output[1]: expected a number, found null",
            ),
        ];
        for (doc, want) in cases {
            let got = parse(doc).unwrap_err();
            assert!(
                got.starts_with(want),
                "{doc}\n  got:  {got}\n  want: {want}"
            );
        }
    }

    #[test]
    fn too_many_readings_are_rejected() {
        let one = r#"{"sensor":"s","quantity":"power_watts","value":1}"#;
        let many = vec![one; MAX_READINGS + 1].join(",");
        let got = parse(&format!(r#"{{"version":1,"readings":[{many}]}}"#)).unwrap_err();
        assert!(got.starts_with("readings: at most 1024 entries"), "{got}");
        let ok = vec![one; MAX_READINGS].join(",");
        assert_eq!(
            parse(&format!(r#"{{"version":1,"readings":[{ok}]}}"#))
                .unwrap()
                .readings
                .len(),
            MAX_READINGS
        );
    }

    #[test]
    fn every_name_round_trips() {
        for (q, name) in QUANTITIES {
            assert_eq!(quantity_from_name(name), Some(q));
            assert_eq!(quantity_name(q), name);
        }
        for c in codes() {
            assert_eq!(condition_code_from_name(c.as_str()), Some(c));
        }
        assert_eq!(codes().count(), 19, "the codes a plugin may report");
        assert_eq!(condition_code_from_name("REMEDIATION_EXHAUSTED"), None);
        assert_eq!(condition_code_from_name("ACCESS_DENIED"), None);
        assert_eq!(
            condition_code_from_name("MAINTENANCE"),
            Some(ConditionCode::Maintenance),
            "a vendor tool may know the board is in maintenance"
        );
        assert_eq!(quantity_from_name("Temperature_Celsius"), None);
    }

    #[test]
    fn long_bad_names_are_cut_in_messages() {
        let name = "q".repeat(100);
        let doc = format!(
            r#"{{"version":1,"readings":[{{"sensor":"a","quantity":"{name}","value":1}}]}}"#
        );
        let got = parse(&doc).unwrap_err();
        assert!(got.len() < 600, "{got}");
        let key = "k".repeat(5000);
        let got = parse(&format!(r#"{{"version":1,"identity":{{"{key}":1}}}}"#)).unwrap_err();
        assert!(
            got.starts_with(r#"identity["kkk"#) && got.len() < 300,
            "{got}"
        );
    }
}
