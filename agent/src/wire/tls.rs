//! TLS material from `[tls]`: the server config for the agent's TCP listener (mutual TLS: a
//! client must present a certificate signed by `client_ca`) and the client config for the
//! uplink to an `https://` collector (the agent's own certificate, and `collector_ca` to check
//! the collector's). Files are read once at start; an unreadable file stops the start with an
//! error naming the key and the path.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

fn read(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("tls.{key}: cannot read {}", path.display()))
}

fn identity(t: &TlsConfig) -> anyhow::Result<Option<Identity>> {
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Ok(Some(Identity::from_pem(read("cert", c)?, read("key", k)?))),
        _ => Ok(None),
    }
}

/// The TCP listener's TLS, if `tls.cert` is set: client certificates are required.
pub fn server(t: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let Some(id) = identity(t)? else {
        return Ok(None);
    };
    let ca = t
        .client_ca
        .as_ref()
        .context("tls.client_ca: required to serve TLS")?;
    let config = ServerTlsConfig::new()
        .identity(id)
        .client_ca_root(Certificate::from_pem(read("client_ca", ca)?))
        .timeout(Duration::from_secs(10));
    // Parse the PEM now, while binding, so a bad file fails the start before READY rather
    // than when serving begins.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| {
            anyhow::anyhow!(
                "tls: cert, key or client_ca is not usable: {}",
                root_cause(&e)
            )
        })?;
    Ok(Some(config))
}

/// The innermost error's message: tonic wraps the rustls/PEM error that names the problem.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(e) = deepest.source() {
        deepest = e;
    }
    deepest.to_string()
}

/// The uplink's TLS for the `https://` collector URLs: the collector's certificate is checked
/// against `tls.collector_ca` (or the system roots), and the agent presents `tls.cert`.
pub fn uplink(t: &TlsConfig, collectors: &[String]) -> anyhow::Result<Option<ClientTlsConfig>> {
    if !collectors.iter().any(|u| u.starts_with("https://")) {
        return Ok(None);
    }
    let mut c = match &t.collector_ca {
        Some(ca) => {
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("collector_ca", ca)?))
        }
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let Some(id) = identity(t)? {
        c = c.identity(id);
    }
    Ok(Some(c))
}
