//! `serve_router` over real loopback sockets, with a throwaway PKI from
//! `tests/tls/make-certs.sh`: over mutual TLS only clients with a certificate from the
//! configured CA get an answer, and handlers see the peer address and the certificate's
//! names; in plain mode handlers see the loopback peer; cancelling closes the port.
//! Requests are written by hand (HTTP/1.1, `Connection: close`) so no client crate is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use health_daemon::tls::{https_server, PemFile};
use health_metrics::http::{metrics_routes, serve, serve_router, PeerCertificate, CONTENT_TYPE};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every wait in these tests is bounded by this; none is asserted on.
const BOUND: Duration = Duration::from_secs(20);

/// A throwaway PKI (CA, collector server certificate, bob-reader client certificate, and a
/// rogue CA's client certificate) in a fresh directory.
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

fn server_config(pki: &Path) -> Arc<rustls::ServerConfig> {
    let (cert, key, ca) = (
        pki.join("collector.pem"),
        pki.join("collector.key"),
        pki.join("ca.pem"),
    );
    https_server(
        PemFile::new("tls.cert", &cert),
        PemFile::new("tls.key", &key),
        PemFile::new("tls.client_ca", &ca),
    )
    .expect("the collector's TLS files")
}

/// A client trusting `pki`'s CA, presenting `identity` (a `NAME` with `NAME.pem`/`NAME.key`
/// in `identity_dir`) if given.
fn client_config(pki: &Path, identity: Option<(&Path, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.pem")).expect("ca.pem") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((dir, name)) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .expect("client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key =
                PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Echoes what the server knows of the caller.
async fn who(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    cert: Option<Extension<PeerCertificate>>,
) -> String {
    let subjects = match cert {
        Some(Extension(cert)) => cert.subjects.join(","),
        None => "none".to_string(),
    };
    format!("peer={} subjects={subjects}\n", peer.ip())
}

/// `serve_router` with the echo route on a fresh loopback port.
async fn start(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let cancel = CancellationToken::new();
    let app = Router::new().route("/who", get(who));
    let server = tokio::spawn(serve_router(listener, app, tls, cancel.clone()));
    (addr, cancel, server)
}

/// Writes `GET path` with `Connection: close` and reads until the server closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// One HTTPS request; `Err` if the handshake or the exchange failed.
async fn https_get(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("a DNS name");
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await?;
        exchange(tls, path).await
    };
    tokio::time::timeout(BOUND, attempt)
        .await
        .expect("the HTTPS exchange ended in time")
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        exchange(tcp, path).await
    };
    tokio::time::timeout(BOUND, attempt)
        .await
        .expect("the HTTP exchange ended in time")
        .expect("an HTTP reply")
}

/// Cancels the server, waits for it to return, and checks the port refuses connections.
async fn stop(addr: SocketAddr, cancel: CancellationToken, server: JoinHandle<()>) {
    cancel.cancel();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("serve_router returned after cancel")
        .expect("serve_router did not panic");
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("the port is closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// A refused client gets no HTTP reply: its handshake fails, or (TLS 1.3, where the client
/// finishes before the server has checked its certificate) the server's alert or close ends
/// the exchange before any response.
fn assert_refused(reply: std::io::Result<String>) {
    if let Ok(text) = reply {
        assert!(
            !text.contains("HTTP/"),
            "a refused client got a reply: {text}"
        );
    }
}

#[tokio::test]
async fn a_client_certificate_from_the_ca_is_served_with_its_subjects() {
    let pki = make_certs();
    let (addr, cancel, server) = start(Some(server_config(pki.path()))).await;
    let bob = client_config(pki.path(), Some((pki.path(), "bob-reader")));
    let reply = https_get(addr, bob, "/who").await.expect("bob is served");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\npeer=127.0.0.1 subjects=bob-reader\n"),
        "{reply}"
    );
    stop(addr, cancel, server).await;
}

#[tokio::test]
async fn clients_without_a_certificate_or_from_another_ca_are_refused() {
    let pki = make_certs();
    let (addr, cancel, server) = start(Some(server_config(pki.path()))).await;

    let anonymous = client_config(pki.path(), None);
    assert_refused(https_get(addr, anonymous, "/who").await);
    // rogue.pem is CN=alice-operator, signed by rogue-ca: the right name, the wrong CA.
    let rogue = client_config(pki.path(), Some((pki.path(), "rogue")));
    assert_refused(https_get(addr, rogue, "/who").await);
    // A certificate of a CA made in another directory, with the same file names.
    let other = make_certs();
    let stranger = client_config(pki.path(), Some((other.path(), "bob-reader")));
    assert_refused(https_get(addr, stranger, "/who").await);

    // The refusals were not fatal: the listener still serves a good client.
    let bob = client_config(pki.path(), Some((pki.path(), "bob-reader")));
    let reply = https_get(addr, bob, "/who").await.expect("bob is served");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    stop(addr, cancel, server).await;
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_the_others() {
    let pki = make_certs();
    let (addr, cancel, server) = start(Some(server_config(pki.path()))).await;
    // Connected, never says a word: its handshake waits on its own task. Plain std sockets,
    // so the check below is a real read(2) rather than tokio's cached readiness.
    let silent = std::net::TcpStream::connect(addr).expect("connect");
    let mut half_done = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut half_done, b"\x16\x03\x01").expect("part of a ClientHello");

    let bob = client_config(pki.path(), Some((pki.path(), "bob-reader")));
    let reply = https_get(addr, bob, "/who").await.expect("bob is served");
    assert!(reply.ends_with("subjects=bob-reader\n"), "{reply}");
    // Both are still waiting on their handshakes (the server neither answered nor closed
    // them): bob was not served by their timing out first, as a serial accept loop would.
    let mut buf = [0_u8; 1];
    for mut stream in [&silent, &half_done] {
        stream.set_nonblocking(true).expect("non-blocking");
        let pending = std::io::Read::read(&mut stream, &mut buf).expect_err("no data, no close");
        assert_eq!(pending.kind(), std::io::ErrorKind::WouldBlock);
    }
    drop((silent, half_done));
    stop(addr, cancel, server).await;
}

#[tokio::test]
async fn plain_mode_tells_handlers_the_loopback_peer() {
    let (addr, cancel, server) = start(None).await;
    let reply = http_get(addr, "/who").await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\npeer=127.0.0.1 subjects=none\n"),
        "{reply}"
    );
    stop(addr, cancel, server).await;
}

#[tokio::test]
async fn metrics_routes_merge_with_other_routes_over_tls() {
    let pki = make_certs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let cancel = CancellationToken::new();
    let render: health_metrics::http::Render = Arc::new(|| "up 1\n".to_string());
    let app = metrics_routes(render).route("/who", get(who));
    let config = Some(server_config(pki.path()));
    let server = tokio::spawn(serve_router(listener, app, config, cancel.clone()));

    let bob = client_config(pki.path(), Some((pki.path(), "bob-reader")));
    let reply = https_get(addr, bob.clone(), "/metrics")
        .await
        .expect("served");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let content_type = format!("content-type: {CONTENT_TYPE}\r\n");
    assert!(reply.contains(&content_type), "{reply}");
    assert!(reply.ends_with("\r\n\r\nup 1\n"), "{reply}");
    let reply = https_get(addr, bob, "/who").await.expect("served");
    assert!(reply.ends_with("subjects=bob-reader\n"), "{reply}");
    stop(addr, cancel, server).await;
}

#[tokio::test]
async fn serve_still_answers_scrapes_and_stops_on_cancel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let cancel = CancellationToken::new();
    let render: health_metrics::http::Render = Arc::new(|| "up 1\n".to_string());
    let server = tokio::spawn(serve(listener, render, cancel.clone()));
    let reply = http_get(addr, "/metrics").await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("\r\n\r\nup 1\n"), "{reply}");
    let reply = http_get(addr, "/").await;
    assert!(
        reply.ends_with("Prometheus metrics are at /metrics\n"),
        "{reply}"
    );
    stop(addr, cancel, server).await;
}
