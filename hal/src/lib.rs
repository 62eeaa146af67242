//! The hardware abstraction layer: one device model for Loihi 2 boards, SpiNNaker boards,
//! photonic chips and analog crossbar arrays, and the backends that reach them.
//!
//! - [`model`]: plain Rust types for identity, readings, conditions and health state.
//! - [`device`]: the [`Device`] trait every backend implements, and [`HalError`].
//! - [`health`]: turns a device's [`Sample`] into [`Condition`]s against [`Limits`].
//! - [`deadline`]: [`MinDeadlines`], the shortest supervisor deadlines a backend's config needs.
//!
//! Backends, each with its config type (the agent's `[device.*]` table):
//!
//! - [`sim`]: the simulated backend for all four kinds, with runtime fault injection.
//! - [`bmp`]: SpiNNaker boards through their Board Management Processor, over UDP.
//! - [`scpi`]: a photonic bench of SCPI instruments, over TCP.
//! - [`plugin`]: a site's vendor tool run as a bounded command that answers in JSON.
//! - [`sysfs`]: Linux hwmon, thermal zones, power supplies, powercap and PCI functions.
//! - [`loihi`]: a Loihi 2 board as its host exposes it (sysfs, reachability, SLURM, vendor tool).
//!
//! The agent drives devices only through [`Device`]; it never sees a backend's internals.
//!
//! **Architecture Invariant:** no protobuf, no gRPC and no agent types here. The agent converts
//! these types at its gRPC boundary.
//!
//! **Architecture Invariant:** every wait on real hardware is bounded by its backend, on
//! purpose: a BMP request's timeout and retries, an SCPI exchange's timeout, a plugin run's
//! deadline, a sysfs file's deadline (a blocked driver call cannot be cancelled, so the backend
//! must stop feeding it threads), a Loihi host's connect and `sinfo` deadlines. That is how a
//! failure can name what timed out. The agent's supervisor still wraps every call in a deadline
//! of its own, at least the backend's [`MinDeadlines`], and must survive a call that never
//! returns: the simulator's `hang` fault blocks forever on purpose.

pub mod bmp;
pub mod deadline;
pub mod device;
pub mod health;
pub mod loihi;
pub mod model;
pub mod plugin;
pub mod scpi;
pub mod sim;
pub mod sysfs;

pub use deadline::MinDeadlines;
pub use device::{ArrayWeights, Device, FaultInjector, HalError};
pub use health::{ConditionTracker, Limits};
pub use model::*;
