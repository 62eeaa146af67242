//! What one sysfs source (an hwmon chip, a thermal zone, a power supply, a RAPL zone, a PCI
//! function) hands back from one read, and the rules for turning failures into conditions.
//!
//! A source reports per file: one unreadable sensor must not hide the others, so file
//! failures travel in [`SourceReport::errors`] beside the readings. A source fails as a whole
//! (an `Err` from its `read`) only when its directory is gone or none of its files could be
//! read.

use std::time::SystemTime;

use crate::device::HalError;
use crate::model::{Condition, ConditionCode, Reading, Severity};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceReport {
    pub readings: Vec<Reading>,
    /// Conditions the source detected itself (a trip point crossed, a degraded link, AER
    /// errors).
    pub conditions: Vec<Condition>,
    /// Files that could not be read this time; the rest of the source still reported.
    pub errors: Vec<HalError>,
    /// A power limit in force (hwmon `powerK_cap`, RAPL `constraint_0_power_limit_uw`).
    pub power_limit_watts: Option<f64>,
    /// Whether the supply is online (power_supply `online`).
    pub powered: Option<bool>,
    /// power_supply `status` text (`Charging`, `Full`, `Unknown` ...), for backends that want it.
    pub status: Option<String>,
}

/// How bad an error is for choosing which one stands for several: the device being gone
/// explains everything else, a blocked driver explains more than a single failed access.
fn rank(e: &HalError) -> u8 {
    match e {
        HalError::Vanished(_) => 5,
        HalError::Timeout(_) => 4,
        HalError::Io(_) => 3,
        HalError::Protocol(_) => 2,
        HalError::Failed(_) => 1,
        HalError::Unsupported(_) | HalError::InvalidArgument(_) => 0,
    }
}

/// One error standing for several: the worst kind, with every message joined so nothing is
/// lost. `None` for an empty list.
pub fn worst_of(errors: &[HalError]) -> Option<HalError> {
    let worst = errors.iter().max_by_key(|e| rank(e))?;
    if errors.len() == 1 {
        return Some(worst.clone());
    }
    let joined = errors.iter().map(message_of).collect::<Vec<_>>().join("; ");
    Some(with_message(worst, joined))
}

/// The message inside an error, without the variant's prefix.
pub fn message_of(e: &HalError) -> String {
    match e {
        HalError::Vanished(m)
        | HalError::Unsupported(m)
        | HalError::Failed(m)
        | HalError::Protocol(m)
        | HalError::InvalidArgument(m)
        | HalError::Timeout(m)
        | HalError::Io(m) => m.clone(),
    }
}

/// The same kind of error with another message.
pub fn with_message(e: &HalError, m: String) -> HalError {
    match e {
        HalError::Vanished(_) => HalError::Vanished(m),
        HalError::Unsupported(_) => HalError::Unsupported(m),
        HalError::Failed(_) => HalError::Failed(m),
        HalError::Protocol(_) => HalError::Protocol(m),
        HalError::InvalidArgument(_) => HalError::InvalidArgument(m),
        HalError::Timeout(_) => HalError::Timeout(m),
        HalError::Io(_) => HalError::Io(m),
    }
}

/// The condition for a file or source that failed while the device as a whole still
/// reported. A vanished part is critical (a piece of the device is gone); anything else is a
/// warning, since the next poll may well succeed.
pub fn error_condition(subject: &str, source: &str, e: &HalError, now: SystemTime) -> Condition {
    let severity = match e {
        HalError::Vanished(_) => Severity::Critical,
        _ => Severity::Warning,
    };
    Condition::new(
        ConditionCode::DeviceError,
        severity,
        subject,
        format!("{source}: {e}"),
        now,
    )
}

/// The outcome of a source whose files were read one by one: the report if anything at all
/// was read, else the worst of its errors.
pub fn finish(report: SourceReport, attempted: usize) -> Result<SourceReport, HalError> {
    if attempted > 0 && report.errors.len() >= attempted {
        if let Some(e) = worst_of(&report.errors) {
            return Err(e);
        }
    }
    Ok(report)
}
