//! How the `health.v1` messages read for people and for scripts, in one place shared by
//! `agent-ctl` and the collector's status page, so the terminal, `--json` and the page cannot
//! disagree about what a message says.
//!
//! - `names`: enum values without their proto prefix (`OK`, `analog_crossbar`), timestamps as
//!   RFC 3339, durations as people read them.
//! - `json`: every message `agent-ctl --json` prints, which is also the status page's JSON API.
//! - `incident`: the post-mortem skeleton (markdown) written from one `Incident`.
//!
//! Pure functions of the messages: no I/O, no transport.

pub mod incident;
pub mod json;
pub mod names;
