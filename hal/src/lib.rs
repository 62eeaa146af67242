//! The hardware abstraction layer: one device model for Loihi 2 boards, SpiNNaker boards,
//! photonic chips and analog crossbar arrays, and the backends that reach them.
//!
//! - [`model`]: plain Rust types for identity, readings, conditions and health state.
//! - [`device`]: the [`Device`] trait every backend implements, and [`HalError`].
//! - [`health`]: turns a device's [`Sample`] into [`Condition`]s against [`Limits`].
//! - [`sim`]: the simulated backend for all four kinds, with runtime fault injection.
//!
//! The agent drives devices only through [`Device`]; it never sees a backend's internals.
//!
//! **Architecture Invariant:** no protobuf, no gRPC and no agent types here. The agent converts
//! these types at its gRPC boundary.
//!
//! **Architecture Invariant:** the HAL sets no deadlines of its own on reads; the agent's
//! supervisor wraps every call in one. A backend may block forever (the `hang` fault does so on
//! purpose) and the agent must survive it.

pub mod bmp;
pub mod device;
pub mod health;
pub mod loihi;
pub mod model;
pub mod plugin;
pub mod scpi;
pub mod sim;
pub mod sysfs;

pub use device::{ArrayWeights, Device, FaultInjector, HalError};
pub use health::{ConditionTracker, Limits};
pub use model::*;
