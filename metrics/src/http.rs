//! The `/metrics` HTTP endpoint: plain HTTP/1.1 (what Prometheus scrapes) with axum, which is
//! already in the tree as tonic's router.
//!
//! A scrape calls the daemon's render function on the blocking pool: the function takes what
//! it needs from the daemon's state under a short lock (or from a watch channel) and formats
//! outside it, so a scrape of a large fleet never holds a runtime worker that ingest or device
//! supervision need, and between scrapes nothing is computed at all.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of the Prometheus text format this endpoint serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders one scrape from the daemon's current state.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds the metrics listener. Separate from [`serve`] so that a daemon fails at start, with
/// the address named, when the port is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` until `cancel` fires. Connections still open then are dropped with
/// the task; nothing waits for a scraper.
pub async fn serve(listener: TcpListener, render: Render, cancel: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(index))
        .with_state(render);
    tokio::select! {
        () = cancel.cancelled() => {}
        result = axum::serve(listener, app) => {
            if let Err(error) = result {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        }
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
