//! SCPI over raw TCP for the photonic bench (spec: shared/specs/scpi-instruments.md).
//!
//! - [`wire`]: pure parsing of replies (numbers, `*IDN?`, error-queue entries, booleans).
//! - [`client`]: [`ScpiClient`], one instrument over TCP, bounded in time and line length,
//!   draining the error queue after every command.
//! - [`mod@bench`]: [`PhotonicBench`], the [`crate::Device`] built from a TEC controller, an
//!   optional power meter and an optional laser.
//! - [`config`]: [`ScpiBenchConfig`], the agent's `[device.scpi]` table.
//! - [`power_limit`]: what the bench's power limit is (TEC current limit x the module's
//!   V_max) and setting it.
//! - [`sim`]: [`ScpiBenchSimulator`], the same three instruments simulated on loopback over
//!   one physical model ([`sim_model`], commands in [`sim_instruments`]), so the default path
//!   runs the real client.
//!
//! **Architecture Invariant:** the bench talks to the simulator only over TCP, through the same
//! client as to real instruments; the one shortcut is the fault handle.

pub mod bench;
pub mod client;
pub mod config;
pub mod line;
pub mod power_limit;
pub mod sim;
pub mod sim_instruments;
pub mod sim_model;
pub mod wire;

pub use bench::PhotonicBench;
pub use client::{Exchange, ScpiClient};
pub use config::ScpiBenchConfig;
pub use sim::{ScpiBenchSimulator, ScpiSimOptions, SimSnapshot};
