//! `health-agent`: the per-node daemon, as a library so that `main.rs` stays a thin shell and
//! tests can drive the pieces.
//!
//! Data flows device → [`device`] (a supervisor task each, deadline on every call) → [`node`]
//! (snapshots of [`model`] types, the main loop) → [`wire`] (the Agent API, `/metrics`, and
//! the uplink to the collector: the only protobuf-aware code). [`host`] adds the host's own
//! health and its watched processes, [`probe`] the solver probe's findings. [`action`] is the
//! single path for anything that changes a device or a process, with [`auth`] (roles) and
//! [`audit`] (the durable record) attached there. [`maintenance`] holds the operators'
//! maintenance windows, [`denied`] the refused callers behind ACCESS_DENIED; the node shows
//! both. [`daemon`] wires it all and stops it once.

pub mod action;
pub mod audit;
pub mod auth;
pub mod config;
pub mod daemon;
pub mod denied;
pub mod device;
pub mod host;
pub mod maintenance;
pub mod model;
pub mod node;
pub mod probe;
pub mod remediation;
pub mod wire;
