//! SpiNNaker boards through their Board Management Processor, over UDP
//! (spec: shared/specs/spinnaker-bmp.md).
//!
//! - [`wire`]: pure encoding of SCP requests and parsing of replies, CMD_VER and BMP_INFO ADC.
//! - [`client`]: [`BmpClient`], one BMP over UDP: seq matching, retries, the slow power-on.
//! - [`board`]: [`BmpBoard`], the [`crate::Device`] for one board in a frame.
//! - [`config`]: [`BmpConfig`], the agent's `[device.bmp]` table.
//! - [`sim`]: [`BmpSimulator`], a frame of simulated boards behind a BMP on a UDP socket (the
//!   firmware's behaviour is in [`sim_frame`]), so the default path runs the real wire code.
//!
//! **Architecture Invariant:** the board talks to the simulator only over UDP, through the same
//! client as to a real BMP; the one shortcut is the fault handle.

pub mod board;
pub mod client;
pub mod config;
pub mod sim;
pub mod sim_frame;
pub mod wire;

pub use board::BmpBoard;
pub use client::{BmpClient, ClientOptions, ClientStats, RetryPolicy};
pub use config::BmpConfig;
pub use sim::{BmpSimOptions, BmpSimulator};
