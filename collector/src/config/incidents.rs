//! The `[incidents]` table: when an incident is over. See `incidents.rs` for how incidents
//! are built from the history.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::de::duration_within;
use super::Bounds;

const DEFAULT_CLOSE_AFTER: Duration = Duration::from_secs(5 * 60);
const CLOSE_AFTER_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 24 * 3600),
};

/// Every key of the `[incidents]` table.
pub(super) const INCIDENTS_KEYS: [&str; 1] = ["close_after"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// An incident closes once every alert of its node has stayed resolved this long; an
    /// alert firing again sooner continues it.
    #[serde(deserialize_with = "close_after")]
    pub close_after: Duration,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            close_after: DEFAULT_CLOSE_AFTER,
        }
    }
}

fn close_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &CLOSE_AFTER_BOUNDS)
}
