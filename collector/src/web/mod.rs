//! The status page: a read-only web view of what this collector knows (the fleet, a node, a
//! device with its last hour of temperature and power, alerts with their priority and
//! silence or maintenance state, incidents with their timelines and export links,
//! maintenance windows and silences), served on `metrics_listen` and optionally on
//! `[web] listen`.
//!
//! - `reader.rs`: the page's only handle on the collector, the read RPCs and nothing else.
//! - `api.rs`: the JSON views (written by `health_view::json`, as `agent-ctl --json`).
//! - `events.rs`: server-sent events that tell the page when to re-read.
//! - `access.rs`: who may read, the gRPC API's rule for the page's listeners.
//! - `assets/`: the page itself, compiled into the binary (no CDN, nothing fetched at run
//!   time); plain HTML, CSS and JavaScript with no framework and no build step.
//!
//! There is no action button, and no route that changes anything: everything that changes
//! a device or a silence goes through `agent-ctl` and the audit log.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

mod access;
mod api;
mod events;
mod query;
mod reader;

pub use access::Access;
pub use reader::FleetReader;

/// How often trails of forgotten nodes are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What every handler reads.
#[derive(Clone)]
pub struct WebState {
    reader: FleetReader,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    /// Slots for browsers following `/api/events`.
    streams: Arc<Semaphore>,
    /// The history database is on (incidents and device history need it).
    history: bool,
    chart_step: Duration,
}

/// The page's shared state and its background tasks (the change counter, the trail
/// janitor), which stop with `shutdown`.
pub fn start(
    reader: FleetReader,
    history: bool,
    chart_step: Duration,
    shutdown: CancellationToken,
) -> WebState {
    let (counter, changes) = watch::channel(0u64);
    tokio::spawn(events::count_changes(
        reader.clone(),
        counter,
        shutdown.clone(),
    ));
    let janitor = reader.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => janitor.prune_trails().await,
            }
        }
    });
    WebState {
        reader,
        changes,
        streams: Arc::new(Semaphore::new(events::MAX_STREAMS)),
        shutdown,
        history,
        chart_step,
    }
}

/// The page's routes behind `access`.
pub fn routes(state: WebState, access: Access) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/summary", get(api::summary))
        .route("/api/nodes", get(api::nodes))
        .route("/api/node/{node}", get(api::node))
        .route("/api/device/{node}/{device}", get(api::device))
        .route("/api/alerts", get(api::alerts))
        .route("/api/incidents", get(api::incidents))
        .route("/api/incident/{id}", get(api::incident))
        .route("/api/incident/{id}/{file}", get(api::export))
        .route("/api/maintenance", get(api::maintenance))
        .route("/api/events", get(events::events))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(access, access::gate))
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Only this page's own files and API: no inline script, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn style_css() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: the status page is at /, Prometheus metrics at /metrics\n",
    )
        .into_response()
}
