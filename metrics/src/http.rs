//! The daemons' HTTP endpoints: `GET /metrics` (plain HTTP/1.1, what Prometheus scrapes) with
//! axum, which is already in the tree as tonic's router, and [`serve_router`], which serves any
//! axum `Router` either plainly or over mutual TLS, so the collector can put its status page
//! next to `/metrics` under the same access rules as its gRPC API.
//!
//! A scrape calls the daemon's render function on the blocking pool: the function takes what
//! it needs from the daemon's state under a short lock (or from a watch channel) and formats
//! outside it, so a scrape of a large fleet never holds a runtime worker that ingest or device
//! supervision need, and between scrapes nothing is computed at all.
//!
//! A daemon whose page grows with what it holds serves it with [`streamed_metrics_routes`]
//! instead: the request's query is checked first (a bad one is a 400 naming the parameter),
//! then the page is written on the blocking pool into a bounded channel of chunks that the
//! response body reads (`crate::stream`), so a scrape costs a few chunks of memory, not a page.
//!
//! Handlers learn who is calling from request extensions: `ConnectInfo<SocketAddr>` in both
//! modes, and over TLS a [`PeerCertificate`] with the verified client certificate's names,
//! rendered by `health_daemon::certificate_subjects` as the gRPC side renders them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;

/// The content type of the Prometheus text format this endpoint serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// At most this many TLS connections (handshaking or served) at once; further clients wait in
/// the kernel's accept queue, so the listener cannot be used to exhaust the daemon's memory or
/// descriptors.
pub const MAX_TLS_CONNECTIONS: usize = 256;

/// After a failed `accept` that is not about one connection (out of descriptors), wait this
/// long before the next, rather than spinning on the same error.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Renders one scrape from the daemon's current state.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A `/metrics` page written as a stream (see [`streamed_metrics_routes`]).
pub trait StreamedPage: Send + Sync + 'static {
    /// What a request asks for, once checked.
    type Plan: Send + 'static;

    /// Checks the request's raw query string (`None` without one). `Err` is the message of a
    /// 400 answer: it names the parameter and what was expected.
    fn plan(&self, query: Option<&str>) -> Result<Self::Plan, String>;

    /// Writes the page for `plan`, on a blocking thread. Takes what it needs from the daemon's
    /// state under short locks, as [`Render`] does, and returns early once the scraper is gone.
    fn write(
        &self,
        plan: Self::Plan,
        out: &mut crate::stream::ChunkWriter,
    ) -> Result<(), crate::stream::ScraperGone>;
}

/// The verified client certificate of a TLS connection, in every request's extensions
/// (`Extension<PeerCertificate>`). Absent in plain mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The leaf certificate's CNs and SANs as `health_daemon::certificate_subjects` renders
    /// them; empty if x509-parser cannot read a certificate the CA nonetheless signed.
    pub subjects: Vec<String>,
}

/// Binds the metrics listener. Separate from [`serve`] so that a daemon fails at start, with
/// the address named, when the port is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` (and a one-line index at `/`) until `cancel` fires. Connections
/// still open then are left to end on their own; nothing waits for a scraper.
pub async fn serve(listener: TcpListener, render: Render, cancel: CancellationToken) {
    let app = metrics_routes(render).route("/", get(index));
    serve_router(listener, app, None, cancel).await;
}

/// The `GET /metrics` route alone, for a daemon to merge with routes of its own.
pub fn metrics_routes(render: Render) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(render)
}

/// `GET /metrics` written by `page` as a stream: the body is chunked, memory per scrape is
/// bounded by `crate::stream::CHUNKS_IN_FLIGHT` chunks, and a renderer that panics ends the
/// response with an error rather than a short page.
pub fn streamed_metrics_routes<P: StreamedPage>(page: Arc<P>) -> Router {
    Router::new()
        .route("/metrics", get(streamed_scrape::<P>))
        .with_state(page)
}

async fn streamed_scrape<P: StreamedPage>(
    State(page): State<Arc<P>>,
    RawQuery(query): RawQuery,
) -> Response {
    let plan = match page.plan(query.as_deref()) {
        Ok(plan) => plan,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(crate::stream::CHUNKS_IN_FLIGHT);
    let failed = tx.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = crate::stream::ChunkWriter::new(tx);
        // An error here only means the scraper hung up: nothing is left to do.
        let _ = page.write(plan, &mut out).and_then(|()| out.finish());
    });
    // The body ends when every sender is gone: the writer's when it returns, this one once
    // the writer is known to have ended well, or after it has sent the error of a panic.
    tokio::spawn(async move {
        if let Err(error) = writer.await {
            tracing::error!(%error, "rendering metrics failed");
            let cut = std::io::Error::other("rendering metrics failed");
            let _ = failed.send(Err(cut)).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Serves `app` on `listener` until `cancel` fires, then returns, dropping the listener so its
/// port refuses new connections.
///
/// - `tls: None`: plain HTTP/1.1; handlers can take `ConnectInfo<SocketAddr>`. Connections
///   open at cancel are left to end on their own.
/// - `tls: Some(config)` (from `health_daemon::tls::https_server`): each connection's
///   handshake runs on its own task under `health_daemon::tls::HANDSHAKE_TIMEOUT`, so a slow
///   or silent client never holds up the accept loop; a failed handshake is logged with the
///   peer and dropped. The connection is then served with HTTP/1.1 or h2 (by ALPN), with
///   `ConnectInfo<SocketAddr>` and [`PeerCertificate`] in every request. At most
///   [`MAX_TLS_CONNECTIONS`] at once; at cancel, open connections are dropped.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    cancel: CancellationToken,
) {
    match tls {
        None => serve_plain(listener, app, cancel).await,
        Some(config) => serve_tls(listener, app, TlsAcceptor::from(config), cancel).await,
    }
}

async fn serve_plain(listener: TcpListener, app: Router, cancel: CancellationToken) {
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::select! {
        () = cancel.cancelled() => {}
        result = axum::serve(listener, service) => {
            if let Err(error) = result {
                tracing::error!(%error, "the HTTP endpoint stopped");
            }
        }
    }
}

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_TLS_CONNECTIONS));
    loop {
        // A slot first, then the connection: at the bound, clients queue in the kernel rather
        // than in the daemon.
        let permit = tokio::select! {
            () = cancel.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed: the semaphore lives in this function.
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let (acceptor, app, cancel) = (acceptor.clone(), app.clone(), cancel.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tls_connection(tcp, peer, acceptor, app, permit) => {}
                    }
                });
            }
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "an HTTPS connection failed before it was accepted");
            }
            Err(error) => {
                tracing::error!(%error, "accepting HTTPS connections failed; retrying in 1s");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_RETRY) => {}
                }
            }
        }
    }
}

/// Errors of one connection (reset before accept): the listener itself is fine.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// One TLS connection: handshake, then HTTP until either side closes. `_slot` is held to the
/// end, so it counts against [`MAX_TLS_CONNECTIONS`].
async fn tls_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    _slot: OwnedSemaphorePermit,
) {
    let timeout = health_daemon::tls::HANDSHAKE_TIMEOUT;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            log_handshake_failure(peer, &error);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "HTTPS client did not finish its TLS handshake");
            return;
        }
    };
    let subjects = match stream.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => health_daemon::certificate_subjects(leaf).unwrap_or_else(|error| {
            tracing::warn!(%peer, %error, "HTTPS client certificate has no readable names");
            Vec::new()
        }),
        // The verifier requires a certificate, so this is a config that does not: close the
        // connection rather than serve a request that carries no PeerCertificate-backed name
        // (a handler's "has a certificate" check must never pass for an anonymous client).
        _ => {
            tracing::warn!(%peer, "HTTPS client presented no certificate; closing");
            return;
        }
    };
    let service =
        Extension(ConnectInfo(peer)).layer(Extension(PeerCertificate { subjects }).layer(app));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer arms HTTP/1's header read timeout (30 s): a client that stops mid-request
    // does not keep its slot.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let served = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
    }
}

/// A certificate the CA did not sign (or one expired) is worth a warning: someone is using a
/// wrong certificate or probing. Anything else (no certificate, not TLS at all, a reset) is
/// what scanners and load balancers do all day.
fn log_handshake_failure(peer: SocketAddr, error: &std::io::Error) {
    let bad_certificate = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if bad_certificate {
        tracing::warn!(%peer, %error, "HTTPS client certificate refused");
    } else {
        tracing::debug!(%peer, %error, "HTTPS TLS handshake failed");
    }
}

async fn scrape(State(render): State<Render>) -> Response {
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn index() -> &'static str {
    "Prometheus metrics are at /metrics\n"
}
