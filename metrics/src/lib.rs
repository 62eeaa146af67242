//! Prometheus exposition shared by `health-agent` and `health-collector`.
//!
//! - [`text`]: the text format encoder (one family per name, escaping, duplicates dropped).
//! - [`node`]: the series of one node's `health.v1.NodeSnapshot` (devices, readings, health,
//!   conditions, host), rendered the same way by the agent (its own node) and the collector
//!   (every node), so dashboards and rules work against either.
//! - [`rpc`]: a tower layer that counts and times gRPC calls per method.
//! - [`histogram`]: the lock-free latency histogram behind it.
//! - [`stream`]: a page written in bounded chunks, family by family, for pages that grow
//!   with the fleet (the collector's per-node series).
//! - [`http`]: the `GET /metrics` endpoint (whole page, or streamed), and `serve_router`, which serves a daemon's axum
//!   routes over plain HTTP or mutual TLS (the collector's status page).
//!
//! Everything is rendered at scrape time from state the daemons already keep; see
//! ARCHITECTURE.md ("scraping never blocks the daemons' paths").

pub mod histogram;
pub mod http;
pub mod node;
pub mod rpc;
pub mod stream;
pub mod text;

pub use text::Exposition;
