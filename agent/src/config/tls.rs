//! `[tls]` and `audit_log`: the files the agent opens at start, whose keys must come in
//! working combinations.
//!
//! Paths must be absolute; `cert` and `key` come together; a TLS listener needs `client_ca`,
//! because the agent serves TCP only with mutual TLS; `client_ca` needs the agent's own
//! certificate. The files themselves are read when the daemon starts (`wire::tls`).

use std::path::PathBuf;

use health_daemon::FieldError;

use super::check::absolute;
use super::raw::RawTls;
use super::{TlsConfig, DEFAULT_AUDIT_LOG};

pub(super) fn tls_and_audit(
    t: RawTls,
    audit_log: Option<PathBuf>,
    has_tcp: bool,
) -> Result<(TlsConfig, PathBuf), FieldError> {
    for (key, p) in [
        ("tls.cert", &t.cert),
        ("tls.key", &t.key),
        ("tls.client_ca", &t.client_ca),
        ("tls.collector_ca", &t.collector_ca),
        ("audit_log", &audit_log),
    ] {
        if let Some(p) = p {
            absolute(key, p)?;
        }
    }
    let fail = |key: &str, message: &str| Err(FieldError::new(key, message));
    match (&t.cert, &t.key) {
        (Some(_), None) => return fail("tls.key", "expected a key file with tls.cert"),
        (None, Some(_)) => return fail("tls.cert", "expected a cert file with tls.key"),
        _ => {}
    }
    if t.cert.is_some() && has_tcp && t.client_ca.is_none() {
        return fail(
            "tls.client_ca",
            "expected a CA file: with tls.cert, tcp_listen serves mutual TLS only",
        );
    }
    if t.client_ca.is_some() && t.cert.is_none() {
        return fail(
            "tls.cert",
            "expected the agent's certificate and key with tls.client_ca",
        );
    }
    Ok((
        TlsConfig {
            cert: t.cert,
            key: t.key,
            client_ca: t.client_ca,
            collector_ca: t.collector_ca,
        },
        audit_log.unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_LOG)),
    ))
}
