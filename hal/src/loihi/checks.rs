//! The host-side checks of a Loihi 2 board, run together: board-host reachability and, if
//! configured, the board's SLURM state. The composed Loihi 2 backend adds their conditions to
//! the sample it reads from sysfs.
//!
//! Both checks run concurrently, each under its own deadline, so the whole costs at most the
//! longer of the two. A failure of `sinfo` itself (controller unreachable, tool missing) is not
//! the board's fault, but it hides the board's scheduling state, so it shows as a warning.

use std::time::SystemTime;

use crate::device::HalError;
use crate::loihi::config::Loihi2Config;
use crate::loihi::reachability::{board_reachable, Reachability};
use crate::loihi::slurm::{node_state, NodeState};
use crate::model::{Condition, ConditionCode, Severity};

#[derive(Debug, Clone, PartialEq)]
pub struct HostChecks {
    pub reachability: Reachability,
    /// `None` when no `slurm_node` is configured.
    pub slurm: Option<Result<NodeState, HalError>>,
    /// What the two mean for the board, about `subject`.
    pub conditions: Vec<Condition>,
}

/// Runs both checks for the board `subject` (its device id).
pub async fn host_checks(cfg: &Loihi2Config, subject: &str) -> HostChecks {
    let reach = board_reachable(&cfg.board_host, cfg.reach_deadline());
    let slurm = async {
        match &cfg.slurm_node {
            Some(node) => Some(node_state(&cfg.sinfo, node, cfg.sinfo_deadline()).await),
            None => None,
        }
    };
    let (reachability, slurm) = tokio::join!(reach, slurm);

    let now = SystemTime::now();
    let mut conditions: Vec<Condition> = reachability.condition(subject, now).into_iter().collect();
    match &slurm {
        Some(Ok(state)) => conditions.extend(state.condition(subject, now)),
        Some(Err(e)) => conditions.push(Condition::new(
            ConditionCode::DeviceError,
            Severity::Warning,
            subject,
            format!("SLURM state of the board unknown: {e}"),
            now,
        )),
        None => {}
    }
    HostChecks {
        reachability,
        slurm,
        conditions,
    }
}
