//! The agent's side of the collector's lease service: a [`LeaseBroker`] over gRPC to the
//! configured collectors (the same list and TLS as the uplink), so the remediation engine
//! can ask for a lease before a destructive step without knowing about protobuf.
//!
//! Like the uplink, it stays on the collector that answered last and moves along the list
//! (wrapping) only when that one cannot be reached: each collector keeps its own budget, so
//! flapping between them would spread one node's requests over several budgets. Channels are
//! connected on first use and kept; a transport failure drops the channel, so the next call
//! connects afresh. An answer from a collector is final: a refusal is
//! [`LeaseAnswer::Refused`], and so is an error status (permission denied, a bad request,
//! a collector without leases), with the collector's message, without asking the next one:
//! a collector that answered did not grant, whatever the policy allows without one. Only
//! when no collector answers is it [`LeaseAnswer::Unreachable`] (the engine fails closed
//! unless the policy says `without_collector = "all"`).
//!
//! A release goes to the collector that granted the lease; it is best effort, since the
//! collector frees a lease that is not released within its ttl anyway.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use health_proto::v1 as pb;
use health_proto::v1::collector_client::CollectorClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::AgentConfig;
use crate::remediation::{LeaseAnswer, LeaseBroker, LeaseRequest};

/// The broker for the configured collectors; `None` when the agent has none.
pub fn broker(cfg: &AgentConfig, tls: Option<ClientTlsConfig>) -> Option<Arc<dyn LeaseBroker>> {
    if cfg.collectors.is_empty() {
        return None;
    }
    Some(Arc::new(CollectorLeases::new(
        cfg.collectors.clone(),
        tls,
        cfg.uplink.connect_timeout,
    )))
}

/// Leases from the collectors, in order of preference.
pub struct CollectorLeases {
    collectors: Vec<String>,
    /// For the `https://` collectors.
    tls: Option<ClientTlsConfig>,
    /// Bound on connecting to one collector, and on one call to it, so a silent collector
    /// leaves time to ask the next within the engine's `lease_timeout`.
    timeout: Duration,
    /// One channel per collector, connected on first use.
    channels: Mutex<Vec<Option<Channel>>>,
    /// The collector that answered last; requests start there.
    preferred: AtomicUsize,
    /// Which collector granted each lease not yet released, so the release goes there.
    granted_by: Mutex<HashMap<String, usize>>,
}

/// Why one collector gave no answer.
enum Failure {
    /// Could not reach it (connect, transport, no reply in time): try the next.
    Transport(String),
    /// It answered with an error status: final.
    Status(String),
}

impl CollectorLeases {
    pub fn new(collectors: Vec<String>, tls: Option<ClientTlsConfig>, timeout: Duration) -> Self {
        let channels = Mutex::new(vec![None; collectors.len()]);
        CollectorLeases {
            collectors,
            tls,
            timeout,
            channels,
            preferred: AtomicUsize::new(0),
            granted_by: Mutex::new(HashMap::new()),
        }
    }

    fn url(&self, idx: usize) -> &str {
        self.collectors.get(idx).map_or("", String::as_str)
    }

    /// The collector's channel, connecting it if there is none yet.
    async fn client(&self, idx: usize) -> Result<CollectorClient<Channel>, Failure> {
        let cached = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(idx)
            .cloned()
            .flatten();
        if let Some(channel) = cached {
            return Ok(CollectorClient::new(channel));
        }
        let url = self.url(idx).to_string();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Failure::Transport(format!("bad collector URL: {e}")))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        if let Some(tls) = self.tls.as_ref().filter(|_| url.starts_with("https://")) {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Failure::Transport(format!("collector TLS config: {}", chain(&e))))?;
        }
        let channel = tokio::time::timeout(self.timeout, endpoint.connect())
            .await
            .map_err(|_| {
                Failure::Transport(format!(
                    "connect: no connection within {}",
                    humantime::format_duration(self.timeout)
                ))
            })?
            .map_err(|e| Failure::Transport(format!("connect: {}", chain(&e))))?;
        if let Some(slot) = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(idx)
        {
            *slot = Some(channel.clone());
        }
        Ok(CollectorClient::new(channel))
    }

    /// Forgets the channel of a collector that failed, so the next call reconnects.
    fn drop_channel(&self, idx: usize) {
        if let Some(slot) = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(idx)
        {
            *slot = None;
        }
    }

    /// One AcquireLease call to one collector.
    async fn ask(&self, idx: usize, req: &LeaseRequest) -> Result<pb::LeaseDecision, Failure> {
        let mut client = self.client(idx).await?;
        let request = pb::AcquireLeaseRequest {
            node: req.node.clone(),
            device: req.device.clone(),
            policy: req.policy.clone(),
            action: req.action.clone(),
            request_id: req.request_id.clone(),
        };
        let reply = tokio::time::timeout(self.timeout, client.acquire_lease(request)).await;
        match reply {
            Ok(Ok(decision)) => Ok(decision.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(Failure::Transport(format!(
                "no reply within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    fn answer(&self, idx: usize, decision: pb::LeaseDecision) -> LeaseAnswer {
        let url = self.url(idx);
        if !decision.granted {
            let reason = if decision.reason.is_empty() {
                format!("collector {url} gave no reason")
            } else {
                decision.reason
            };
            return LeaseAnswer::Refused(reason);
        }
        if decision.lease_id.is_empty() {
            // A grant that cannot be released is a broken collector, not a lease.
            return LeaseAnswer::Unreachable(format!(
                "collector {url} granted a lease without a lease_id"
            ));
        }
        self.granted_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(decision.lease_id.clone(), idx);
        LeaseAnswer::Granted {
            lease_id: decision.lease_id,
            ttl: Duration::from_millis(decision.ttl_ms),
        }
    }
}

/// A status the transport made (nothing answered) or one the collector sent.
fn classify(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let code = status.code();
    let mut text = format!("{code:?}");
    if !status.message().is_empty() {
        text = format!("{text}: {}", status.message());
    }
    match code {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            // tonic's message for a broken connection is "transport error"; the cause says
            // which (refused, reset, broken pipe).
            if let Some(cause) = status.source().map(chain) {
                text = if cause.starts_with(status.message()) {
                    format!("{code:?}: {cause}")
                } else {
                    format!("{text} ({cause})")
                };
            }
            Failure::Transport(text)
        }
        _ => Failure::Status(text),
    }
}

/// An error and its causes, one line: tonic's own text ("transport error") says little.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl LeaseBroker for CollectorLeases {
    async fn acquire(&self, req: LeaseRequest) -> LeaseAnswer {
        let count = self.collectors.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for step in 0..count {
            let idx = (first + step) % count;
            match self.ask(idx, &req).await {
                Ok(decision) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return self.answer(idx, decision);
                }
                Err(Failure::Status(text)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    // A collector that answers with an error (permission denied, an old
                    // collector without leases) has not granted anything: a refusal, so a
                    // policy that may act without a collector does not act past one.
                    return LeaseAnswer::Refused(format!(
                        "collector {} answered {text}",
                        self.url(idx)
                    ));
                }
                Err(Failure::Transport(text)) => {
                    tracing::debug!(collector = %self.url(idx), error = %text, "lease request: collector unreachable");
                    self.drop_channel(idx);
                    failures.push(format!("collector {}: {text}", self.url(idx)));
                }
            }
        }
        LeaseAnswer::Unreachable(failures.join("; "))
    }

    async fn release(&self, lease_id: &str, node: &str, outcome: &str) {
        let granted_by = self
            .granted_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(lease_id);
        let idx = granted_by.unwrap_or_else(|| self.preferred.load(Ordering::Relaxed));
        let url = self.url(idx).to_string();
        let request = pb::ReleaseLeaseRequest {
            lease_id: lease_id.to_string(),
            node: node.to_string(),
            outcome: outcome.to_string(),
        };
        let reply = match self.client(idx).await {
            Ok(mut client) => {
                match tokio::time::timeout(self.timeout, client.release_lease(request)).await {
                    Ok(Ok(reply)) => Ok(reply.into_inner()),
                    Ok(Err(status)) => Err(classify(&status)),
                    Err(_) => Err(Failure::Transport("no reply in time".to_string())),
                }
            }
            Err(failure) => Err(failure),
        };
        match reply {
            Ok(reply) if reply.released => {
                tracing::debug!(collector = %url, lease = lease_id, "lease released");
            }
            Ok(_) => {
                tracing::info!(collector = %url, lease = lease_id, "the collector no longer held the lease (expired, or it restarted)");
            }
            Err(Failure::Transport(text)) => {
                self.drop_channel(idx);
                tracing::warn!(collector = %url, lease = lease_id, error = %text,
                    "lease release failed; the collector frees the lease at its ttl");
            }
            Err(Failure::Status(text)) => {
                tracing::warn!(collector = %url, lease = lease_id, error = %text,
                    "lease release failed; the collector frees the lease at its ttl");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> LeaseRequest {
        LeaseRequest {
            node: "n1".to_string(),
            device: "loihi-0".to_string(),
            policy: "thermal".to_string(),
            action: "reset-hard".to_string(),
            request_id: "loihi-0/thermal/1/2".to_string(),
        }
    }

    /// A loopback port that was bound a moment ago and is closed now: nothing listens there.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local address").port()
    }

    #[test]
    fn no_collector_means_no_broker() {
        let cfg = crate::config::parse("agent.toml", "").expect("an empty config is valid");
        assert!(cfg.collectors.is_empty());
        assert!(broker(&cfg, None).is_none());
        let cfg = crate::config::parse("agent.toml", "collectors = [\"http://127.0.0.1:7070\"]\n")
            .expect("valid");
        assert!(broker(&cfg, None).is_some());
    }

    #[tokio::test]
    async fn nothing_listening_on_any_collector_is_unreachable_naming_each() {
        let (a, b) = (
            format!("http://127.0.0.1:{}", closed_port()),
            format!("http://127.0.0.1:{}", closed_port()),
        );
        let leases = CollectorLeases::new(vec![a.clone(), b.clone()], None, Duration::from_secs(2));
        let LeaseAnswer::Unreachable(why) = leases.acquire(request()).await else {
            panic!("a lease without a collector");
        };
        assert!(why.contains(&format!("collector {a}: connect: ")), "{why}");
        assert!(why.contains(&format!("collector {b}: connect: ")), "{why}");
        // A release with no collector is logged, not an error.
        leases.release("lease-1", "n1", "SUCCEEDED").await;
    }
}
