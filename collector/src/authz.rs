//! Who may stream reports into the fleet. Over TLS every client already holds a certificate
//! from `tls.client_ca` (the handshake refuses anyone else), which is enough for the read-only
//! queries. `Report` writes into the fleet state, alerts and history, so when
//! `[auth] agent_subjects` is set only certificates naming one of those subjects may call it;
//! others get PERMISSION_DENIED and a warning under the `audit` log target.
//!
//! A tower wrapper around `CollectorServer`, as the agent's `grpc::authn` is around its
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
        .and_then(|certs| {
            certs
                .first()
                .map(|leaf| certificate_subjects(leaf.as_ref()))
        })
        .unwrap_or_default();
    (subjects, peer)
}

/// The names a certificate answers to: subject CNs, then DNS, email and URI SANs (the same
/// rule as the agent's `auth::certificate_subjects`). An unparseable certificate has none.
pub fn certificate_subjects(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) = name
            {
                out.push((*s).to_string());
            }
        }
    }
    out
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
            if !subjects.iter().any(|s| self.agent_subjects.contains(s)) {
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
