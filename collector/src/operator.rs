//! The collector's operator role: who may change things through it (create and expire
//! silences, add incident notes), and the gate every such RPC passes, which also writes the
//! collector's audit log.
//!
//! Who is an operator (as on the agent, `agent/src/auth.rs`, so one rule reads the same in
//! both daemons):
//! - on the Unix `socket`, by its peer credentials (SO_PEERCRED): uid 0, the collector's own
//!   uid, `auth.operator_uids`, and members of `auth.operator_groups`; everyone else who can
//!   open the socket is a reader;
//! - over mutual TLS, a client certificate naming one of `auth.operator_subjects`;
//! - over plain TCP, nobody: the peer has no verified identity.
//!
//! `crate::authz::AgentGate`, the tower wrapper every Collector RPC passes, identifies the
//! caller with [`OperatorPolicy::identify`] and puts the [`Caller`] in the request's
//! extensions. A mutating RPC then calls [`Operators::admit`]: without an `audit_log` it is
//! refused (FAILED_PRECONDITION, as the agent refuses actions it cannot record); a caller who
//! is not an operator gets PERMISSION_DENIED and a `denied` entry in the audit log. The
//! [`Operator`] it returns records the change ([`Operator::record`]), and the entry's hash is
//! what the reply and the incident timeline cite.

use std::sync::Arc;

use serde_json::Value;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::Status;

use crate::audit::{Appended, AuditLog, Entry, Outcome, Phase};
use crate::config::AuthConfig;

/// The caller of one request, as the gate identified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `uid 1000 (unix socket)`, `cert alice (tls 10.0.0.9:51234)`, `tcp 10.0.0.9:51234`.
    pub identity: String,
    pub operator: bool,
}

impl Caller {
    pub fn role(&self) -> &'static str {
        if self.operator {
            "operator"
        } else {
            "reader"
        }
    }

    /// Who the caller is without how it connected (`uid 0`, `cert alice`): what a silence's
    /// `createdBy` names.
    pub fn principal(&self) -> &str {
        self.identity
            .rsplit_once(" (")
            .map_or(self.identity.as_str(), |(who, _)| who)
    }
}

/// `[auth]`'s operator keys, with group names resolved at start.
#[derive(Debug, Clone, Default)]
pub struct OperatorPolicy {
    own_uid: u32,
    uids: Vec<u32>,
    gids: Vec<u32>,
    subjects: Vec<String>,
}

impl OperatorPolicy {
    /// Resolves `operator_groups` (and checks `socket_group`) against this host's group
    /// database; an unknown group fails the start, naming the key.
    pub fn resolve(auth: &AuthConfig) -> anyhow::Result<OperatorPolicy> {
        let gids = auth
            .operator_groups
            .iter()
            .map(|name| resolve_group("auth.operator_groups", name))
            .collect::<anyhow::Result<Vec<u32>>>()?;
        Ok(OperatorPolicy {
            own_uid: nix::unistd::geteuid().as_raw(),
            uids: auth.operator_uids.clone(),
            gids,
            subjects: auth.operator_subjects.clone(),
        })
    }

    /// A policy for tests: `own_uid` as the collector's uid, the rest from the lists.
    #[cfg(test)]
    fn with(own_uid: u32, uids: &[u32], gids: &[u32], subjects: &[&str]) -> OperatorPolicy {
        OperatorPolicy {
            own_uid,
            uids: uids.to_vec(),
            gids: gids.to_vec(),
            subjects: subjects.iter().map(|s| (*s).to_string()).collect(),
        }
    }

    /// A caller on the Unix socket, from its peer credentials. Supplementary groups are
    /// looked up only when a group rule could decide.
    pub fn unix(&self, uid: u32, gid: u32) -> Caller {
        let operator = uid == 0
            || uid == self.own_uid
            || self.uids.contains(&uid)
            || (!self.gids.is_empty()
                && (self.gids.contains(&gid)
                    || supplementary_groups(uid, gid)
                        .iter()
                        .any(|g| self.gids.contains(g))));
        Caller {
            identity: format!("uid {uid} (unix socket)"),
            operator,
        }
    }

    /// A TLS client, from its certificate's subjects.
    pub fn tls(&self, subjects: &[String], peer: &str) -> Caller {
        let operator = subjects.iter().find(|s| self.subjects.contains(s));
        let shown = operator
            .or(subjects.first())
            .map_or("(no certificate subject)", String::as_str);
        Caller {
            identity: format!("cert {shown} (tls {peer})"),
            operator: operator.is_some(),
        }
    }

    /// Who is on the other end of this connection.
    pub fn identify(&self, ext: &http::Extensions) -> Caller {
        if let Some(info) = ext.get::<UdsConnectInfo>() {
            return match info.peer_cred {
                Some(cred) => self.unix(cred.uid(), cred.gid()),
                None => Caller {
                    identity: "unix socket (no peer credentials)".into(),
                    operator: false,
                },
            };
        }
        if let Some(info) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            let peer = info
                .get_ref()
                .remote_addr()
                .map_or("unknown".to_string(), |a| a.to_string());
            let subjects = info
                .peer_certs()
                .and_then(|certs| {
                    certs
                        .first()
                        .map(|leaf| health_daemon::certificate_subjects(leaf.as_ref()))
                })
                .and_then(Result::ok)
                .unwrap_or_default();
            return self.tls(&subjects, &peer);
        }
        let peer = ext
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map_or("unknown".to_string(), |a| a.to_string());
        Caller {
            identity: format!("tcp {peer} (plain tcp)"),
            operator: false,
        }
    }
}

/// A group named in the config: a name from the group database, or a numeric gid.
pub fn resolve_group(key: &str, name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => anyhow::bail!("{key}: no group {name:?} on this host"),
        Err(e) => anyhow::bail!("{key}: looking up group {name:?}: {e}"),
    }
}

/// The groups of `uid` in the group database; empty when it has no entry (a container's
/// uid): the primary gid from SO_PEERCRED is checked anyway.
fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}

/// The gate of the mutating RPCs.
#[derive(Clone, Default)]
pub struct Operators {
    audit: Option<Arc<AuditLog>>,
}

impl Operators {
    pub fn new(audit: Option<Arc<AuditLog>>) -> Operators {
        Operators { audit }
    }

    /// The operator making this request, or the status to answer with: FAILED_PRECONDITION
    /// without an audit log, PERMISSION_DENIED (recorded as `denied`, with `args`) for a
    /// caller who is not an operator. `what` names the RPC (`CreateSilence`).
    pub async fn admit<T>(
        &self,
        request: &tonic::Request<T>,
        what: &str,
        args: Value,
    ) -> Result<Operator, Status> {
        let Some(audit) = &self.audit else {
            return Err(Status::failed_precondition(format!(
                "{what}: no audit_log configured on the collector; changes through it are \
                 refused until it can record them"
            )));
        };
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                identity: "unknown caller".into(),
                operator: false,
            });
        if !caller.operator {
            let message = format!(
                "{what} needs the operator role; {} is a {}",
                caller.identity,
                caller.role()
            );
            tracing::warn!(target: "audit", caller = %caller.identity, what, "{message}");
            let entry = Entry {
                who: caller.identity.clone(),
                role: caller.role().into(),
                what: what.into(),
                args,
                outcome: Some(Outcome::Denied),
                message: message.clone(),
            };
            if let Err(e) = audit.append(Phase::Denied, entry).await {
                tracing::error!(target: "audit", error = %e, "could not record a denied call");
            }
            return Err(Status::permission_denied(message));
        }
        Ok(Operator {
            caller,
            audit: Arc::clone(audit),
        })
    }
}

/// An admitted operator: who, and where their change is recorded.
pub struct Operator {
    pub caller: Caller,
    audit: Arc<AuditLog>,
}

impl Operator {
    /// Records the operator's change (or its failure); UNAVAILABLE when the entry cannot be
    /// written, naming the log.
    pub async fn record(
        &self,
        what: &str,
        args: Value,
        outcome: Outcome,
        message: String,
    ) -> Result<Appended, Status> {
        let entry = Entry {
            who: self.caller.identity.clone(),
            role: self.caller.role().into(),
            what: what.into(),
            args,
            outcome: Some(outcome),
            message,
        };
        self.audit.append(Phase::Change, entry).await.map_err(|e| {
            Status::unavailable(format!("{what}: the change could not be recorded: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_the_collectors_uid_and_listed_uids_are_operators_others_read() {
        let policy = OperatorPolicy::with(990, &[1001], &[], &[]);
        assert!(policy.unix(0, 0).operator);
        assert!(policy.unix(990, 990).operator);
        assert!(policy.unix(1001, 1001).operator);
        let reader = policy.unix(1000, 1000);
        assert!(!reader.operator);
        assert_eq!(reader.identity, "uid 1000 (unix socket)");
        assert_eq!(reader.principal(), "uid 1000");
    }

    #[test]
    fn a_listed_primary_group_makes_an_operator() {
        let policy = OperatorPolicy::with(990, &[], &[4242], &[]);
        assert!(policy.unix(1000, 4242).operator);
        assert!(!policy.unix(1000, 4243).operator);
    }

    #[test]
    fn only_listed_certificate_subjects_are_operators() {
        let policy = OperatorPolicy::with(990, &[], &[], &["alice"]);
        let alice = policy.tls(&["alice".into()], "10.0.0.9:1");
        assert!(alice.operator);
        assert_eq!(alice.principal(), "cert alice");
        assert!(!policy.tls(&["bob".into()], "10.0.0.9:1").operator);
        assert!(!policy.tls(&[], "10.0.0.9:1").operator);
    }

    #[test]
    fn plain_tcp_is_never_an_operator() {
        let policy = OperatorPolicy::with(990, &[], &[], &["alice"]);
        let caller = policy.identify(&http::Extensions::new());
        assert!(!caller.operator);
        assert!(caller.identity.contains("plain tcp"), "{caller:?}");
    }

    #[tokio::test]
    async fn without_an_audit_log_changes_are_refused_and_a_reader_is_denied_and_recorded() {
        let request = tonic::Request::new(());
        let status = Operators::new(None)
            .admit(&request, "CreateSilence", Value::Null)
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("no audit_log"), "{status:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let operators = Operators::new(Some(AuditLog::open(&path)));
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(Caller {
            identity: "tcp 127.0.0.1:5 (plain tcp)".into(),
            operator: false,
        });
        let status = operators
            .admit(&request, "ExpireSilence", serde_json::json!({"id": "x"}))
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"phase\":\"denied\""), "{text}");
        assert!(text.contains("ExpireSilence"), "{text}");

        request.extensions_mut().insert(Caller {
            identity: "uid 0 (unix socket)".into(),
            operator: true,
        });
        let operator = operators
            .admit(&request, "ExpireSilence", Value::Null)
            .await
            .unwrap();
        let appended = operator
            .record(
                "ExpireSilence",
                Value::Null,
                Outcome::Succeeded,
                "ok".into(),
            )
            .await
            .unwrap();
        assert_eq!(appended.seq, 2);
    }
}
