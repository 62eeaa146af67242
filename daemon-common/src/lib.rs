//! What `health-agent` and `health-collector` do alike as daemons, kept in one place so the
//! two cannot drift apart (a subject the agent's policy matches must be written the same way
//! in the collector's `agent_subjects`, and a bad TLS file must be reported the same way by
//! both):
//!
//! - [`tls`]: PEM files named in `[tls]` → tonic's `ServerTlsConfig` / `ClientTlsConfig`, with
//!   errors that name the config key and the file.
//! - [`subjects`]: the names a verified client certificate answers to (CN and SANs).
//! - [`systemd`]: READY, STOPPING and watchdog notifications, and the watchdog ping interval.
//! - [`config`]: [`FieldError`], one rejected config key and why.
//! - [`audit`]: the hash-chained, fsynced audit log and its verification.
//!
//! Only what both daemons need lives here; the rest of each daemon stays in its own crate.

#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod subjects;
pub mod systemd;
pub mod tls;

pub use config::FieldError;
pub use subjects::{certificate_subjects, NotACertificate};
