//! The only protobuf-aware code in the agent: conversion from the domain model to the
//! contract ([`convert`]), the Agent API ([`service`] behind [`authn`], bound and served by
//! [`server`] with [`tls`]), `/metrics` ([`metrics`], rendered from the protobuf snapshot by
//! `health-metrics`) and delivery of reports to the collector ([`uplink`]).

pub mod authn;
pub mod convert;
pub mod lease;
pub mod metrics;
pub mod server;
pub mod service;
pub mod tls;
pub mod uplink;

pub use server::{bind, serve, Listeners};
