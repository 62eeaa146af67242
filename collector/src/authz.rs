//! Who may stream reports into the fleet. Over TLS every client already holds a certificate
//! from `tls.client_ca` (the handshake refuses anyone else), which is enough for the read-only
//! queries. `Report` writes into the fleet state, alerts and history, so when
//! `[auth] agent_subjects` is set only certificates naming one of those subjects may call it;
//! others get PERMISSION_DENIED and a warning under the `audit` log target.
//!
//! A tower wrapper around `CollectorServer`, as the agent's `wire::authn` is around its
//! service: being the only way the service is mounted, no call can skip it.
//!
//! **Architecture Invariant:** the gate does not tie a report's node name to the certificate
//! (an agent allowed to report may report under any node name); per-node certificates and
//! that binding are left for later.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The one method that changes fleet state.
const REPORT_PATH: &str = "/health.v1.Collector/Report";

#[derive(Clone)]
pub struct ReportGate<S> {
    inner: S,
    agent_subjects: Arc<[String]>,
}

impl<S> ReportGate<S> {
    /// `agent_subjects` empty: every caller that got through the TLS handshake may report.
    pub fn new(inner: S, agent_subjects: &[String]) -> Self {
        ReportGate {
            inner,
            agent_subjects: agent_subjects.into(),
        }
    }
}

impl<S: NamedService> NamedService for ReportGate<S> {
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

impl<S> ReportGate<S> {
    /// Whether a caller with these certificate subjects may call Report.
    fn admits(&self, subjects: &[String]) -> bool {
        self.agent_subjects.is_empty() || subjects.iter().any(|s| self.agent_subjects.contains(s))
    }
}

impl<S, B> tower::Service<http::Request<B>> for ReportGate<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !self.agent_subjects.is_empty() && req.uri().path() == REPORT_PATH {
            let (subjects, peer) = caller(req.extensions());
            if !self.admits(&subjects) {
                let shown = subjects
                    .first()
                    .map_or("(no certificate subject)", String::as_str);
                tracing::warn!(
                    target: "audit",
                    peer = %peer,
                    subject = shown,
                    "Report denied: the certificate's subjects are not in auth.agent_subjects"
                );
                let status = tonic::Status::permission_denied(format!(
                    "Report needs a client certificate whose subject is in auth.agent_subjects; \
                     cert {shown} (tls {peer}) is not"
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

    fn gate(subjects: &[&str]) -> ReportGate<()> {
        let subjects: Vec<String> = subjects.iter().map(|s| (*s).to_string()).collect();
        ReportGate::new((), &subjects)
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
    fn no_agent_subjects_admits_anyone_and_garbage_has_no_subjects() {
        assert!(gate(&[]).admits(&[]));
        assert!(leaf_subjects(b"not a certificate").is_empty());
        assert!(!gate(&["node-5"]).admits(&leaf_subjects(b"not a certificate")));
    }
}
