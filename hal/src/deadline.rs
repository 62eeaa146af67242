//! [`MinDeadlines`]: the shortest read and action deadlines a backend needs from the agent's
//! supervisor, stated by each backend's config from its own protocol timeouts. A supervisor
//! deadline shorter than these would cut the backend off before it can say what is wrong (and,
//! for a power cycle or a PCI remove/rescan, half-way through the action).

use std::time::Duration;

/// The shortest deadlines a device's reads and actions need; see each backend config's
/// `min_deadlines`. Zero means "no floor".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MinDeadlines {
    /// For one [`crate::Device::read`].
    pub read: Duration,
    /// For one reset, power cycle, calibration, power limit or enable/disable.
    pub action: Duration,
}

impl MinDeadlines {
    /// Added to what a backend's own timeouts add up to: the supervisor's deadline must also
    /// cover scheduling, process start-up and the backend's bookkeeping around its waits, so a
    /// backend that times out on its own gets to report that before the supervisor cancels it.
    pub const SLACK: Duration = Duration::from_millis(500);

    /// No floor: a backend without waits of its own (the simulator).
    pub const NONE: MinDeadlines = MinDeadlines {
        read: Duration::ZERO,
        action: Duration::ZERO,
    };

    /// `read` and `action` as a backend's timeouts add them up, each plus [`Self::SLACK`].
    pub fn with_slack(read: Duration, action: Duration) -> MinDeadlines {
        MinDeadlines {
            read: read.saturating_add(Self::SLACK),
            action: action.saturating_add(Self::SLACK),
        }
    }
}
