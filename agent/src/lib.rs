//! `health-agent`: the per-node daemon, as a library so that `main.rs` stays a thin shell and
//! tests can drive the pieces.
//!
//! Data flows device → [`supervisor`] (one task each, deadline on every call) → [`node`]
//! (snapshots, the main loop) → [`grpc`] (Agent API, uplink to the collector). [`host`] adds
//! the host's own health and [`procwatch`] its watched processes; [`actions`] is the single path
//! for anything that changes a device, with [`auth`] (roles), [`safety`] (limits) and [`audit`]
//! (the durable record) attached there.

pub mod actions;
pub mod audit;
pub mod auth;
pub mod backends;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod discovery;
pub mod grpc;
pub mod host;
pub mod known_answer;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod procwatch;
pub mod safety;
pub mod supervisor;
pub mod tls;
