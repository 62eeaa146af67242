//! The fleet-wide blast radius: before a destructive step the engine asks the collector for a
//! lease. The collector side (budget, window, circuit breaker) is `health_collector::leases`;
//! the gRPC client is `crate::wire::lease`. This trait is the seam between them, so the engine
//! stays free of protobuf and its tests can use a broker of their own.

use std::time::Duration;

/// What a destructive step asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub node: String,
    pub device: String,
    pub policy: String,
    /// `reset-hard`, `power-cycle`, `disable`, `kill-process`.
    pub action: String,
    /// The same id again (a retry after a lost reply) gets the same lease.
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseAnswer {
    Granted {
        lease_id: String,
        ttl: Duration,
    },
    /// The collector answered no (budget, window, circuit breaker): the reason, for the
    /// operator.
    Refused(String),
    /// No collector answered: fail closed unless the policy says otherwise.
    Unreachable(String),
}

#[async_trait::async_trait]
pub trait LeaseBroker: Send + Sync {
    async fn acquire(&self, req: LeaseRequest) -> LeaseAnswer;
    /// Frees a lease; best effort (the collector also frees it at its ttl).
    async fn release(&self, lease_id: &str, node: &str, outcome: &str);
}
