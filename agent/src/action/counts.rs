//! Finished actions counted by device, kind and outcome, for `/metrics`: kept by the action
//! path, rendered by `wire::metrics`, so the action path knows nothing of the exposition
//! format.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::ActionRecord;

/// Finished actions by (device, action kind, outcome). Kinds and outcomes are a fixed set and
/// devices are the configured ones (a request naming an unknown device counts as `unknown`),
/// so a client cannot grow this without bound.
#[derive(Debug, Default)]
pub struct ActionCounts(Mutex<BTreeMap<(String, String, &'static str), u64>>);

impl ActionCounts {
    pub fn record(&self, record: &ActionRecord, device_known: bool) {
        let device = if device_known {
            record.device_id.clone()
        } else {
            "unknown".to_string()
        };
        // "set-power-limit 120W" → "set-power-limit": the argument is not a label.
        let kind = record
            .action
            .split_whitespace()
            .next()
            .unwrap_or("unknown")
            .to_string();
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *counts
            .entry((device, kind, record.outcome.as_str()))
            .or_insert(0) += 1;
    }

    pub fn copy(&self) -> Vec<((String, String, &'static str), u64)> {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}
