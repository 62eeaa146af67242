//! The `[priorities]` table of `collector.toml`: which priority (P0..P3) an alert gets and how
//! long each priority may fire before it is escalated (see `crate::priority` for the rules).
//!
//! ```toml
//! [priorities]
//! escalate_after = { P0 = "15m", P1 = "30m", P2 = "4h", P3 = "never" }
//!
//! [[priorities.rule]]
//! code = "DEVICE_ERROR"      # required: a condition code
//! severity = "critical"      # optional: "warning" or "critical"
//! kind = "loihi2"            # optional: a device kind
//! priority = "P1"            # required: P0..P3
//! ```
//!
//! Each entry is read from a loose `toml::Value` and checked here so every error names the
//! entry and the key within it, in the file's usual "expected ..., found ..." form.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use super::de::{duration_within, quoted, Found};
use super::Bounds;
use crate::priority::{
    device_kind, device_kind_names, Priority, PriorityMap, PriorityRule, DEFAULT_ESCALATE_AFTER,
};
use health_proto::v1::{ConditionCode, Severity};

/// Every key of the `[priorities]` table.
pub const PRIORITIES_KEYS: [&str; 2] = ["escalate_after", "rule"];
/// Every key of one `[[priorities.rule]]`.
const RULE_KEYS: [&str; 4] = ["code", "severity", "kind", "priority"];

const ESCALATE_AFTER_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 24 * 3600),
};

/// The `[priorities]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrioritiesConfig {
    /// Rules over the defaults, in file order (no two with the same code, severity and kind).
    #[serde(deserialize_with = "priority_rules")]
    pub rule: Vec<(PriorityRule, Priority)>,
    /// Per priority, how long it fires before it escalates; `None`: never. Written entries
    /// replace the defaults one by one.
    #[serde(deserialize_with = "escalate_after")]
    pub escalate_after: BTreeMap<Priority, Option<Duration>>,
}

impl Default for PrioritiesConfig {
    fn default() -> Self {
        PrioritiesConfig {
            rule: Vec::new(),
            escalate_after: DEFAULT_ESCALATE_AFTER.into_iter().collect(),
        }
    }
}

impl PrioritiesConfig {
    /// The map the alert book uses.
    pub fn map(&self) -> PriorityMap {
        PriorityMap::new(
            self.rule.iter().cloned(),
            self.escalate_after.iter().map(|(p, after)| (*p, *after)),
        )
    }
}

fn priority_rules<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(PriorityRule, Priority)>, D::Error> {
    const EXPECTED: &str = "expected [[priorities.rule]] tables such as \
        { code = \"DEVICE_ERROR\", severity = \"critical\", kind = \"loihi2\", priority = \"P1\" }";
    let toml::Value::Array(items) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(EXPECTED));
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut seen = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        // 1-based, as a person counts the tables in the file.
        let at = index + 1;
        let toml::Value::Table(table) = item else {
            return Err(D::Error::custom(format!(
                "rule {at}: {EXPECTED}, found {}",
                Found(item)
            )));
        };
        let rule = rule_of(table).map_err(|e| D::Error::custom(format!("rule {at}: {e}")))?;
        if !seen.insert(rule.0.clone()) {
            return Err(D::Error::custom(format!(
                "rule {at}: expected one rule per code, severity and kind, found a second for {}",
                describe(&rule.0)
            )));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// One rule table, or "<key>: expected ..., found ...".
fn rule_of(table: &toml::Table) -> Result<(PriorityRule, Priority), String> {
    if let Some(unknown) = table.keys().find(|key| !RULE_KEYS.contains(&key.as_str())) {
        return Err(format!(
            "{unknown}: unknown key, expected one of: {}",
            RULE_KEYS.join(", ")
        ));
    }
    let text = |key: &str| -> Result<Option<&str>, String> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(format!("{key}: expected a string, found {}", Found(other))),
        }
    };
    let code = match text("code")? {
        None => {
            return Err("code: expected a condition code such as DEVICE_ERROR, found none".into())
        }
        Some(code) => match ConditionCode::from_str_name(code) {
            Some(ConditionCode::Unspecified) | None => {
                return Err(format!(
                    "code: expected a condition code such as DEVICE_ERROR, found {}",
                    quoted(code)
                ))
            }
            Some(_) => code.to_string(),
        },
    };
    let severity = match text("severity")? {
        None => None,
        Some("warning") => Some(Severity::Warning as i32),
        Some("critical") => Some(Severity::Critical as i32),
        Some(other) => {
            return Err(format!(
                "severity: expected \"warning\" or \"critical\" (only those alert), found {}",
                quoted(other)
            ))
        }
    };
    let kind = match text("kind")? {
        None => None,
        Some(name) => Some(device_kind(name).ok_or_else(|| {
            format!(
                "kind: expected a device kind, one of {}, found {}",
                device_kind_names().join(", "),
                quoted(name)
            )
        })?),
    };
    let priority = match text("priority")? {
        None => return Err("priority: expected one of P0, P1, P2, P3, found none".into()),
        Some(p) => Priority::parse(p).ok_or_else(|| {
            format!(
                "priority: expected one of P0, P1, P2, P3, found {}",
                quoted(p)
            )
        })?,
    };
    Ok((
        PriorityRule {
            code,
            severity,
            kind,
        },
        priority,
    ))
}

fn describe(rule: &PriorityRule) -> String {
    let mut text = format!("code {}", rule.code);
    if let Some(severity) = rule.severity.and_then(|s| Severity::try_from(s).ok()) {
        text.push_str(&format!(
            ", severity {}",
            severity
                .as_str_name()
                .trim_start_matches("SEVERITY_")
                .to_ascii_lowercase()
        ));
    }
    if rule.kind.is_some() {
        text.push_str(", the same kind");
    }
    text
}

/// `escalate_after = { P0 = "15m", P3 = "never" }`: written priorities replace their defaults.
fn escalate_after<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Priority, Option<Duration>>, D::Error> {
    let toml::Value::Table(table) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(
            "expected a table of priorities to durations, such as { P0 = \"15m\", P3 = \"never\" }",
        ));
    };
    let mut times = PrioritiesConfig::default().escalate_after;
    for (name, value) in table {
        let Some(priority) = Priority::parse(&name) else {
            return Err(D::Error::custom(format!(
                "expected one of P0, P1, P2, P3, found {}",
                quoted(&name)
            )));
        };
        let after = match &value {
            toml::Value::String(s) if s == "never" => None,
            _ => Some(duration_within(value, &ESCALATE_AFTER_BOUNDS).map_err(
                |e: toml::de::Error| {
                    D::Error::custom(format!("{name}: {} (or \"never\")", e.message()))
                },
            )?),
        };
        times.insert(priority, after);
    }
    Ok(times)
}
