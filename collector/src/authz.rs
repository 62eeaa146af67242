//! Who may act as an agent. Over TLS every client already holds a certificate from
//! `tls.client_ca` (the handshake refuses anyone else), which is enough for the read-only
//! queries. `Report` writes into the fleet state, alerts and history, and `AcquireLease` /
//! `ReleaseLease` let the caller take a destructive remediation step out of the fleet's
//! budget, so when `[auth] agent_subjects` is set only certificates naming one of those
//! subjects may call them; others (operators' and dashboards' reader certificates among them)
//! get PERMISSION_DENIED and a warning under the `audit` log target.
//!
//! Leases take exactly the identity reporting takes, because the caller of both is the same
//! process (the agent's uplink and its remediation engine share one client certificate) and
//! a lease is only meaningful for a node that reports: a reader able to take leases could
//! drain the budget and hold up every agent's remediation. Without `agent_subjects` any
//! certificate from `client_ca` may report, and so may take leases; over plain TCP the
//! collector trusts its network for both, as it does for Report.
//!
//! A tower wrapper around `CollectorServer`, as the agent's `wire::authn` is around its
//! service: being the only way the service is mounted, no call can skip it. It also
//! identifies every caller for the operator role (`crate::operator`) and hands the
//! `operator::Caller` to the service in the request's extensions.
//!
//! **Architecture Invariant:** the gate does not tie a report's or a lease's node name to the
//! certificate (an agent allowed to report may report, and take leases, under any node name);
//! per-node certificates and that binding are left for later.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::operator::OperatorPolicy;

/// The methods only agents may call: the one that changes fleet state, and the leases.
const AGENT_PATHS: [(&str, &str); 3] = [
    ("/health.v1.Collector/Report", "Report"),
    ("/health.v1.Collector/AcquireLease", "AcquireLease"),
    ("/health.v1.Collector/ReleaseLease", "ReleaseLease"),
];

/// The method's name if only agents may call it.
fn agent_method(path: &str) -> Option<&'static str> {
    AGENT_PATHS
        .iter()
        .find(|(full, _)| *full == path)
        .map(|(_, name)| *name)
}

#[derive(Clone)]
pub struct AgentGate<S> {
    inner: S,
    agent_subjects: Arc<[String]>,
    operators: Arc<OperatorPolicy>,
}

impl<S> AgentGate<S> {
    /// `agent_subjects` empty: every caller that got through the TLS handshake may report and
    /// take leases.
    pub fn new(inner: S, agent_subjects: &[String]) -> Self {
        AgentGate {
            inner,
            agent_subjects: agent_subjects.into(),
            operators: Arc::default(),
        }
    }

    /// Identifies callers for the operator role with this policy (without one, only uid 0 on
    /// a Unix socket is an operator).
    pub fn with_operators(self, operators: Arc<OperatorPolicy>) -> Self {
        AgentGate { operators, ..self }
    }
}

impl<S: NamedService> NamedService for AgentGate<S> {
    const NAME: &'static str = S::NAME;
}

/// The caller's certificate subjects and address, from the connection's TLS info; the
/// subjects are empty when there is no client certificate (or no TLS).
fn caller(ext: &http::Extensions) -> (Vec<String>, String) {
    let Some(info) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() else {
        let peer = ext
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map_or("unknown".to_string(), |a| a.to_string());
        return (Vec::new(), peer);
    };
    let peer = info
        .get_ref()
        .remote_addr()
        .map_or("unknown".to_string(), |a| a.to_string());
    let subjects = info
        .peer_certs()
        .and_then(|certs| certs.first().map(|leaf| leaf_subjects(leaf.as_ref())))
        .unwrap_or_default();
    (subjects, peer)
}

/// The names the leaf certificate answers to, in the agent's rendering (CN, SANs, `IP:addr`);
/// a certificate x509-parser cannot read has none, so it may not report.
fn leaf_subjects(der: &[u8]) -> Vec<String> {
    health_daemon::certificate_subjects(der).unwrap_or_default()
}

impl<S> AgentGate<S> {
    /// Whether a caller with these certificate subjects may call the agents' methods.
    fn admits(&self, subjects: &[String]) -> bool {
        self.agent_subjects.is_empty() || subjects.iter().any(|s| self.agent_subjects.contains(s))
    }
}

impl<S, B> tower::Service<http::Request<B>> for AgentGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let identified = self.operators.identify(req.extensions());
        req.extensions_mut().insert(identified);
        let method = agent_method(req.uri().path()).filter(|_| !self.agent_subjects.is_empty());
        if let Some(method) = method {
            let (subjects, peer) = caller(req.extensions());
            if !self.admits(&subjects) {
                let shown = subjects
                    .first()
                    .map_or("(no certificate subject)", String::as_str);
                tracing::warn!(
                    target: "audit",
                    peer = %peer,
                    subject = shown,
                    method,
                    "{method} denied: the certificate's subjects are not in auth.agent_subjects"
                );
                let status = tonic::Status::permission_denied(format!(
                    "{method} needs a client certificate whose subject is in \
                     auth.agent_subjects; cert {shown} (tls {peer}) is not"
                ));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The clone that was made ready is the one that must be called (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openssl-made, with `IP:10.0.0.5` among its SANs; see the file for the command.
    const NODE_5: &str = include_str!("../../daemon-common/tests/certs/node-5-ip-san.pem");

    fn node_5_der() -> Vec<u8> {
        let (_, block) =
            x509_parser::pem::parse_x509_pem(NODE_5.as_bytes()).expect("a PEM certificate");
        block.contents
    }

    fn gate(subjects: &[&str]) -> AgentGate<()> {
        let subjects: Vec<String> = subjects.iter().map(|s| (*s).to_string()).collect();
        AgentGate::new((), &subjects)
    }

    #[test]
    fn an_ip_san_in_agent_subjects_admits_its_certificate() {
        let subjects = leaf_subjects(&node_5_der());
        assert!(gate(&["IP:10.0.0.5"]).admits(&subjects), "{subjects:?}");
        assert!(gate(&["IP:fd00::5"]).admits(&subjects), "{subjects:?}");
        assert!(!gate(&["IP:10.0.0.6"]).admits(&subjects), "{subjects:?}");
    }

    #[test]
    fn cn_and_dns_sans_admit_and_a_bare_address_does_not() {
        let subjects = leaf_subjects(&node_5_der());
        assert!(gate(&["node-5"]).admits(&subjects));
        assert!(gate(&["node-5.example"]).admits(&subjects));
        // Addresses are written with their `IP:` prefix, as in the agent's operator_subjects.
        assert!(!gate(&["10.0.0.5"]).admits(&subjects));
    }

    #[test]
    fn report_and_the_leases_are_the_agents_methods() {
        assert_eq!(agent_method("/health.v1.Collector/Report"), Some("Report"));
        assert_eq!(
            agent_method("/health.v1.Collector/AcquireLease"),
            Some("AcquireLease")
        );
        assert_eq!(
            agent_method("/health.v1.Collector/ReleaseLease"),
            Some("ReleaseLease")
        );
        assert_eq!(agent_method("/health.v1.Collector/ListNodes"), None);
        assert_eq!(agent_method("/health.v1.Collector/WatchAlerts"), None);
    }

    #[test]
    fn no_agent_subjects_admits_anyone_and_garbage_has_no_subjects() {
        assert!(gate(&[]).admits(&[]));
        assert!(leaf_subjects(b"not a certificate").is_empty());
        assert!(!gate(&["node-5"]).admits(&leaf_subjects(b"not a certificate")));
    }
}
