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
//! Unknown keys are rejected at every level, as `deny_unknown_fields` would: a typo such as
//! `"reading"` must fail loudly, not silently drop every reading. Errors name the JSON path of
//! the offending value, e.g. `readings[3].quantity: unknown quantity "temp" (expected one of
//! ...)`; `$` is the whole document.
//!
//! The document is parsed with serde_json into a `Value` (bounded nesting, no panics) and then
//! walked by hand, because serde's derived errors give a line and column but not the path, and
//! the path is what a plugin author needs. The input is already bounded by the runner's stdout
//! cap, so building the `Value` first costs at most that much memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

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

/// Every condition code a plugin may report. Kept beside the parser (the model has no list);
/// a unit test checks each name round-trips through `as_str`.
const CODES: [ConditionCode; 18] = [
    ConditionCode::ThermalWarning,
    ConditionCode::ThermalCritical,
    ConditionCode::PowerOverLimit,
    ConditionCode::CalibrationStale,
    ConditionCode::CalibrationDrift,
    ConditionCode::DeviceUnresponsive,
    ConditionCode::DeviceMissing,
    ConditionCode::LinkDegraded,
    ConditionCode::ResetFailed,
    ConditionCode::IllConditioned,
    ConditionCode::NotConverging,
    ConditionCode::PrecisionInsufficient,
    ConditionCode::HostMemoryHigh,
    ConditionCode::DiskFull,
    ConditionCode::ProcessStuck,
    ConditionCode::HostLoadHigh,
    ConditionCode::DeviceDisabled,
    ConditionCode::DeviceError,
];

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
    CODES.iter().copied().find(|c| c.as_str() == name)
}

pub fn severity_from_name(name: &str) -> Option<Severity> {
    match name {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// Quotes a string from the input for an error message, cut so an error stays one short line.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() > MAX_CHARS {
        format!("{:?}...", s.chars().take(MAX_CHARS).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `path.key`; a key that is empty or not a plain name is shown quoted (`$[""]`,
/// `readings[0]["a b"]`, at most 40 characters of it), so the path always shows which key
/// (an empty key made an empty path, found by fuzzing).
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        let shown: String = key.chars().take(40).collect();
        let more = if shown.len() < key.len() { "..." } else { "" };
        return format!("{path}[{shown:?}{more}]");
    }
    if path == "$" {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Rejects keys outside `allowed`.
fn only_keys(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), SchemaError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => err(
            join(path, k),
            format!("unknown key (expected one of {})", allowed.join(", ")),
        ),
        None => Ok(()),
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, SchemaError> {
    v.as_object().map_or_else(
        || err(path, format!("expected an object, found {}", type_name(v))),
        Ok,
    )
}

fn as_array<'a>(v: &'a Value, path: &str, max: usize) -> Result<&'a Vec<Value>, SchemaError> {
    let a = v.as_array().map_or_else(
        || err(path, format!("expected an array, found {}", type_name(v))),
        Ok,
    )?;
    if a.len() > max {
        return err(
            path,
            format!("at most {max} entries allowed, found {}", a.len()),
        );
    }
    Ok(a)
}

fn as_str<'a>(v: &'a Value, path: &str, max_bytes: usize) -> Result<&'a str, SchemaError> {
    let s = v.as_str().map_or_else(
        || err(path, format!("expected a string, found {}", type_name(v))),
        Ok,
    )?;
    if s.len() > max_bytes {
        return err(
            path,
            format!("at most {max_bytes} bytes allowed, found {}", s.len()),
        );
    }
    Ok(s)
}

fn as_finite(v: &Value, path: &str) -> Result<f64, SchemaError> {
    // JSON has no NaN or infinity, and serde_json rejects numbers out of f64 range, but a
    // check here keeps the guarantee independent of the parser's settings.
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(x) => err(path, format!("expected a finite number, found {x}")),
        None => err(path, format!("expected a number, found {}", type_name(v))),
    }
}

fn as_bool(v: &Value, path: &str) -> Result<bool, SchemaError> {
    v.as_bool().map_or_else(
        || {
            err(
                path,
                format!("expected true or false, found {}", type_name(v)),
            )
        },
        Ok,
    )
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
    const TOP: [&str; 10] = [
        "version",
        "identity",
        "readings",
        "conditions",
        "powered",
        "power_limit_watts",
        "calibrated_at_unix",
        "calibration_temperature_celsius",
        "message",
        "output",
    ];
    let obj = as_object(doc, "$")?;
    only_keys(obj, "$", &TOP)?;

    match obj.get("version") {
        None => {
            return err(
                "version",
                format!("missing (this agent reads version {SCHEMA_VERSION})"),
            )
        }
        Some(v) => match v.as_u64() {
            Some(SCHEMA_VERSION) => {}
            _ => {
                return err(
                    "version",
                    format!("unsupported version {v} (this agent reads version {SCHEMA_VERSION})"),
                )
            }
        },
    }

    let mut report = PluginReport::default();
    if let Some(v) = obj.get("identity") {
        report.identity = Some(parse_identity(v)?);
    }
    if let Some(v) = obj.get("readings") {
        let items = as_array(v, "readings", MAX_READINGS)?;
        report.readings = items
            .iter()
            .enumerate()
            .map(|(i, r)| parse_reading(r, &format!("readings[{i}]")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = obj.get("conditions") {
        let items = as_array(v, "conditions", MAX_CONDITIONS)?;
        report.conditions = items
            .iter()
            .enumerate()
            .map(|(i, c)| parse_condition(c, &format!("conditions[{i}]")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = obj.get("powered") {
        report.powered = Some(as_bool(v, "powered")?);
    }
    if let Some(v) = obj.get("power_limit_watts") {
        let w = as_finite(v, "power_limit_watts")?;
        if w < 0.0 {
            return err(
                "power_limit_watts",
                format!("expected a number >= 0, found {w}"),
            );
        }
        report.power_limit_watts = Some(w);
    }
    report.calibration = parse_calibration(obj)?;
    if let Some(v) = obj.get("message") {
        report.message = Some(as_str(v, "message", MAX_TEXT_BYTES)?.to_string());
    }
    if let Some(v) = obj.get("output") {
        let items = as_array(v, "output", MAX_OUTPUT_VALUES)?;
        report.output = Some(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| as_finite(x, &format!("output[{i}]")))
                .collect::<Result<_, _>>()?,
        );
    }
    Ok(report)
}

fn parse_identity(v: &Value) -> Result<ReportedIdentity, SchemaError> {
    const KEYS: [&str; 4] = ["vendor", "model", "serial", "firmware"];
    let obj = as_object(v, "identity")?;
    only_keys(obj, "identity", &KEYS)?;
    let field = |k: &str| -> Result<String, SchemaError> {
        match obj.get(k) {
            None => Ok(String::new()),
            Some(v) => {
                let path = format!("identity.{k}");
                let s = as_str(v, &path, MAX_SENSOR_BYTES)?;
                if s.chars().any(char::is_control) {
                    return err(path, "control characters are not allowed");
                }
                Ok(s.to_string())
            }
        }
    };
    Ok(ReportedIdentity {
        vendor: field("vendor")?,
        model: field("model")?,
        serial: field("serial")?,
        firmware: field("firmware")?,
    })
}

fn parse_reading(v: &Value, path: &str) -> Result<ReportedReading, SchemaError> {
    let obj = as_object(v, path)?;
    only_keys(obj, path, &["sensor", "quantity", "value"])?;
    let required = |k: &str| obj.get(k).map_or_else(|| err(join(path, k), "missing"), Ok);

    let sensor_path = join(path, "sensor");
    let sensor = as_str(required("sensor")?, &sensor_path, MAX_SENSOR_BYTES)?;
    if sensor.trim().is_empty() {
        return err(sensor_path, "expected a sensor name, found an empty string");
    }
    if sensor.chars().any(char::is_control) {
        return err(sensor_path, "control characters are not allowed");
    }

    let q_path = join(path, "quantity");
    let name = as_str(required("quantity")?, &q_path, MAX_SENSOR_BYTES)?;
    let Some(quantity) = quantity_from_name(name) else {
        let names: Vec<&str> = QUANTITIES.iter().map(|(_, n)| *n).collect();
        return err(
            q_path,
            format!(
                "unknown quantity {} (expected one of {})",
                quoted(name),
                names.join(", ")
            ),
        );
    };

    let value = as_finite(required("value")?, &join(path, "value"))?;
    Ok(ReportedReading {
        sensor: sensor.to_string(),
        quantity,
        value,
    })
}

fn parse_condition(v: &Value, path: &str) -> Result<ReportedCondition, SchemaError> {
    let obj = as_object(v, path)?;
    only_keys(obj, path, &["code", "severity", "message"])?;
    let required = |k: &str| obj.get(k).map_or_else(|| err(join(path, k), "missing"), Ok);

    let code_path = join(path, "code");
    let name = as_str(required("code")?, &code_path, MAX_SENSOR_BYTES)?;
    let Some(code) = condition_code_from_name(name) else {
        let names: Vec<&str> = CODES.iter().map(|c| c.as_str()).collect();
        return err(
            code_path,
            format!(
                "unknown condition code {} (expected one of {})",
                quoted(name),
                names.join(", ")
            ),
        );
    };

    let sev_path = join(path, "severity");
    let name = as_str(required("severity")?, &sev_path, MAX_SENSOR_BYTES)?;
    let Some(severity) = severity_from_name(name) else {
        return err(
            sev_path,
            format!(
                "unknown severity {} (expected info, warning or critical)",
                quoted(name)
            ),
        );
    };

    let message = match obj.get("message") {
        Some(m) => as_str(m, &join(path, "message"), MAX_TEXT_BYTES)?.to_string(),
        None => String::new(),
    };
    Ok(ReportedCondition {
        code,
        severity,
        message,
    })
}

fn parse_calibration(obj: &Map<String, Value>) -> Result<Option<CalibrationRecord>, SchemaError> {
    const AT: &str = "calibrated_at_unix";
    const TEMP: &str = "calibration_temperature_celsius";
    let (at, temp) = match (obj.get(AT), obj.get(TEMP)) {
        (None, None) => return Ok(None),
        (Some(_), None) => return err(TEMP, format!("missing (required with {AT})")),
        (None, Some(_)) => return err(AT, format!("missing (required with {TEMP})")),
        (Some(a), Some(t)) => (a, t),
    };
    let secs = as_finite(at, AT)?;
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
        temperature_celsius: as_finite(temp, TEMP)?,
    }))
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
        for c in CODES {
            assert_eq!(condition_code_from_name(c.as_str()), Some(c));
        }
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
    }
}
