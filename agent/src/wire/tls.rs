//! TLS material from `[tls]`: the server config for the agent's TCP listener (mutual TLS: a
//! client must present a certificate signed by `client_ca`) and the client config for the
//! uplink to an `https://` collector (the agent's own certificate, and `collector_ca` to check
//! the collector's).
//!
//! Reading and checking the PEM files is `health_daemon::tls`, shared with the collector so a
//! bad file is reported the same way by both daemons (naming the key and the file); this
//! module only decides, from the agent's config, which files each side uses and whether it
//! has TLS at all.

use anyhow::Context;
use health_daemon::tls::{self as pem, PemFile};
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

use crate::config::TlsConfig;

/// `tls.cert` and `tls.key`, when both are set (the config allows one only with the other).
fn identity(t: &TlsConfig) -> Option<(PemFile<'_>, PemFile<'_>)> {
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            Some((PemFile::new("tls.cert", cert), PemFile::new("tls.key", key)))
        }
        _ => None,
    }
}

/// The TCP listener's TLS, if `tls.cert` is set: client certificates are required. The files
/// are parsed here, while binding, so a bad one fails the start before READY.
pub fn server(t: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let Some((cert, key)) = identity(t) else {
        return Ok(None);
    };
    let ca = t
        .client_ca
        .as_ref()
        .context("tls.client_ca: required to serve TLS")?;
    let config = pem::server(cert, key, PemFile::new("tls.client_ca", ca))?;
    Ok(Some(config))
}

/// The uplink's TLS for the `https://` collector URLs: the collector's certificate is checked
/// against `tls.collector_ca` (or the system roots), and the agent presents `tls.cert`.
pub fn uplink(t: &TlsConfig, collectors: &[String]) -> anyhow::Result<Option<ClientTlsConfig>> {
    if !collectors.iter().any(|u| u.starts_with("https://")) {
        return Ok(None);
    }
    let collector_ca = t
        .collector_ca
        .as_deref()
        .map(|ca| PemFile::new("tls.collector_ca", ca));
    Ok(Some(pem::client(collector_ca, identity(t))?))
}
