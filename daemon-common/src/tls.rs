//! TLS material named in a daemon's `[tls]` table, turned into tonic's rustls configs: the
//! server side of a mutual-TLS listener (the daemon's certificate and key, and the CA every
//! client certificate must chain to) and the client side of an uplink (the CA to check the
//! server with, and the daemon's own certificate to present).
//!
//! [`https_server`] builds the same mutual-TLS listener as a plain rustls config, for the
//! HTTPS status page that is served by hyper rather than tonic.
//!
//! Files are read once, at start, and checked before anything is bound: a missing file, one
//! without the expected PEM block, or a pair rustls rejects stops the start with an error that
//! names the config key and the file, so the operator knows which line to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
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
    /// The file has the expected PEM block but its content is not usable on its own: a block
    /// that does not decode, a CA certificate rustls cannot parse, an encrypted key.
    #[error("{key}: {}: {reason}", path.display())]
    Invalid {
        key: String,
        path: PathBuf,
        reason: String,
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

/// The ALPN protocols of [`https_server`], preferred first: hyper-util's `auto` connection
/// builder serves both.
pub const HTTPS_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A mutual-TLS HTTPS listener as a plain rustls config (ring, like tonic's): serves
/// `cert`/`key` and REQUIRES a client certificate that chains to `client_ca`. Every file is
/// read and parsed here, so a bad one fails before anything is bound, with an error naming
/// its config key and path.
pub fn https_server(
    cert: PemFile<'_>,
    key: PemFile<'_>,
    client_ca: PemFile<'_>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let private_key = private_key(key)?;
    let roots = root_store(client_ca)?;
    // Named explicitly rather than the process default: another crate turning on rustls's
    // aws-lc-rs feature must not make the builder's choice ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Invalid {
            key: client_ca.key.to_string(),
            path: client_ca.path.to_path_buf(),
            reason: format!("no usable CA certificate: {e:?}"),
        })?;
    let unusable = |e: rustls::Error| TlsError::Unusable {
        keys: format!("{} and {}", cert.key, key.key),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(unusable)?;
    config.alpn_protocols = HTTPS_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file, in file order (leaf first for a chain).
fn certificates(file: PemFile<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(file, Block::Certificate)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, format!("a CERTIFICATE block does not decode: {e}")))?;
    if certs.is_empty() {
        // read_pem's check also lets `BEGIN TRUSTED CERTIFICATE` and the like through.
        return Err(TlsError::NotPem {
            key: file.key.to_string(),
            path: file.path.to_path_buf(),
            block: Block::Certificate.name(),
        });
    }
    Ok(certs)
}

/// The first unencrypted private key of a PEM file: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
fn private_key(file: PemFile<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(file, Block::PrivateKey)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            file,
            format!("no unencrypted PKCS#8, SEC1 or PKCS#1 private key: {e}"),
        )
    })
}

/// The CA certificates of a PEM file as trust anchors; one rustls cannot use is an error
/// rather than skipped, so a typo'd CA file does not silently trust less than intended.
fn root_store(file: PemFile<'_>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (n, der) in certificates(file)?.into_iter().enumerate() {
        roots.add(der).map_err(|e| {
            invalid(
                file,
                format!("certificate {} is not a usable CA certificate: {e}", n + 1),
            )
        })?;
    }
    Ok(roots)
}

fn invalid(file: PemFile<'_>, reason: String) -> TlsError {
    TlsError::Invalid {
        key: file.key.to_string(),
        path: file.path.to_path_buf(),
        reason,
    }
}

/// A rustls client configuration that trusts only the CA certificates of `ca` (for a
/// connection tonic does not make: the collector's PostgreSQL history). rustls always checks
/// the chain and that the certificate names the host dialled: libpq's `verify-full`.
pub fn rustls_client(ca: PemFile<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let roots = root_store(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(ca, format!("no TLS version usable: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
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

    /// A throwaway PKI from tests/tls/make-certs.sh (openssl), in a fresh directory.
    fn make_certs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls/make-certs.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .output()
            .expect("run make-certs.sh");
        assert!(
            out.status.success(),
            "make-certs.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    fn https(dir: &Path, cert: &str, key: &str, ca: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let (cert, key, ca) = (dir.join(cert), dir.join(key), dir.join(ca));
        https_server(
            PemFile::new("tls.cert", &cert),
            PemFile::new("tls.key", &key),
            PemFile::new("tls.client_ca", &ca),
        )
    }

    #[test]
    fn https_server_reads_errors_like_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").expect("write");
        let e = https(dir.path(), "missing.pem", "junk.pem", "junk.pem").expect_err("missing");
        assert_eq!(
            e.to_string(),
            format!(
                "tls.cert: cannot read {}",
                dir.path().join("missing.pem").display()
            )
        );
        let e = https(dir.path(), "junk.pem", "junk.pem", "junk.pem").expect_err("junk");
        assert_eq!(
            e.to_string(),
            format!(
                "tls.cert: {}: expected a PEM file with a CERTIFICATE block, found none",
                dir.path().join("junk.pem").display()
            )
        );
    }

    #[test]
    fn https_server_names_the_file_whose_content_is_bad() {
        let pki = make_certs();
        let dir = pki.path();
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.join("bad64.pem"), bad_base64).expect("write");
        std::fs::write(dir.join("tiny.pem"), CERT).expect("write");
        let path = |name: &str| dir.join(name).display().to_string();

        let e = https(dir, "bad64.pem", "collector.key", "ca.pem").expect_err("bad base64");
        let prefix = format!(
            "tls.cert: {}: a CERTIFICATE block does not decode: ",
            path("bad64.pem")
        );
        assert!(e.to_string().starts_with(&prefix), "{e}");

        let e = https(dir, "collector.pem", "collector.key", "tiny.pem").expect_err("bad CA");
        let prefix = format!(
            "tls.client_ca: {}: certificate 1 is not a usable CA certificate: ",
            path("tiny.pem")
        );
        assert!(e.to_string().starts_with(&prefix), "{e}");

        let e = https(dir, "collector.pem", "agent.key", "ca.pem").expect_err("another key");
        assert!(
            e.to_string()
                .starts_with("tls.cert and tls.key: not usable: "),
            "{e}"
        );
    }

    /// That the config refuses clients without a certificate is tested over real sockets in
    /// health-metrics (tests/https.rs), which serves it.
    #[test]
    fn https_server_offers_h2_and_http1() {
        let pki = make_certs();
        let config = https(pki.path(), "collector.pem", "collector.key", "ca.pem").expect("ok");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
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
