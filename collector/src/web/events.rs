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
use axum::response::sse::{Event, Sse};
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

/// Counts changes until shutdown (when the watch streams end).
pub async fn count_changes(
    reader: FleetReader,
    counter: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut changes = match reader.changes().await {
        Ok(changes) => changes,
        Err(status) => {
            tracing::error!(
                message = status.message(),
                "the status page cannot watch the fleet: it will not update by itself"
            );
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            next = changes.next() => match next {
                Some(()) => counter.send_modify(|n| *n += 1),
                None => break,
            },
        }
    }
}

/// `GET /api/events`.
pub async fn events(State(web): State<WebState>) -> Sse<ReceiverStream<Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(4);
    let mut changes = web.changes.clone();
    let shutdown = web.shutdown.clone();
    tokio::spawn(async move {
        // The first event tells the page the stream is up (and which generation it has).
        let mut last_sent = *changes.borrow_and_update();
        if tx.send(Ok(change(last_sent))).await.is_err() {
            return;
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                _ = ping.tick() => Event::default().event("ping").data(last_sent.to_string()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Let a burst of reports settle into one event.
                    tokio::time::sleep(MIN_SPACING).await;
                    last_sent = *changes.borrow_and_update();
                    change(last_sent)
                }
            };
            if tx.send(Ok(event)).await.is_err() {
                break;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
}

fn change(generation: u64) -> Event {
    Event::default()
        .event("change")
        .data(generation.to_string())
}
