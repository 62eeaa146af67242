//! The listener's TLS from `[tls]`: the collector's certificate and key, and `client_ca`, which
//! every client certificate must chain to (mutual TLS; a client without one fails the
//! handshake and never reaches a service). Files are read once at start; a missing or
//! non-PEM file stops the start with an error naming the key and the path, before anything
//! is bound.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

/// A client that connects and never finishes its handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a PEM file and checks that it holds a block of the expected kind (`CERTIFICATE` or
/// `PRIVATE KEY`; the latter also matches `EC PRIVATE KEY` and `RSA PRIVATE KEY`).
fn read_pem(key: &str, path: &Path, kind: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("tls.{key}: cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    if !text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{kind}-----")))
    {
        bail!(
            "tls.{key}: {}: expected a PEM file with a {kind} block, found none",
            path.display()
        );
    }
    Ok(pem)
}

/// The listener's TLS, or `None` for plain TCP. The config has already checked that cert,
/// key and client_ca come together.
pub fn server(t: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key), Some(ca)) = (&t.cert, &t.key, &t.client_ca) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read_pem("cert", cert, "CERTIFICATE")?,
        read_pem("key", key, "PRIVATE KEY")?,
    );
    Ok(Some(
        ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read_pem(
                "client_ca",
                ca,
                "CERTIFICATE",
            )?))
            .timeout(HANDSHAKE_TIMEOUT),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cert_means_plain_tcp() {
        assert!(server(&TlsConfig::default()).expect("no tls").is_none());
    }

    #[test]
    fn unreadable_and_non_pem_files_name_the_key_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        let t = TlsConfig {
            cert: Some(missing.clone()),
            key: Some(junk.clone()),
            client_ca: Some(junk.clone()),
        };
        let e = format!("{:#}", server(&t).expect_err("missing cert"));
        assert!(
            e.starts_with(&format!("tls.cert: cannot read {}", missing.display())),
            "{e}"
        );
        let t = TlsConfig {
            cert: Some(junk.clone()),
            ..t
        };
        let e = format!("{:#}", server(&t).expect_err("junk cert"));
        assert_eq!(
            e,
            format!(
                "tls.cert: {}: expected a PEM file with a CERTIFICATE block, found none",
                junk.display()
            )
        );
    }
}
