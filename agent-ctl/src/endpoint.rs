//! Where agent-ctl connects: a Unix socket (`unix:///run/health-agent/agent.sock`, the
//! default), plain TCP (`http://host:port`) or TLS (`https://host:port`, trusting the system
//! roots or `--ca-cert`, presenting `--client-cert`/`--client-key` for mutual TLS).
//!
//! Over TLS 1.3 a server checks the client's certificate only after the client has finished
//! its side of the handshake, so a refused certificate would surface on the first call as a
//! bare "operation was canceled". An https:// connection is therefore confirmed with a
//! `grpc.health.v1` check (served without authorization by the agent and the collector), and
//! a refusal is reported as what it is, naming the certificate flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// PEM files for https:// endpoints.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

pub const DEFAULT_AGENT_ENDPOINT: &str = "unix:///run/health-agent/agent.sock";

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Unix(PathBuf),
    Http(String),
    Https(String),
}

/// Parses an endpoint. A bare `host:port` means `http://host:port`.
pub fn parse(s: &str) -> anyhow::Result<Target> {
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            bail!("endpoint {s:?}: a unix endpoint needs an absolute path, e.g. unix:///run/health-agent/agent.sock");
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    if s.starts_with("https://") {
        return Ok(Target::Https(s.to_string()));
    }
    if s.starts_with("http://") {
        return Ok(Target::Http(s.to_string()));
    }
    if s.contains("://") {
        bail!("endpoint {s:?}: expected unix:///path, http://host:port or https://host:port");
    }
    if s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Ok(Target::Http(format!("http://{s}")));
    }
    bail!("endpoint {s:?}: expected unix:///path, http://host:port, https://host:port or host:port")
}

fn read(flag: &str, path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
}

pub async fn connect(target: &Target, tls: &TlsFiles) -> anyhow::Result<Channel> {
    let connect_timeout = Duration::from_secs(3);
    match target {
        Target::Unix(path) => {
            let p = path.clone();
            // The URI is required by the HTTP/2 client but unused: the connector dials the socket.
            Endpoint::from_static("http://agent.local")
                .connect_timeout(connect_timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await
                .with_context(|| format!("cannot connect to {}", path.display()))
        }
        Target::Http(url) | Target::Https(url) => {
            let mut ep = Endpoint::from_shared(url.clone())
                .with_context(|| format!("invalid endpoint {url:?}"))?
                .connect_timeout(connect_timeout);
            if matches!(target, Target::Https(_)) {
                let mut config = match &tls.ca_cert {
                    Some(path) => ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(read("--ca-cert", path)?)),
                    None => ClientTlsConfig::new().with_native_roots(),
                };
                if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
                    config = config.identity(Identity::from_pem(
                        read("--client-cert", cert)?,
                        read("--client-key", key)?,
                    ));
                }
                ep = ep.tls_config(config).context("configuring TLS")?;
            }
            let channel = match ep.connect().await {
                Ok(c) => c,
                Err(e) if matches!(target, Target::Https(_)) => {
                    let trusted = tls
                        .ca_cert
                        .as_ref()
                        .map_or("the system roots".to_string(), |p| {
                            format!("--ca-cert {}", p.display())
                        });
                    let cause = root_cause(&e);
                    if cause.contains("invalid peer certificate") {
                        bail!("cannot connect to {url}: {cause}: the server's certificate does not verify against {trusted} (or does not name the host in the URL)");
                    }
                    bail!("cannot connect to {url}: {cause}");
                }
                Err(e) => return Err(e).with_context(|| format!("cannot connect to {url}")),
            };
            if matches!(target, Target::Https(_)) {
                confirm_tls(&channel, url, tls).await?;
            }
            Ok(channel)
        }
    }
}

/// One health check over the new channel: any gRPC answer (even "unknown service") means the
/// server accepted us; a transport failure means the TLS session was refused.
async fn confirm_tls(channel: &Channel, url: &str, tls: &TlsFiles) -> anyhow::Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut client = HealthClient::new(channel.clone());
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    let status = match reply {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(status)) => status,
        Err(_) => bail!("cannot connect to {url}: no answer within 5s after the TLS handshake"),
    };
    // A status the server sent (it has a message and no transport error under it) is an
    // answer: the session is fine.
    let transport = std::error::Error::source(&status).is_some()
        || matches!(
            status.code(),
            tonic::Code::Cancelled | tonic::Code::Unavailable
        );
    if !transport {
        return Ok(());
    }
    let cause = root_cause(&status);
    match &tls.client_cert {
        None => bail!(
            "cannot connect to {url}: the server closed the TLS session ({cause}); it probably \
             requires a client certificate: pass --client-cert and --client-key"
        ),
        Some(cert) => bail!(
            "cannot connect to {url}: the server closed the TLS session ({cause}); it probably \
             does not accept the client certificate {}: is it signed by the server's client_ca?",
            cert.display()
        ),
    }
}

/// The innermost error's message (the rustls alert, the I/O error), else the error itself.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(e) = deepest.source() {
        deepest = e;
    }
    match deepest.to_string() {
        m if m.is_empty() => error.to_string(),
        m => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes_and_bare_addresses() {
        assert_eq!(
            parse("unix:///tmp/a.sock").unwrap(),
            Target::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            parse("http://10.0.0.1:7070").unwrap(),
            Target::Http("http://10.0.0.1:7070".into())
        );
        assert_eq!(
            parse("https://c:7070").unwrap(),
            Target::Https("https://c:7070".into())
        );
        assert_eq!(
            parse("127.0.0.1:7070").unwrap(),
            Target::Http("http://127.0.0.1:7070".into())
        );
        assert!(parse("unix://relative.sock").is_err());
        assert!(parse("ftp://x:1").is_err());
        assert!(parse("nohost").is_err());
    }
}
