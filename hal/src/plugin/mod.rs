//! Vendor-command plugins: a site's own tool, run under a deadline, answering in JSON on stdout.
//!
//! For hardware whose protocol is not public (a Loihi 2 board behind Intel's `nx_driver_server`)
//! or not worth a native backend, a site wraps its vendor tool in a small program that prints the
//! [`schema`] and follows node-problem-detector's exit codes (0 OK, 1 problem, other = the tool
//! failed). The agent runs it like any backend, behind [`crate::Device`].
//!
//! - [`runner`]: one bounded run: new process group, cleared environment, capped output,
//!   deadline, the group killed on timeout and when the call is dropped.
//! - [`schema`]: the JSON on stdout, documented, and its strict parser (errors name the path).
//! - `strict`: serde reading of JSON values whose errors name the path and stay short.
//! - [`config`]: [`PluginConfig`], the operations a site configures (they are the capabilities).
//! - [`tool`]: [`VendorTool`], the operations with exit codes and JSON mapped to HAL results.
//! - [`device`]: [`PluginDevice`], a [`crate::Device`] made of a tool and a cached identity.

pub mod config;
pub mod device;
pub mod runner;
pub mod schema;
mod strict;
pub mod tool;

pub use config::{Operation, PluginConfig};
pub use device::PluginDevice;
pub use runner::{CommandOutput, VendorCommand, Verdict};
pub use schema::{parse_report, PluginReport, ReportedIdentity, SchemaError};
pub use tool::{ToolReading, VendorTool};
