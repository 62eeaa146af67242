//! The Loihi 2 host backend's pieces that are not sysfs.
//!
//! Intel's `nx_driver_server` protocol and NxSDK are not public, so a Loihi 2 board is watched
//! through what its host really exposes (see `shared/specs/loihi2-and-sysfs.md`):
//!
//! - temperatures and power: hwmon and power-supply energy counters, read by the sysfs
//!   backend ([`crate::sysfs`]), named by [`Loihi2Config::hwmon`] and
//!   [`Loihi2Config::power_supply`];
//! - [`reachability`]: whether the board host answers on `nx_driver_server`'s port;
//! - [`slurm`]: the board's state in SLURM (`sinfo`), where boards are scheduled through it;
//! - [`checks`]: both of those at once, as conditions;
//! - the site's vendor tool for reset and calibration: a [`crate::plugin::VendorTool`] from
//!   [`Loihi2Config::vendor`].
//!
//! [`config`] holds [`Loihi2Config`]; [`host`] composes the `Device` ([`Loihi2Host`]): sysfs
//! sample + host checks + vendor actions.

pub mod checks;
pub mod config;
pub mod host;
pub mod reachability;
pub mod slurm;

pub use checks::{host_checks, HostChecks};
pub use config::Loihi2Config;
pub use host::Loihi2Host;
pub use reachability::{board_reachable, Reachability};
pub use slurm::{node_state, parse_sinfo, parse_state, BaseState, NodeState, StateFlag};
