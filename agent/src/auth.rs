//! Who is calling and what they may do: the two roles, and the policy that maps a caller's
//! Unix credentials (`SO_PEERCRED`) or TLS client certificate to one of them.
//!
//! The gRPC layer ([`crate::wire::authn`]) asks this module for a [`Caller`] on every request
//! and refuses callers with no role; [`crate::action::Actions::run`] refuses mutating actions
//! to callers below operator. Nothing else decides who may do what.
//!
//! Defaults, chosen so that the socket's file mode stays the first gate:
//! - anyone who can open the 0660 socket is a reader, unless `reader_uids`/`reader_groups`
//!   narrow it;
//! - uid 0 and the agent's own uid are always operators (either can write to the devices, or
//!   to the agent's memory, without asking the agent);
//! - a TLS client is a reader when its certificate chains to `client_ca` (unless
//!   `reader_subjects` narrows it) and an operator when a subject is in `operator_subjects`;
//! - a plain-TCP peer (no TLS configured) is a reader at most: it has no verified identity.
//!
//! The subjects of a certificate are read by `health_daemon::certificate_subjects`, the same
//! rendering the collector's `agent_subjects` match, so one subject string works in both.

use std::fmt;

use nix::unistd::{Gid, Uid, User};

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of one request: who (for records) and with which role.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub identity: String,
    pub role: Option<Role>,
}

impl Caller {
    pub fn role_name(&self) -> &'static str {
        self.role.map_or("none", Role::as_str)
    }

    /// Who the caller is without how it connected: `uid 1000`, `cert alice`. Stable across
    /// connections (a TLS peer's port is not), so idempotency keys are matched on it.
    pub fn principal(&self) -> &str {
        principal_of(&self.identity)
    }
}

/// The principal in an identity as [`Policy`] writes it: `<who> (<how it connected>)`.
pub fn principal_of(identity: &str) -> &str {
    identity.rsplit_once(" (").map_or(identity, |(who, _)| who)
}

impl Caller {
    /// For in-process callers (tests, the daemon itself).
    pub fn local_operator(identity: &str) -> Caller {
        Caller {
            identity: identity.to_string(),
            role: Some(Role::Operator),
        }
    }
}

/// `[auth]` resolved against this host's group database.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The agent's own effective uid.
    own_uid: u32,
    operator_uids: Vec<u32>,
    operator_gids: Vec<u32>,
    reader_uids: Vec<u32>,
    reader_gids: Vec<u32>,
    operator_subjects: Vec<String>,
    reader_subjects: Vec<String>,
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

impl Policy {
    pub fn resolve(cfg: &AuthConfig) -> anyhow::Result<Policy> {
        let gids = |key: &str, names: &[String]| -> anyhow::Result<Vec<u32>> {
            names.iter().map(|n| resolve_group(key, n)).collect()
        };
        Ok(Policy {
            own_uid: nix::unistd::geteuid().as_raw(),
            operator_uids: cfg.operator_uids.clone(),
            operator_gids: gids("auth.operator_groups", &cfg.operator_groups)?,
            reader_uids: cfg.reader_uids.clone(),
            reader_gids: gids("auth.reader_groups", &cfg.reader_groups)?,
            operator_subjects: cfg.operator_subjects.clone(),
            reader_subjects: cfg.reader_subjects.clone(),
        })
    }

    /// A caller on the Unix socket, from its peer credentials.
    pub fn unix(&self, uid: u32, gid: u32) -> Caller {
        let identity = format!("uid {uid} (unix socket)");
        // Supplementary groups come from the group database, looked up only when a rule
        // needs them (the peer's primary gid is in SO_PEERCRED).
        let mut groups: Option<Vec<u32>> = None;
        let mut in_any = |wanted: &[u32]| {
            if wanted.is_empty() {
                return false;
            }
            if wanted.contains(&gid) {
                return true;
            }
            let g = groups.get_or_insert_with(|| supplementary_groups(uid, gid));
            g.iter().any(|x| wanted.contains(x))
        };
        let role = if uid == 0
            || uid == self.own_uid
            || self.operator_uids.contains(&uid)
            || in_any(&self.operator_gids)
        {
            Some(Role::Operator)
        } else if (self.reader_uids.is_empty() && self.reader_gids.is_empty())
            || self.reader_uids.contains(&uid)
            || in_any(&self.reader_gids)
        {
            Some(Role::Reader)
        } else {
            None
        };
        Caller { identity, role }
    }

    /// A caller whose client certificate was verified against `client_ca` in the handshake.
    pub fn tls(&self, subjects: &[String], peer: &str) -> Caller {
        let shown = subjects.first().map_or("(no subject)", String::as_str);
        let identity = format!("cert {shown} (tls {peer})");
        let matches = |list: &[String]| list.iter().any(|s| subjects.contains(s));
        let role = if matches(&self.operator_subjects) {
            Some(Role::Operator)
        } else if self.reader_subjects.is_empty() || matches(&self.reader_subjects) {
            Some(Role::Reader)
        } else {
            None
        };
        Caller { identity, role }
    }

    /// A TCP peer without TLS: no verified identity, so never more than a reader.
    pub fn plain_tcp(&self, peer: &str) -> Caller {
        let restricted = !self.reader_subjects.is_empty();
        Caller {
            identity: format!("tcp {peer} (no TLS)"),
            role: (!restricted).then_some(Role::Reader),
        }
    }
}

/// The groups of `uid` in the group database (plus `gid`); empty when the uid has no name.
fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![gid])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            operator_uids: vec![1001],
            operator_subjects: vec!["alice".into()],
            ..Default::default()
        }
    }

    #[test]
    fn root_and_listed_uids_operate_everyone_else_reads() {
        let p = policy();
        assert_eq!(p.unix(0, 0).role, Some(Role::Operator));
        assert_eq!(p.unix(1001, 100).role, Some(Role::Operator));
        assert_eq!(p.unix(1002, 100).role, Some(Role::Reader));
        assert_eq!(p.unix(1002, 100).identity, "uid 1002 (unix socket)");
        let own = Policy {
            own_uid: 999,
            reader_uids: vec![1],
            ..policy()
        };
        assert_eq!(own.unix(999, 999).role, Some(Role::Operator));
        assert_eq!(own.unix(998, 999).role, None);
    }

    #[test]
    fn reader_lists_narrow_who_may_read() {
        let p = Policy {
            reader_gids: vec![4242],
            ..policy()
        };
        assert_eq!(p.unix(1002, 4242).role, Some(Role::Reader));
        assert_eq!(p.unix(1003, 100).role, None);
        assert_eq!(p.unix(1001, 100).role, Some(Role::Operator));
    }

    #[test]
    fn certificate_subjects_map_to_roles() {
        let p = policy();
        assert_eq!(
            p.tls(&["alice".into()], "127.0.0.1:1").role,
            Some(Role::Operator)
        );
        assert_eq!(
            p.tls(&["bob".into()], "127.0.0.1:1").role,
            Some(Role::Reader)
        );
        let narrow = Policy {
            reader_subjects: vec!["carol".into()],
            ..policy()
        };
        assert_eq!(narrow.tls(&["bob".into()], "x").role, None);
        assert_eq!(narrow.plain_tcp("x").role, None);
        assert_eq!(policy().plain_tcp("x").role, Some(Role::Reader));
    }
}
