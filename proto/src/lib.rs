//! The `health.v1` wire contract: generated prost messages and tonic clients/servers.
//!
//! Nothing else lives here. Conversions between these types and the plain Rust types of
//! `health-hal` are done at the gRPC boundary of the agent and the collector, not here.
//!
//! **Architecture Invariant:** this crate depends on no other crate of the workspace.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("health.v1");
}

/// Encoded `FileDescriptorSet` of `health.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/health_v1_descriptor.bin"));
