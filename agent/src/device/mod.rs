//! Devices: building each configured backend ([`backends`]), expanding discovery rules
//! ([`discovery`]), and the supervisor task that owns each device ([`supervisor`]), with the
//! known-answer probe it runs on arrays that compute ([`known_answer`]).
//!
//! The supervisor hands out two kinds of handle: [`DeviceHandle`] reads (status, identity) and
//! is shared widely; [`DeviceControl`] changes the device and is held only by
//! [`crate::action::Actions`], so every mutation takes the one recorded path.

pub mod backends;
pub mod discovery;
pub mod known_answer;
pub mod supervisor;

pub use supervisor::{DeviceAction, DeviceControl, DeviceHandle, DeviceProbe, Spawned};
