//! TLS material named in a daemon's `[tls]` table, turned into tonic's rustls configs: the
//! server side of a mutual-TLS listener (the daemon's certificate and key, and the CA every
//! client certificate must chain to) and the client side of an uplink (the CA to check the
//! server with, and the daemon's own certificate to present).
//!
//! Files are read once, at start, and checked before anything is bound: a missing file, one
//! without the expected PEM block, or a pair rustls rejects stops the start with an error that
//! names the config key and the file, so the operator knows which line to fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A client that connects and never finishes its handshake is dropped after this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One PEM file and the config key that named it (`tls.cert`), for errors.
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    pub key: &'a str,
    pub path: &'a Path,
}

impl<'a> PemFile<'a> {
    pub fn new(key: &'a str, path: &'a Path) -> PemFile<'a> {
        PemFile { key, path }
    }
}

/// Why the TLS files could not be used; each names the config key and the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The cause is the error's source, so `{:#}` (anyhow) prints it once, after the path.
    #[error("{key}: cannot read {}", path.display())]
    Read {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {}: expected a PEM file with a {block} block, found none", path.display())]
    NotPem {
        key: String,
        path: PathBuf,
        block: &'static str,
    },
    /// rustls rejected the files as a set (a key that does not match the certificate, a PEM
    /// block that does not decode); it does not say which file, so this names all of them.
    #[error("{keys}: not usable: {reason}")]
    Unusable { keys: String, reason: String },
}

/// The PEM block a file must hold. `PRIVATE KEY` also matches `EC PRIVATE KEY` and
/// `RSA PRIVATE KEY`.
#[derive(Debug, Clone, Copy)]
enum Block {
    Certificate,
    PrivateKey,
}

impl Block {
    fn name(self) -> &'static str {
        match self {
            Block::Certificate => "CERTIFICATE",
            Block::PrivateKey => "PRIVATE KEY",
        }
    }
}

fn read_pem(file: PemFile<'_>, block: Block) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(file.path).map_err(|source| TlsError::Read {
        key: file.key.to_string(),
        path: file.path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&pem);
    let trailer = format!("{}-----", block.name());
    if !text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&trailer))
    {
        return Err(TlsError::NotPem {
            key: file.key.to_string(),
            path: file.path.to_path_buf(),
            block: block.name(),
        });
    }
    Ok(pem)
}

/// The daemon's own certificate chain and private key.
pub fn identity(cert: PemFile<'_>, key: PemFile<'_>) -> Result<Identity, TlsError> {
    Ok(Identity::from_pem(
        read_pem(cert, Block::Certificate)?,
        read_pem(key, Block::PrivateKey)?,
    ))
}

/// CA certificates to verify the other side with.
pub fn ca(file: PemFile<'_>) -> Result<Certificate, TlsError> {
    read_pem(file, Block::Certificate).map(Certificate::from_pem)
}

/// A mutual-TLS listener: serves `cert`/`key` and requires a client certificate that chains to
/// `client_ca`. rustls parses the files here, so a bad one fails before anything is bound.
pub fn server(
    cert: PemFile<'_>,
    key: PemFile<'_>,
    client_ca: PemFile<'_>,
) -> Result<ServerTlsConfig, TlsError> {
    let config = ServerTlsConfig::new()
        .identity(identity(cert, key)?)
        .client_ca_root(ca(client_ca)?)
        .timeout(HANDSHAKE_TIMEOUT);
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| TlsError::Unusable {
            keys: format!("{}, {} or {}", cert.key, key.key, client_ca.key),
            reason: root_cause(&e),
        })?;
    Ok(config)
}

/// An uplink's TLS: the server is checked against `server_ca` (the system roots when `None`),
/// and `identity` (certificate, key) is presented when the server asks for a client
/// certificate.
pub fn client(
    server_ca: Option<PemFile<'_>>,
    identity_files: Option<(PemFile<'_>, PemFile<'_>)>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut config = match server_ca {
        Some(file) => ClientTlsConfig::new().ca_certificate(ca(file)?),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let Some((cert, key)) = identity_files {
        config = config.identity(identity(cert, key)?);
    }
    Ok(config)
}

/// The innermost error's message: tonic wraps the rustls/PEM error that names the problem.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(e) = deepest.source() {
        deepest = e;
    }
    deepest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    /// The error of a mutual-TLS listener whose `cert` is bad (the other files are not reached).
    fn server_with_cert(cert: &Path, other: &Path) -> TlsError {
        server(
            PemFile::new("tls.cert", cert),
            PemFile::new("tls.key", other),
            PemFile::new("tls.client_ca", other),
        )
        .expect_err("a bad tls.cert")
    }

    #[test]
    fn unreadable_and_non_pem_files_name_the_key_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        let e = server_with_cert(&missing, &junk);
        assert_eq!(
            e.to_string(),
            format!("tls.cert: cannot read {}", missing.display())
        );
        assert!(std::error::Error::source(&e).is_some(), "the io error");
        let e = server_with_cert(&junk, &junk);
        assert_eq!(
            e.to_string(),
            format!(
                "tls.cert: {}: expected a PEM file with a CERTIFICATE block, found none",
                junk.display()
            )
        );
    }

    #[test]
    fn a_certificate_is_not_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, CERT).expect("write");
        let e = client(
            Some(PemFile::new("tls.collector_ca", &cert)),
            Some((
                PemFile::new("tls.cert", &cert),
                PemFile::new("tls.key", &cert),
            )),
        )
        .expect_err("a certificate as the key");
        assert_eq!(
            e.to_string(),
            format!(
                "tls.key: {}: expected a PEM file with a PRIVATE KEY block, found none",
                cert.display()
            )
        );
    }
}
