//! One simulated agent: its own Report stream, one report a second, acknowledgements read and
//! checked, every sample accounted for.
//!
//! Like the real uplink, an agent hands reports to a bounded queue in front of the stream. If
//! the queue is full when a report is due (the collector is not keeping up and HTTP/2 flow
//! control is holding the stream), the report is dropped and counted here, and its sequence
//! number is spent anyway: the collector must see the gap and count it as missing. That is
//! the "no sample dropped without being counted" check.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::histogram::Histogram;
use crate::snapshot::Template;
use crate::wire;

/// Counters every agent adds to while running, read for progress lines.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub dropped: AtomicU64,
}

/// What one agent does.
pub struct Spec {
    pub node: String,
    pub boot_id: String,
    /// Whether this agent's first device runs hot every other `toggle_every` reports.
    pub toggles: bool,
    pub toggle_every: u64,
    /// Reports queued in front of the stream before one is dropped.
    pub queue: usize,
    pub first_report: Instant,
    /// Acks of reports sent from here on count into the latency figures.
    pub measure_from: Instant,
    /// No report is due at or after this.
    pub stop_at: Instant,
    /// How long after `stop_at` the remaining acks may take.
    pub drain: Duration,
}

/// How an agent's run ended, with its own counts.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: u64,
    /// Reports whose acknowledgement came back (acks are cumulative: acked_seq covers all up to it).
    pub acked: u64,
    /// Dropped because the queue was full, followed by a later report (a gap the collector sees).
    pub dropped_in_gaps: u64,
    /// Dropped after the agent's last sent report: no later report reveals them as a gap.
    pub dropped_at_end: u64,
    /// Alert events this agent's reports should cause (its condition changed between sends).
    pub expected_alert_events: u64,
    /// Ticks that came too late to keep the 1 Hz schedule (the load generator itself was behind).
    pub ticks_skipped: u64,
    pub error: Option<String>,
}

pub async fn run(
    channel: Channel,
    spec: Spec,
    template: Arc<Template>,
    live: Arc<Live>,
    ack_latency: Arc<Histogram>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let (queue, reports) = mpsc::channel::<Bytes>(spec.queue.max(1));
    let mut acks = match open_report_stream(channel, reports).await {
        Ok(acks) => acks,
        Err(status) => {
            outcome.error = Some(format!("{}: Report: {status}", spec.node));
            return outcome;
        }
    };

    let mut ticker = tokio::time::interval_at(spec.first_report.into(), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut queue = Some(queue);
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut seq = 0u64;
    let mut hot_before = false;
    let mut last_tick: Option<Instant> = None;
    let drain_deadline = tokio::time::Instant::from(spec.stop_at + spec.drain);

    loop {
        tokio::select! {
            tick = ticker.tick(), if queue.is_some() => {
                let now = Instant::now();
                if now >= spec.stop_at {
                    // Closing our side ends the stream once the collector has read everything.
                    queue = None;
                    continue;
                }
                if let Some(previous) = last_tick {
                    let behind = tick.into_std().saturating_duration_since(previous).as_secs();
                    outcome.ticks_skipped += behind.saturating_sub(1);
                }
                last_tick = Some(tick.into_std());
                seq += 1;
                let hot = spec.toggles && (seq / spec.toggle_every.max(1)) % 2 == 1;
                let body = if hot { &template.hot } else { &template.healthy };
                let report = wire::report(body, &spec.node, &spec.boot_id, seq, SystemTime::now().into());
                let Some(sender) = queue.as_ref() else { continue };
                match sender.try_send(report) {
                    Ok(()) => {
                        outcome.sent += 1;
                        live.sent.fetch_add(1, Ordering::Relaxed);
                        in_flight.push_back((seq, now));
                        outcome.dropped_in_gaps += outcome.dropped_at_end;
                        outcome.dropped_at_end = 0;
                        if hot != hot_before {
                            outcome.expected_alert_events += 1;
                            hot_before = hot;
                        }
                    }
                    Err(TrySendError::Full(_)) => {
                        outcome.dropped_at_end += 1;
                        live.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Closed(_)) => {
                        outcome.error = Some(format!("{}: the Report stream closed while sending", spec.node));
                        break;
                    }
                }
            }
            ack = tokio::time::timeout_at(drain_deadline, acks.message()) => {
                let ack = match ack {
                    Ok(Ok(Some(ack))) => ack,
                    // The collector ended the stream after our side closed: done.
                    Ok(Ok(None)) => break,
                    Ok(Err(status)) => {
                        outcome.error = Some(format!("{}: ack stream: {status}", spec.node));
                        break;
                    }
                    Err(_) => {
                        outcome.error = Some(format!(
                            "{}: {} reports still unacknowledged {:?} after the end",
                            spec.node, in_flight.len(), spec.drain
                        ));
                        break;
                    }
                };
                if ack.boot_id != spec.boot_id {
                    outcome.error = Some(format!(
                        "{}: ack for boot {:?}, expected {:?}", spec.node, ack.boot_id, spec.boot_id
                    ));
                    break;
                }
                let now = Instant::now();
                while let Some(&(sent_seq, sent_at)) = in_flight.front() {
                    if sent_seq > ack.acked_seq {
                        break;
                    }
                    in_flight.pop_front();
                    outcome.acked += 1;
                    live.acked.fetch_add(1, Ordering::Relaxed);
                    if sent_at >= spec.measure_from {
                        ack_latency.record(now.saturating_duration_since(sent_at));
                    }
                }
            }
        }
    }
    outcome
}

/// The Collector's Report call, with reports already encoded (see `wire`).
async fn open_report_stream(
    channel: Channel,
    reports: mpsc::Receiver<Bytes>,
) -> Result<tonic::Streaming<health_proto::v1::ReportAck>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("connection not ready: {error}")))?;
    let path = PathAndQuery::from_static("/health.v1.Collector/Report");
    let request = tonic::Request::new(ReceiverStream::new(reports));
    Ok(grpc
        .streaming(request, path, wire::PreEncoded)
        .await?
        .into_inner())
}
