//! Authentication for the Agent service: a tower wrapper around `AgentServer` that turns the
//! connection's credentials (SO_PEERCRED on the Unix socket, the verified client certificate
//! on TLS, the bare address on plain TCP) into a [`Caller`] with a role, and attaches it to the
//! request. A caller with no role at all is refused here with PERMISSION_DENIED (every Agent
//! RPC needs at least reader) and recorded in the audit log; the operator check for mutating
//! RPCs is in [`crate::action::Actions::run`]. Because the wrapper is the only way the
//! service is mounted, no RPC can skip it. Each refusal here also counts towards ACCESS_DENIED
//! ([`crate::denied`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use health_daemon::certificate_subjects;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

use crate::audit::{AuditLog, Entry, Phase, Recorded};
use crate::auth::{Caller, Policy};
use crate::denied::DeniedCallers;

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    policy: Arc<Policy>,
    audit: Arc<AuditLog>,
    /// Where refusals are counted for ACCESS_DENIED.
    denied: Option<Arc<DeniedCallers>>,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, policy: Arc<Policy>, audit: Arc<AuditLog>) -> Self {
        Authenticated {
            inner,
            policy,
            audit,
            denied: None,
        }
    }

    /// Counts every caller refused here towards ACCESS_DENIED on the node.
    pub fn counting_denials(mut self, denied: Arc<DeniedCallers>) -> Self {
        self.denied = Some(denied);
        self
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

/// Who is on the other end of this connection.
pub fn identify(policy: &Policy, ext: &http::Extensions) -> Caller {
    if let Some(info) = ext.get::<UdsConnectInfo>() {
        return match info.peer_cred {
            Some(cred) => policy.unix(cred.uid(), cred.gid()),
            None => Caller {
                identity: "unix socket (no peer credentials)".into(),
                role: None,
            },
        };
    }
    if let Some(info) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let peer = info
            .get_ref()
            .remote_addr()
            .map_or("unknown".to_string(), |a| a.to_string());
        let certs = info.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            return Caller {
                identity: format!("tls {peer} (no client certificate)"),
                role: None,
            };
        };
        return match certificate_subjects(leaf.as_ref()) {
            Ok(subjects) => policy.tls(&subjects, &peer),
            Err(e) => Caller {
                identity: format!("tls {peer} ({e})"),
                role: None,
            },
        };
    }
    if let Some(info) = ext.get::<TcpConnectInfo>() {
        let peer = info
            .remote_addr()
            .map_or("unknown".to_string(), |a| a.to_string());
        return policy.plain_tcp(&peer);
    }
    Caller {
        identity: "unknown transport".into(),
        role: None,
    }
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
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
        let caller = identify(&self.policy, req.extensions());
        if caller.role.is_none() {
            let method = req.uri().path().to_string();
            let audit = self.audit.clone();
            if let Some(d) = &self.denied {
                d.note(&caller.identity);
            }
            return Box::pin(async move {
                let msg = format!(
                    "{method} needs at least the reader role; {} has none",
                    caller.identity
                );
                let entry = Entry {
                    caller: caller.identity.clone(),
                    role: "none".into(),
                    action: method,
                    outcome: Some(Recorded::Denied),
                    message: msg.clone(),
                    ..Default::default()
                };
                if let Err(e) = audit.append(Phase::Denied, entry).await {
                    tracing::error!(target: "audit", error = %e, "could not record a denied call");
                }
                Ok(tonic::Status::permission_denied(msg).into_http())
            });
        }
        req.extensions_mut().insert(caller);
        // The clone that was made ready is the one that must be called (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}
