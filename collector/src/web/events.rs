//! Live updates: `GET /api/events` is a server-sent event stream that says "something
//! changed" (`change`, with a generation number) at most once a second, and `ping` every
//! few seconds so the page can tell a quiet fleet from a lost collector. The page then
//! re-reads the view it shows; nothing else is pushed, so a browser on a 10,000-node fleet
//! gets one small event a second, not the fleet's report rate.
//!
//! One task counts changes for every browser (`count_changes`, fed by `WatchFleet` and
//! `WatchAlerts` through the reader); each browser's stream only watches that count.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::reader::FleetReader;
use super::WebState;

/// At most one `change` per this, however fast reports arrive.
const MIN_SPACING: Duration = Duration::from_secs(1);
/// A `ping` at least this often; the page calls the collector lost after three missed.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// How often the count of applied reports is looked at.
const REPORTS_EVERY: Duration = Duration::from_millis(500);
/// Browsers following the page at once; more get 503 (each holds a task and a connection).
pub const MAX_STREAMS: usize = 256;

/// Counts changes until shutdown: fleet and alert events as they come, and applied reports
/// (readings, ages and counters change with every report, and no watch stream says so).
pub async fn count_changes(
    reader: FleetReader,
    counter: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut changes = match reader.changes().await {
        Ok(changes) => Some(changes),
        Err(status) => {
            tracing::error!(
                message = status.message(),
                "the status page cannot watch the fleet: it follows reports only"
            );
            None
        }
    };
    let mut reports = tokio::time::interval(REPORTS_EVERY);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = reader.reports_recorded();
    loop {
        let next = async {
            match changes.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            item = next => match item {
                Some(()) => counter.send_modify(|n| *n += 1),
                None => changes = None, // the streams end at shutdown; reports still count
            },
            _ = reports.tick() => {
                let now = reader.reports_recorded();
                if now != seen {
                    seen = now;
                    counter.send_modify(|n| *n += 1);
                }
            }
        }
    }
}

/// `GET /api/events`; 503 when [`MAX_STREAMS`] browsers already follow.
pub async fn events(State(web): State<WebState>) -> Response {
    let Ok(slot) = web.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many browsers follow this collector's page; reload later\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(4);
    let mut changes = web.changes.clone();
    let shutdown = web.shutdown.clone();
    tokio::spawn(async move {
        let _slot = slot;
        // The first event tells the page the stream is up (and which generation it has).
        let mut last_sent = *changes.borrow_and_update();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut event = Some(change(last_sent));
        loop {
            if let Some(e) = event.take() {
                // A browser that stops reading fills its buffer: its stream ends here rather
                // than wait (the next connection starts from the current generation).
                if tx.try_send(Ok(e)).is_err() {
                    break;
                }
            }
            event = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                _ = ping.tick() => Some(Event::default().event("ping").data(last_sent.to_string())),
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Let a burst of reports settle into one event.
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(MIN_SPACING) => {}
                    }
                    last_sent = *changes.borrow_and_update();
                    Some(change(last_sent))
                }
            };
        }
    });
    Sse::new(ReceiverStream::new(rx)).into_response()
}

fn change(generation: u64) -> Event {
    Event::default()
        .event("change")
        .data(generation.to_string())
}
