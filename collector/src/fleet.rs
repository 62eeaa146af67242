//! Fleet state: what the collector currently knows about every node that has reported.
//!
//! A health sample is identified by (node, boot id, sequence number) (architecture invariant 5).
//! This module is where that identity is enforced: a report whose seq was already applied is a
//! duplicate (counted and dropped), a jump in seq is a gap (counted as missing), and a new boot
//! id starts a fresh sequence. The service acknowledges each report with what this module says
//! was applied, so an agent can drop what it buffered.
//!
//! Watchers (WatchFleet) get a `FleetEvent` when a node appears, restarts (new boot id),
//! changes health state, goes stale / comes back, or is forgotten; not on every report, so a
//! quiet fleet is a quiet stream. A restart of a node already held is also a RESTART event in
//! the history (`with_history`), written after the lock is released. Staleness is judged on the monotonic clock, so a wall-clock
//! step on the collector host cannot make the whole fleet stale at once.
//!
//! The fleet does not keep nodes forever. The sweep removes a node with no report for
//! `forget_after` (monotonic clock too), so a decommissioned host stops being listed and its
//! alerts can be resolved; watchers get a last event for it, stale with state UNKNOWN, and then
//! nothing. If it reports again later it is a new node, starting afresh. And the fleet holds at
//! most `max_nodes` nodes: a report under a new node name beyond that is refused (`FleetFull`),
//! so a client sending ever-new names (Report streams are not authenticated yet) cannot grow
//! memory without limit. Nodes already held are never refused.
//!
//! Generations, which order alert evaluation, come from one fleet-wide counter, so a node that
//! is forgotten and comes back still gets generations above every one it had before.
//!
//! The state is in one `std::sync::RwLock`. It is never held across an `.await`: every method
//! here is synchronous and short. Events are sent while the lock is held, so every watcher sees
//! them in the order the state changed, and `watch()` can take "state now + later changes"
//! without a gap or an overlap.
//!
//! The agents' `NodeSnapshot` is stored as received (it is the payload that GetNode and
//! QueryDevices return) and the summaries are built directly as `NodeSummary`, the type the
//! watchers receive; nothing here knows about gRPC transport or status codes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use health_proto::v1::{
    Device, DeviceKind, FleetDevice, FleetEvent, FleetNode, HealthState, MissingRange,
    NodeSnapshot, NodeSummary, SeqRange,
};
use tokio::sync::broadcast;

use crate::history::{HistoryEvent, HistorySink};

/// How many previous boot ids of a node are remembered, so that a late report from an agent
/// process that has since been replaced is recognised rather than taken for a new boot.
const RETIRED_BOOTS_KEPT: usize = 4;

/// How many missing ranges are kept per node (the most recent); `missing_total` counts all.
const MISSING_RANGES_KEPT: usize = 32;

/// `MissingRange.source` of a gap the collector saw in the seqs it received.
pub const MISSING_GAP: &str = "gap";
/// `MissingRange.source` of a range the agent reported dropping before this collector saw it.
pub const MISSING_DROPPED_BY_AGENT: &str = "dropped by agent";

/// How much of a refused node's name goes into logs and errors: the name came from an
/// unauthenticated peer and may be as long as a whole message.
const REFUSED_NAME_SHOWN: usize = 128;

/// How long the fleet keeps nodes, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A node with no report for this long is stale.
    pub stale_after: Duration,
    /// A node with no report for this long is forgotten (removed). Longer than `stale_after`.
    pub forget_after: Duration,
    /// Most nodes held at once; a report under a new node name beyond this is refused.
    pub max_nodes: usize,
}

/// One accepted or rejected health report, as the fleet sees it (already validated).
#[derive(Debug, Clone)]
pub struct Report {
    pub node: String,
    pub boot_id: String,
    pub seq: u64,
    pub snapshot: NodeSnapshot,
}

/// When and from where a report arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Address of the stream the report came on, for operators tracing a misbehaving agent.
    pub peer: &'a str,
    /// Monotonic arrival time: the only clock used for staleness.
    pub at: Instant,
    /// Wall-clock arrival time: shown to people as `last_seen`.
    pub wall: SystemTime,
}

/// What applying a report did. Every variant carries the seq to acknowledge: every seq of that
/// boot up to it has been applied or was a duplicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The report is the node's newest data; its snapshot replaced the previous one.
    Current {
        acked_seq: u64,
        /// Increases with every `Current` report of the node, also across the node being
        /// forgotten and coming back (the counter is fleet-wide); orders alert evaluation.
        generation: u64,
        snapshot: Arc<NodeSnapshot>,
    },
    /// The seq was already applied: counted in duplicates_total and dropped.
    Duplicate { acked_seq: u64 },
    /// A late report from a boot the node has since left (an agent replaying its backlog after
    /// a newer agent process already reported). Counted, acknowledged so the agent can drop
    /// it, but it does not replace the newer boot's snapshot.
    Superseded { acked_seq: u64 },
}

impl Applied {
    pub fn acked_seq(&self) -> u64 {
        match self {
            Applied::Current { acked_seq, .. }
            | Applied::Duplicate { acked_seq }
            | Applied::Superseded { acked_seq } => *acked_seq,
        }
    }
}

/// A report refused because it names a node the fleet does not hold and the fleet is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the collector already holds max_nodes = {max_nodes} nodes; refusing the new node {}",
    shown_name(node)
)]
pub struct FleetFull {
    pub node: String,
    pub max_nodes: usize,
}

/// Report counters summed over nodes, for the fleet-wide series on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestTotals {
    pub reports: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Nodes counted (forgotten ones, in [`Scraped::forgotten`]).
    pub nodes: u64,
}

impl IngestTotals {
    fn add(&mut self, record: &NodeRecord) {
        self.reports = self.reports.saturating_add(record.reports_total);
        self.duplicates = self.duplicates.saturating_add(record.duplicates_total);
        self.missing = self.missing.saturating_add(record.missing_total);
        self.nodes = self.nodes.saturating_add(1);
    }
}

/// What a `/metrics` scrape reads from the fleet ([`Fleet::scrape`]).
pub struct Scraped {
    /// Every node held, sorted by name.
    pub nodes: Vec<(NodeSummary, Arc<NodeSnapshot>)>,
    /// Reports refused because the fleet was full.
    pub refused_total: u64,
    /// The counters of nodes forgotten since the collector started; added to those of the
    /// nodes held, they make fleet-wide counters that only go up.
    pub forgotten: IngestTotals,
}

/// A node the sweeper has just marked stale.
#[derive(Debug, Clone, PartialEq)]
pub struct WentStale {
    pub node: String,
    /// The generation of the node's last applied report (see `Applied::Current`).
    pub generation: u64,
    /// How long ago that report arrived.
    pub silent_for: Duration,
}

/// A node the sweeper has just forgotten (removed from the fleet).
#[derive(Debug, Clone, PartialEq)]
pub struct Forgotten {
    pub node: String,
    /// The generation of the node's last applied report (see `Applied::Current`).
    pub generation: u64,
    /// How long ago that report arrived.
    pub silent_for: Duration,
}

/// What one sweep changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Swept {
    /// Nodes that have just gone stale.
    pub went_stale: Vec<WentStale>,
    /// Nodes removed for having been silent `forget_after` or longer.
    pub forgotten: Vec<Forgotten>,
}

/// QueryDevices filter; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub kind: Option<DeviceKind>,
    pub state: Option<HealthState>,
    pub node: Option<String>,
}

/// Everything the collector keeps about one node.
#[derive(Debug)]
struct NodeRecord {
    snapshot: Arc<NodeSnapshot>,
    boot_id: String,
    last_seq: u64,
    /// The first seq of the current boot this collector received.
    first_seq: u64,
    /// Boots this node has left, newest first, with the highest seq seen of each.
    retired_boots: VecDeque<(String, u64)>,
    /// The first seq this collector received of each retired boot (same order).
    retired_first_seqs: VecDeque<u64>,
    /// The most recent ranges of reports never received, oldest first.
    missing_ranges: VecDeque<MissingRange>,
    last_seen_wall: SystemTime,
    last_seen: Instant,
    peer: String,
    reports_total: u64,
    duplicates_total: u64,
    missing_total: u64,
    stale: bool,
    generation: u64,
}

impl NodeRecord {
    /// The node's health as shown to watchers: a stale node's data is old, so UNKNOWN.
    fn effective_state(&self) -> HealthState {
        if self.stale {
            HealthState::Unknown
        } else {
            reported_state(&self.snapshot)
        }
    }

    fn summary(&self, node: &str) -> NodeSummary {
        NodeSummary {
            node: node.to_string(),
            state: self.effective_state() as i32,
            stale: self.stale,
            last_seen: Some(self.last_seen_wall.into()),
            boot_id: self.boot_id.clone(),
            last_seq: self.last_seq,
            device_count: u32::try_from(self.snapshot.devices.len()).unwrap_or(u32::MAX),
            reports_total: self.reports_total,
            duplicates_total: self.duplicates_total,
            missing_total: self.missing_total,
            peer: self.peer.clone(),
        }
    }
}

impl NodeRecord {
    fn push_missing(&mut self, boot_id: &str, first_seq: u64, last_seq: u64, source: &str) {
        if self.missing_ranges.len() >= MISSING_RANGES_KEPT {
            self.missing_ranges.pop_front();
        }
        self.missing_ranges.push_back(MissingRange {
            range: Some(SeqRange {
                boot_id: boot_id.to_string(),
                first_seq,
                last_seq,
            }),
            source: source.to_string(),
        });
    }

    /// The seqs of `boot_id` this collector has seen the first and last of, if any.
    fn seen_window(&self, boot_id: &str) -> Option<(u64, u64)> {
        if self.boot_id == boot_id {
            return Some((self.first_seq, self.last_seq));
        }
        self.retired_boots
            .iter()
            .zip(&self.retired_first_seqs)
            .find(|((id, _), _)| id == boot_id)
            .map(|((_, last), first)| (*first, *last))
    }

    /// Records the ranges the agent says it dropped unsent, as far as they are news: a range
    /// already recorded (or overlapping one) is not counted again, the part of a range inside
    /// the seqs this collector received was either applied or already recorded as a gap, and
    /// a range beyond the last seq received will show up as a gap when the next report comes.
    /// What is left lies before this collector's first report of that boot (it started, or the
    /// agent failed over to it, after the drop): missing, and only the agent can say so.
    fn note_agent_drops(&mut self, node: &str, snapshot: &NodeSnapshot) {
        let Some(agent) = &snapshot.agent else {
            return;
        };
        for r in &agent.dropped_ranges {
            if r.first_seq > r.last_seq || r.first_seq == 0 {
                continue;
            }
            let last = match self.seen_window(&r.boot_id) {
                Some((first_seen, _)) if r.first_seq >= first_seen => continue,
                Some((first_seen, _)) => r.last_seq.min(first_seen - 1),
                None => r.last_seq,
            };
            for (first, last) in self.not_yet_recorded(&r.boot_id, r.first_seq, last) {
                let count = last - first + 1;
                self.missing_total = self.missing_total.saturating_add(count);
                // The agent's range grows while it keeps dropping: extend what was recorded.
                let extended = self
                    .missing_ranges
                    .iter_mut()
                    .any(|m| match m.range.as_mut() {
                        Some(range)
                            if m.source == MISSING_DROPPED_BY_AGENT
                                && range.boot_id == r.boot_id
                                && range.last_seq + 1 == first =>
                        {
                            range.last_seq = last;
                            true
                        }
                        _ => false,
                    });
                if extended {
                    tracing::debug!(node = %node, boot_id = %r.boot_id, through_seq = last, count, "missing range extended");
                } else {
                    self.push_missing(&r.boot_id, first, last, MISSING_DROPPED_BY_AGENT);
                    tracing::warn!(node = %node, boot_id = %r.boot_id, first_seq = first, last_seq = last, count,
                        "reports missing: the agent dropped them unsent (its buffer was full)");
                }
            }
        }
    }

    /// The parts of `first..=last` of `boot_id` not covered by a recorded missing range.
    fn not_yet_recorded(&self, boot_id: &str, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut covered: Vec<(u64, u64)> = self
            .missing_ranges
            .iter()
            .filter_map(|m| m.range.as_ref())
            .filter(|m| m.boot_id == boot_id)
            .map(|m| (m.first_seq, m.last_seq))
            .collect();
        covered.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = first;
        for (a, b) in covered {
            if b < from {
                continue;
            }
            if a > last {
                break;
            }
            if a > from {
                pieces.push((from, a - 1));
            }
            from = b.saturating_add(1);
            if from > last {
                return pieces;
            }
        }
        pieces.push((from, last));
        pieces
    }
}

/// Where a report of a node the fleet holds falls in that node's sequences.
enum Placement {
    /// Newer than anything of its boot: its snapshot becomes the node's. `new_boot`: the agent
    /// restarted (a boot id not seen before), which has been recorded already.
    Newest { new_boot: bool },
    /// A duplicate, or a late report of a previous boot: counted, and answered with this.
    Answered(Applied),
}

impl NodeRecord {
    /// Counts duplicates and gaps of a report against the seqs seen so far and, for a new
    /// boot, retires the current one; the snapshot itself is left to the caller.
    fn place(
        &mut self,
        node: &str,
        boot_id: String,
        seq: u64,
        snapshot: &NodeSnapshot,
    ) -> Placement {
        if self.boot_id == boot_id {
            if seq <= self.last_seq {
                self.duplicates_total = self.duplicates_total.saturating_add(1);
                tracing::debug!(node = %node, boot_id = %boot_id, seq, last_seq = self.last_seq, "duplicate report dropped");
                return Placement::Answered(Applied::Duplicate {
                    acked_seq: self.last_seq,
                });
            }
            let missing = seq - self.last_seq - 1;
            if missing > 0 {
                self.missing_total = self.missing_total.saturating_add(missing);
                let first_missing = self.last_seq + 1;
                self.push_missing(&boot_id, first_missing, seq - 1, MISSING_GAP);
                tracing::warn!(node = %node, boot_id = %boot_id, seq, last_seq = self.last_seq, missing, "reports missing: gap in sequence numbers");
            }
            return Placement::Newest { new_boot: false };
        }
        if let Some((_, retired_last_seq)) = self
            .retired_boots
            .iter_mut()
            .find(|(retired_id, _)| *retired_id == boot_id)
        {
            if seq <= *retired_last_seq {
                self.duplicates_total = self.duplicates_total.saturating_add(1);
                return Placement::Answered(Applied::Duplicate {
                    acked_seq: *retired_last_seq,
                });
            }
            let missing = seq - *retired_last_seq - 1;
            let first_missing = *retired_last_seq + 1;
            *retired_last_seq = seq;
            self.missing_total = self.missing_total.saturating_add(missing);
            if missing > 0 {
                self.push_missing(&boot_id, first_missing, seq - 1, MISSING_GAP);
            }
            self.note_agent_drops(node, snapshot);
            tracing::warn!(node = %node, boot_id = %boot_id, seq, current_boot_id = %self.boot_id, "late report from a previous boot: acknowledged, not applied");
            return Placement::Answered(Applied::Superseded { acked_seq: seq });
        }
        // A boot we have never seen: the agent restarted. Its earlier seqs may have gone to
        // another collector, so they are not counted missing.
        tracing::info!(node = %node, boot_id = %boot_id, previous_boot_id = %self.boot_id, seq, "node restarted (new boot id)");
        let previous = std::mem::replace(&mut self.boot_id, boot_id);
        self.retired_boots.push_front((previous, self.last_seq));
        self.retired_boots.truncate(RETIRED_BOOTS_KEPT);
        self.retired_first_seqs.push_front(self.first_seq);
        self.retired_first_seqs.truncate(RETIRED_BOOTS_KEPT);
        self.first_seq = seq;
        Placement::Newest { new_boot: true }
    }
}

/// The state the agent reported, with "unspecified" and values this build does not know read
/// as UNKNOWN: the collector cannot vouch for a state it cannot name.
fn reported_state(snapshot: &NodeSnapshot) -> HealthState {
    match HealthState::try_from(snapshot.state) {
        Ok(HealthState::Unspecified) | Err(_) => HealthState::Unknown,
        Ok(state) => state,
    }
}

/// The fleet: one record per node name, plus the channel watchers subscribe to.
pub struct Fleet {
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    events: broadcast::Sender<FleetEvent>,
    limits: Limits,
    /// The last generation handed out; only advanced under the write lock.
    generations: AtomicU64,
    /// Reports refused because the fleet was full, since the collector started.
    refused_total: AtomicU64,
    /// The counters of nodes forgotten since the collector started, so the fleet-wide ingest
    /// counters on `/metrics` never go down when a node is removed (Prometheus would read
    /// that as a counter reset). Only changed under the write lock.
    forgotten: Mutex<IngestTotals>,
    /// Where an agent's restart (a new boot id of a node held) is recorded.
    history: Option<HistorySink>,
}

impl Fleet {
    /// `watch_buffer` is how many events a watcher may fall behind before it skips ahead.
    pub fn new(limits: Limits, watch_buffer: usize) -> Self {
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        Fleet {
            nodes: RwLock::new(BTreeMap::new()),
            events,
            limits,
            generations: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            forgotten: Mutex::new(IngestTotals::default()),
            history: None,
        }
    }

    /// Records agent restarts (RESTART events) in `history`, if there is one.
    pub fn with_history(self, history: Option<HistorySink>) -> Self {
        Fleet { history, ..self }
    }

    pub fn stale_after(&self) -> Duration {
        self.limits.stale_after
    }

    pub fn forget_after(&self) -> Duration {
        self.limits.forget_after
    }

    /// Applies one validated report; see the module comment for the rules. A report from a new
    /// node while the fleet holds `max_nodes` nodes is refused, and changes nothing.
    pub fn apply(&self, report: Report, arrival: Arrival<'_>) -> Result<Applied, FleetFull> {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let Report {
            node,
            boot_id,
            seq,
            snapshot,
        } = report;

        let Some(record) = nodes.get_mut(&node) else {
            return self.admit(&mut nodes, node, boot_id, seq, snapshot, arrival);
        };

        record.reports_total = record.reports_total.saturating_add(1);
        let new_boot = match record.place(&node, boot_id, seq, &snapshot) {
            Placement::Newest { new_boot } => new_boot,
            Placement::Answered(applied) => return Ok(applied),
        };
        let restart = match (&self.history, new_boot) {
            (Some(_), true) => record.retired_boots.front().map(|(old, _)| {
                HistoryEvent::agent_restarted(arrival.wall, &node, old, &record.boot_id)
            }),
            _ => None,
        };

        let state_before = record.effective_state();
        let was_stale = record.stale;
        let snapshot = Arc::new(snapshot);
        let replaced = std::mem::replace(&mut record.snapshot, Arc::clone(&snapshot));
        record.last_seq = seq;
        record.note_agent_drops(&node, &snapshot);
        record.last_seen_wall = arrival.wall;
        record.last_seen = arrival.at;
        arrival.peer.clone_into(&mut record.peer);
        record.stale = false;
        record.generation = self.next_generation();

        if was_stale {
            tracing::info!(node = %node, "node reporting again (no longer stale)");
        }
        if was_stale || new_boot || record.effective_state() != state_before {
            self.publish(record.summary(&node));
        }
        let generation = record.generation;
        // Freeing the replaced snapshot is a few hundred deallocations: do it after releasing
        // the lock, so the other workers' reports do not wait for it.
        drop(nodes);
        drop(replaced);
        if let (Some(history), Some(restart)) = (&self.history, restart) {
            history.event(restart);
        }
        Ok(Applied::Current {
            acked_seq: seq,
            generation,
            snapshot,
        })
    }

    /// The first report of a node the fleet does not hold (never seen, or forgotten), unless
    /// the fleet is full. Seqs before this one may have gone to another collector (or to us
    /// before a restart), so nothing is counted missing.
    fn admit(
        &self,
        nodes: &mut BTreeMap<String, NodeRecord>,
        node: String,
        boot_id: String,
        seq: u64,
        snapshot: NodeSnapshot,
        arrival: Arrival<'_>,
    ) -> Result<Applied, FleetFull> {
        let max_nodes = self.limits.max_nodes;
        if nodes.len() >= max_nodes {
            let refused_total = self
                .refused_total
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            tracing::warn!(node = %shown_name(&node), peer = %arrival.peer, max_nodes, refused_total, "fleet full: report from a new node refused");
            return Err(FleetFull { node, max_nodes });
        }
        let generation = self.next_generation();
        let snapshot = Arc::new(snapshot);
        let mut record = NodeRecord {
            snapshot: Arc::clone(&snapshot),
            boot_id,
            last_seq: seq,
            first_seq: seq,
            retired_boots: VecDeque::new(),
            retired_first_seqs: VecDeque::new(),
            missing_ranges: VecDeque::new(),
            last_seen_wall: arrival.wall,
            last_seen: arrival.at,
            peer: arrival.peer.to_string(),
            reports_total: 1,
            duplicates_total: 0,
            missing_total: 0,
            stale: false,
            generation,
        };
        tracing::info!(node = %node, boot_id = %record.boot_id, seq, peer = %arrival.peer, "node appeared");
        record.note_agent_drops(&node, &snapshot);
        self.publish(record.summary(&node));
        nodes.insert(node, record);
        Ok(Applied::Current {
            acked_seq: seq,
            generation,
            snapshot,
        })
    }

    /// Forgets (removes) every node with no report for `forget_after` by `now`, marks every
    /// other node with no report for `stale_after` as stale, and returns both.
    pub fn sweep(&self, now: Instant) -> Swept {
        let Limits {
            stale_after,
            forget_after,
            ..
        } = self.limits;
        let silent_for = |record: &NodeRecord| now.saturating_duration_since(record.last_seen);
        let due = |record: &NodeRecord| {
            let silent_for = silent_for(record);
            silent_for >= forget_after || (!record.stale && silent_for >= stale_after)
        };
        // Most sweeps find nothing; look under the read lock first so reports are not blocked.
        {
            let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
            if !nodes.values().any(due) {
                return Swept::default();
            }
        }
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let mut swept = Swept::default();
        let mut forgotten = self
            .forgotten
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        nodes.retain(|node, record| {
            let silent_for = silent_for(record);
            if silent_for >= forget_after {
                forgotten.add(record);
                // Possibly straight from fresh, if the collector itself stalled that long.
                record.stale = true;
                tracing::info!(node = %node, silent_for = %humantime::format_duration(round_to_millis(silent_for)), forget_after = %humantime::format_duration(forget_after), "node forgotten: no report for forget_after");
                self.publish(record.summary(node));
                swept.forgotten.push(Forgotten {
                    node: node.clone(),
                    generation: record.generation,
                    silent_for,
                });
                return false;
            }
            if !record.stale && silent_for >= stale_after {
                record.stale = true;
                tracing::warn!(node = %node, silent_for = %humantime::format_duration(round_to_millis(silent_for)), "node stale: no report");
                self.publish(record.summary(node));
                swept.went_stale.push(WentStale {
                    node: node.clone(),
                    generation: record.generation,
                    silent_for,
                });
            }
            true
        });
        swept
    }

    /// Every node's summary, sorted by node name.
    pub fn nodes(&self) -> Vec<NodeSummary> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .map(|(node, record)| record.summary(node))
            .collect()
    }

    /// One node's summary and latest snapshot.
    pub fn node(&self, node: &str) -> Option<FleetNode> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes.get(node).map(|record| FleetNode {
            summary: Some(record.summary(node)),
            snapshot: Some(NodeSnapshot::clone(&record.snapshot)),
            missing_ranges: record.missing_ranges.iter().cloned().collect(),
        })
    }

    /// Devices of the latest snapshots that match `filter`, sorted by node, then device id.
    pub fn devices(&self, filter: &DeviceFilter) -> Vec<FleetDevice> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = Vec::new();
        for (node, record) in nodes.iter() {
            if filter.node.as_deref().is_some_and(|wanted| wanted != node) {
                continue;
            }
            let mut devices: Vec<&Device> = record
                .snapshot
                .devices
                .iter()
                .filter(|device| device_matches(device, filter))
                .collect();
            devices.sort_by(|a, b| device_id(a).cmp(device_id(b)));
            found.extend(devices.into_iter().map(|device| FleetDevice {
                node: node.clone(),
                node_stale: record.stale,
                device: Some(device.clone()),
            }));
        }
        found
    }

    /// The summary of every node now, and a receiver for every change after that moment.
    pub fn watch(&self) -> (Vec<FleetEvent>, broadcast::Receiver<FleetEvent>) {
        // Subscribing under the lock is what makes the cut exact: events are only sent by
        // writers, so none can fall between the snapshot and the subscription.
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.events.subscribe();
        let now = nodes
            .iter()
            .map(|(node, record)| FleetEvent {
                node: Some(record.summary(node)),
            })
            .collect();
        (now, receiver)
    }

    /// Every node's summary and latest snapshot (sorted by node), with the fleet-wide
    /// counters: what a `/metrics` scrape renders. Only `Arc`s are cloned under the read lock,
    /// so a scrape of a large fleet holds ingest up for the time it takes to copy pointers,
    /// and formats after releasing it.
    pub fn scrape(&self) -> Scraped {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        let all = nodes
            .iter()
            .map(|(node, record)| (record.summary(node), Arc::clone(&record.snapshot)))
            .collect();
        // Read under the fleet's read lock: the sweep moves a node's counters into
        // `forgotten` under the write lock, so none is counted twice or missed.
        let forgotten = *self
            .forgotten
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Scraped {
            nodes: all,
            refused_total: self.refused_total.load(Ordering::Relaxed),
            forgotten,
        }
    }

    /// [`Fleet::scrape`] of the nodes whose name `keep` accepts, without the refused count:
    /// a scrape of some nodes holds the snapshots of those alone.
    pub fn scrape_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(NodeSummary, Arc<NodeSnapshot>)> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .filter(|(node, _)| keep(node))
            .map(|(node, record)| (record.summary(node), Arc::clone(&record.snapshot)))
            .collect()
    }

    /// Devices in the latest snapshots of every node held, stale ones included: the fleet the
    /// lease budget's `max_fraction` is a share of.
    pub fn device_count(&self) -> usize {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes
            .values()
            .map(|record| record.snapshot.devices.len())
            .sum()
    }

    pub fn max_nodes(&self) -> usize {
        self.limits.max_nodes
    }

    /// The next fleet-wide generation; call only under the write lock, so generations are
    /// handed out in the order the state changes.
    fn next_generation(&self) -> u64 {
        self.generations
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    fn publish(&self, summary: NodeSummary) {
        // An error only means nobody is watching right now.
        let _ = self.events.send(FleetEvent {
            node: Some(summary),
        });
    }
}

/// A node name from a peer, quoted and cut short for a log line or an error message.
fn shown_name(node: &str) -> String {
    if node.chars().count() > REFUSED_NAME_SHOWN {
        let head: String = node.chars().take(REFUSED_NAME_SHOWN).collect();
        format!("{head:?}...")
    } else {
        format!("{node:?}")
    }
}

fn device_id(device: &Device) -> &str {
    device
        .identity
        .as_ref()
        .map_or("", |identity| identity.id.as_str())
}

fn device_matches(device: &Device, filter: &DeviceFilter) -> bool {
    let kind_ok = filter.kind.is_none_or(|kind| {
        device
            .identity
            .as_ref()
            .is_some_and(|identity| identity.kind == kind as i32)
    });
    let state_ok = filter
        .state
        .is_none_or(|state| device.state == state as i32);
    kind_ok && state_ok
}

/// Durations in logs are easier to read without the nanoseconds.
fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_proto::v1::DeviceIdentity;

    const STALE_AFTER: Duration = Duration::from_secs(10);
    const FORGET_AFTER: Duration = Duration::from_secs(100);
    const LIMITS: Limits = Limits {
        stale_after: STALE_AFTER,
        forget_after: FORGET_AFTER,
        max_nodes: 100,
    };

    fn snapshot(state: HealthState) -> NodeSnapshot {
        NodeSnapshot {
            node: "n1".to_string(),
            state: state as i32,
            devices: vec![
                device("photonic-0", DeviceKind::Photonic, HealthState::Ok),
                device("loihi-0", DeviceKind::Loihi2, state),
            ],
            ..Default::default()
        }
    }

    fn device(id: &str, kind: DeviceKind, state: HealthState) -> Device {
        Device {
            identity: Some(DeviceIdentity {
                id: id.to_string(),
                kind: kind as i32,
                ..Default::default()
            }),
            state: state as i32,
            ..Default::default()
        }
    }

    fn report(node: &str, boot_id: &str, seq: u64, state: HealthState) -> Report {
        Report {
            node: node.to_string(),
            boot_id: boot_id.to_string(),
            seq,
            snapshot: snapshot(state),
        }
    }

    fn arrival(at: Instant) -> Arrival<'static> {
        Arrival {
            peer: "127.0.0.1:50000",
            at,
            wall: SystemTime::now(),
        }
    }

    fn accept(fleet: &Fleet, report: Report, arrival: Arrival<'_>) -> Applied {
        fleet.apply(report, arrival).expect("the fleet is not full")
    }

    fn summary(fleet: &Fleet, node: &str) -> NodeSummary {
        fleet
            .node(node)
            .and_then(|n| n.summary)
            .expect("node is known")
    }

    fn drain(rx: &mut broadcast::Receiver<FleetEvent>) -> Vec<NodeSummary> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|event| event.node)
            .collect()
    }

    #[test]
    fn a_new_boot_id_of_a_known_node_is_a_restart_in_the_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = crate::history::History::open(
            &dir.path().join("history.db"),
            Duration::from_secs(3600),
            16,
        )
        .expect("open");
        let fleet = Fleet::new(LIMITS, 64).with_history(Some(history.sink()));
        let t0 = Instant::now();
        // The first boot the collector sees is no restart: it may just have started itself.
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n1", "b1", 2, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n1", "b2", 1, HealthState::Ok), arrival(t0));
        // A late report of the old boot is not another restart.
        accept(&fleet, report("n1", "b1", 3, HealthState::Ok), arrival(t0));
        let reader = history.reader();
        history.close();
        let entries = reader
            .query(&crate::history::HistoryQuery::default())
            .expect("query");
        assert_eq!(entries.len(), 1, "{entries:?}");
        let restart = &entries[0];
        assert_eq!(restart.kind, health_proto::v1::HistoryKind::Restart as i32);
        assert_eq!(restart.node, "n1");
        assert_eq!(restart.subject, "agent");
        assert_eq!(restart.message, "agent restarted: boot id b1 -> b2");
    }

    #[test]
    fn duplicates_are_counted_and_dropped() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n1", "b1", 2, HealthState::Ok), arrival(t0));
        let applied = accept(
            &fleet,
            report("n1", "b1", 2, HealthState::Critical),
            arrival(t0),
        );
        assert_eq!(applied, Applied::Duplicate { acked_seq: 2 });
        let applied = accept(
            &fleet,
            report("n1", "b1", 1, HealthState::Critical),
            arrival(t0),
        );
        assert_eq!(applied.acked_seq(), 2, "the ack is the highest applied seq");

        let s = summary(&fleet, "n1");
        assert_eq!(s.duplicates_total, 2);
        assert_eq!(s.reports_total, 4);
        assert_eq!(s.last_seq, 2);
        assert_eq!(s.missing_total, 0);
        assert_eq!(
            s.state,
            HealthState::Ok as i32,
            "a duplicate does not replace the snapshot"
        );
    }

    #[test]
    fn a_gap_is_counted_missing_and_the_report_applied() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        let applied = accept(
            &fleet,
            report("n1", "b1", 5, HealthState::Warning),
            arrival(t0),
        );
        assert_eq!(applied.acked_seq(), 5);
        assert!(matches!(applied, Applied::Current { generation: 2, .. }));

        let s = summary(&fleet, "n1");
        assert_eq!(s.missing_total, 3);
        assert_eq!(s.last_seq, 5);
        assert_eq!(s.state, HealthState::Warning as i32);
    }

    fn dropping(mut r: Report, ranges: &[(&str, u64, u64)]) -> Report {
        r.snapshot.agent = Some(health_proto::v1::AgentStatus {
            dropped_ranges: ranges
                .iter()
                .map(|(boot, first, last)| SeqRange {
                    boot_id: boot.to_string(),
                    first_seq: *first,
                    last_seq: *last,
                })
                .collect(),
            ..Default::default()
        });
        r
    }

    fn ranges(fleet: &Fleet, node: &str) -> Vec<(String, u64, u64, String)> {
        fleet
            .node(node)
            .expect("node")
            .missing_ranges
            .into_iter()
            .map(|m| {
                let r = m.range.expect("range");
                (r.boot_id, r.first_seq, r.last_seq, m.source)
            })
            .collect()
    }

    #[test]
    fn a_gap_is_recorded_as_a_range_and_the_agents_word_for_it_is_not_counted_twice() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n1", "b1", 5, HealthState::Ok), arrival(t0));
        // The agent's later reports say it dropped 2..=4: the gap already says so.
        accept(
            &fleet,
            dropping(report("n1", "b1", 6, HealthState::Ok), &[("b1", 2, 4)]),
            arrival(t0),
        );
        assert_eq!(
            ranges(&fleet, "n1"),
            vec![("b1".into(), 2, 4, MISSING_GAP.into())]
        );
        assert_eq!(summary(&fleet, "n1").missing_total, 3);
    }

    #[test]
    fn drops_before_the_first_report_this_collector_saw_are_recorded_from_the_agent() {
        // A collector restarted after the agent's buffer overflowed: the first report it gets
        // is seq 31; only the agent knows that 1..=30 were dropped. Its range grows with each
        // later report (a report's snapshot carries the drops as of when it was taken).
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(
            &fleet,
            dropping(report("n1", "b1", 31, HealthState::Ok), &[("b1", 1, 11)]),
            arrival(t0),
        );
        accept(
            &fleet,
            dropping(report("n1", "b1", 32, HealthState::Ok), &[("b1", 1, 12)]),
            arrival(t0),
        );
        accept(
            &fleet,
            dropping(report("n1", "b1", 33, HealthState::Ok), &[("b1", 1, 30)]),
            arrival(t0),
        );
        // A later report naming the same range (or one reaching into what arrived) adds nothing.
        accept(
            &fleet,
            dropping(report("n1", "b1", 34, HealthState::Ok), &[("b1", 1, 32)]),
            arrival(t0),
        );
        assert_eq!(
            ranges(&fleet, "n1"),
            vec![("b1".into(), 1, 30, MISSING_DROPPED_BY_AGENT.into())]
        );
        assert_eq!(summary(&fleet, "n1").missing_total, 30);
        // An earlier boot's drops, never seen here, are recorded too.
        accept(
            &fleet,
            dropping(
                report("n1", "b1", 35, HealthState::Ok),
                &[("b0", 7, 9), ("b1", 1, 30)],
            ),
            arrival(t0),
        );
        assert_eq!(summary(&fleet, "n1").missing_total, 33);
        assert_eq!(ranges(&fleet, "n1").len(), 2);
    }

    #[test]
    fn an_earlier_boots_backlog_sent_first_leaves_the_new_boot_current() {
        // A restarted agent sends its spill (boot b1) before its own reports (b2), to a
        // collector that has never seen either.
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        for seq in 10..=20 {
            accept(
                &fleet,
                report("n1", "b1", seq, HealthState::Critical),
                arrival(t0),
            );
        }
        accept(&fleet, report("n1", "b2", 1, HealthState::Ok), arrival(t0));
        // The same backlog resent (the ack was lost) is a duplicate, and does not take over.
        let again = accept(
            &fleet,
            report("n1", "b1", 15, HealthState::Critical),
            arrival(t0),
        );
        assert_eq!(again, Applied::Duplicate { acked_seq: 20 });
        let s = summary(&fleet, "n1");
        assert_eq!(s.boot_id, "b2");
        assert_eq!(s.state, HealthState::Ok as i32);
        assert_eq!(s.missing_total, 0);
        assert_eq!(s.reports_total - s.duplicates_total, 12);
    }

    #[test]
    fn a_first_report_is_not_a_gap() {
        let fleet = Fleet::new(LIMITS, 64);
        accept(
            &fleet,
            report("n1", "b1", 40, HealthState::Ok),
            arrival(Instant::now()),
        );
        assert_eq!(summary(&fleet, "n1").missing_total, 0);
    }

    #[test]
    fn a_new_boot_resets_the_sequence_without_counting_missing() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 7, HealthState::Ok), arrival(t0));
        let applied = accept(&fleet, report("n1", "b2", 3, HealthState::Ok), arrival(t0));
        assert_eq!(applied.acked_seq(), 3);
        assert!(matches!(applied, Applied::Current { .. }));

        let s = summary(&fleet, "n1");
        assert_eq!(s.boot_id, "b2");
        assert_eq!(s.last_seq, 3);
        assert_eq!(s.missing_total, 0);
        assert_eq!(s.duplicates_total, 0);

        // seq 2 of the new boot is now a duplicate, even though it is below the old boot's 7.
        let applied = accept(&fleet, report("n1", "b2", 2, HealthState::Ok), arrival(t0));
        assert_eq!(applied, Applied::Duplicate { acked_seq: 3 });
    }

    #[test]
    fn a_late_report_from_a_previous_boot_does_not_replace_the_current_one() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 7, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n1", "b2", 1, HealthState::Ok), arrival(t0));
        let applied = accept(
            &fleet,
            report("n1", "b1", 8, HealthState::Critical),
            arrival(t0),
        );
        assert_eq!(applied, Applied::Superseded { acked_seq: 8 });
        let applied = accept(
            &fleet,
            report("n1", "b1", 8, HealthState::Critical),
            arrival(t0),
        );
        assert_eq!(applied, Applied::Duplicate { acked_seq: 8 });

        let s = summary(&fleet, "n1");
        assert_eq!(s.boot_id, "b2");
        assert_eq!(s.state, HealthState::Ok as i32);
    }

    #[test]
    fn events_only_on_appearance_boot_state_and_staleness_changes() {
        let fleet = Fleet::new(LIMITS, 64);
        let (now, mut rx) = fleet.watch();
        assert!(now.is_empty());
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n1", "b1", 2, HealthState::Ok), arrival(t0));
        accept(
            &fleet,
            report("n1", "b1", 3, HealthState::Warning),
            arrival(t0),
        );
        accept(
            &fleet,
            report("n1", "b1", 4, HealthState::Warning),
            arrival(t0),
        );
        accept(
            &fleet,
            report("n1", "b2", 1, HealthState::Warning),
            arrival(t0),
        );

        let events = drain(&mut rx);
        let states: Vec<(i32, u64)> = events.iter().map(|s| (s.state, s.last_seq)).collect();
        assert_eq!(
            states,
            vec![
                (HealthState::Ok as i32, 1),
                (HealthState::Warning as i32, 3),
                (HealthState::Warning as i32, 1),
            ]
        );
        assert_eq!(events[2].boot_id, "b2");
    }

    #[test]
    fn a_silent_node_goes_stale_and_comes_back_on_a_report() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(
            &fleet,
            report("n1", "b1", 1, HealthState::Critical),
            arrival(t0),
        );
        let (_, mut rx) = fleet.watch();

        assert_eq!(fleet.sweep(t0 + Duration::from_secs(9)), Swept::default());
        assert!(!summary(&fleet, "n1").stale);

        let swept = fleet.sweep(t0 + Duration::from_secs(11));
        assert!(swept.forgotten.is_empty());
        assert_eq!(
            swept.went_stale,
            vec![WentStale {
                node: "n1".to_string(),
                generation: 1,
                silent_for: Duration::from_secs(11),
            }]
        );
        let s = summary(&fleet, "n1");
        assert!(s.stale);
        assert_eq!(
            s.state,
            HealthState::Unknown as i32,
            "a stale node's data is old"
        );
        assert!(
            fleet.sweep(t0 + Duration::from_secs(12)) == Swept::default(),
            "stale only once"
        );
        let devices = fleet.devices(&DeviceFilter::default());
        assert!(devices.iter().all(|d| d.node_stale));

        accept(
            &fleet,
            report("n1", "b1", 2, HealthState::Critical),
            arrival(t0 + Duration::from_secs(13)),
        );
        let s = summary(&fleet, "n1");
        assert!(!s.stale);
        assert_eq!(s.state, HealthState::Critical as i32);

        let events = drain(&mut rx);
        let flags: Vec<(bool, i32)> = events.iter().map(|s| (s.stale, s.state)).collect();
        assert_eq!(
            flags,
            vec![
                (true, HealthState::Unknown as i32),
                (false, HealthState::Critical as i32)
            ]
        );
    }

    #[test]
    fn a_duplicate_does_not_keep_a_node_fresh() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        accept(
            &fleet,
            report("n1", "b1", 1, HealthState::Ok),
            arrival(t0 + Duration::from_secs(8)),
        );
        assert_eq!(
            fleet.sweep(t0 + Duration::from_secs(10)).went_stale.len(),
            1
        );
    }

    #[test]
    fn a_node_silent_for_forget_after_is_forgotten_and_comes_back_afresh() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(
            &fleet,
            report("n1", "b1", 5, HealthState::Critical),
            arrival(t0),
        );
        accept(
            &fleet,
            report("n1", "b1", 9, HealthState::Critical),
            arrival(t0),
        );
        accept(&fleet, report("n2", "b1", 1, HealthState::Ok), arrival(t0));
        // n2 keeps reporting; n1 falls silent, goes stale, and is then forgotten.
        let (_, mut rx) = fleet.watch();
        assert_eq!(fleet.sweep(t0 + STALE_AFTER).went_stale.len(), 2);
        accept(
            &fleet,
            report("n2", "b1", 2, HealthState::Ok),
            arrival(t0 + FORGET_AFTER - Duration::from_secs(5)),
        );
        let before = fleet.sweep(t0 + FORGET_AFTER - Duration::from_millis(1));
        assert_eq!(before, Swept::default(), "not yet: one moment short");

        let swept = fleet.sweep(t0 + FORGET_AFTER);
        assert!(swept.went_stale.is_empty());
        assert_eq!(
            swept.forgotten,
            vec![Forgotten {
                node: "n1".to_string(),
                generation: 2,
                silent_for: FORGET_AFTER,
            }]
        );
        assert!(fleet.node("n1").is_none());
        let names: Vec<String> = fleet.nodes().into_iter().map(|s| s.node).collect();
        assert_eq!(names, vec!["n2"]);
        assert!(fleet
            .devices(&DeviceFilter::default())
            .iter()
            .all(|d| d.node == "n2"));
        let (now, _) = fleet.watch();
        assert_eq!(now.len(), 1, "a new watcher does not see n1");
        assert_eq!(
            fleet.sweep(t0 + FORGET_AFTER + Duration::from_secs(1)),
            Swept::default(),
            "forgotten once"
        );

        // Watchers saw n1 and n2 go stale, n2 come back, and a last (stale, UNKNOWN) n1.
        let events: Vec<(String, bool, i32)> = drain(&mut rx)
            .into_iter()
            .map(|s| (s.node, s.stale, s.state))
            .collect();
        let unknown = HealthState::Unknown as i32;
        assert_eq!(
            events,
            vec![
                ("n1".to_string(), true, unknown),
                ("n2".to_string(), true, unknown),
                ("n2".to_string(), false, HealthState::Ok as i32),
                ("n1".to_string(), true, unknown),
            ]
        );

        // The same node reporting again is a new node: no gap, no old counters, a generation
        // above every one it had before.
        let applied = accept(
            &fleet,
            report("n1", "b1", 20, HealthState::Ok),
            arrival(t0 + FORGET_AFTER + Duration::from_secs(1)),
        );
        let Applied::Current { generation, .. } = applied else {
            panic!("a fresh node's report is current: {applied:?}");
        };
        assert!(generation > 2, "generation {generation}");
        let s = summary(&fleet, "n1");
        assert_eq!(s.reports_total, 1);
        assert_eq!(s.missing_total, 0);
        assert_eq!(s.last_seq, 20);
        assert!(!s.stale);
        let appeared = drain(&mut rx);
        assert_eq!(appeared.len(), 1);
        assert_eq!(appeared[0].node, "n1");
        // From here on, the usual rules: a lower seq of the same boot is a duplicate.
        assert_eq!(
            accept(&fleet, report("n1", "b1", 5, HealthState::Ok), arrival(t0)),
            Applied::Duplicate { acked_seq: 20 }
        );
    }

    #[test]
    fn a_node_silent_past_forget_after_at_one_sweep_is_forgotten_without_going_stale() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        let swept = fleet.sweep(t0 + FORGET_AFTER * 3);
        assert!(swept.went_stale.is_empty());
        assert_eq!(swept.forgotten.len(), 1);
        assert_eq!(swept.forgotten[0].silent_for, FORGET_AFTER * 3);
        assert!(fleet.nodes().is_empty());
    }

    #[test]
    fn a_new_node_beyond_max_nodes_is_refused_and_known_nodes_still_report() {
        let fleet = Fleet::new(
            Limits {
                max_nodes: 2,
                ..LIMITS
            },
            64,
        );
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        accept(&fleet, report("n2", "b1", 1, HealthState::Ok), arrival(t0));
        let (_, mut rx) = fleet.watch();

        let refused = fleet
            .apply(report("n3", "b1", 1, HealthState::Ok), arrival(t0))
            .expect_err("a third node is one too many");
        assert_eq!(
            refused,
            FleetFull {
                node: "n3".to_string(),
                max_nodes: 2,
            }
        );
        let message = refused.to_string();
        assert!(message.contains("max_nodes = 2"), "{message}");
        assert!(message.contains("\"n3\""), "{message}");
        assert!(fleet.node("n3").is_none());
        assert!(drain(&mut rx).is_empty(), "a refused node is never seen");
        assert_eq!(fleet.refused_total.load(Ordering::Relaxed), 1);

        // Known nodes are not refused: not a new seq, a duplicate, or a new boot.
        let applied = accept(
            &fleet,
            report("n1", "b1", 2, HealthState::Warning),
            arrival(t0),
        );
        assert!(matches!(applied, Applied::Current { acked_seq: 2, .. }));
        let applied = accept(&fleet, report("n2", "b1", 1, HealthState::Ok), arrival(t0));
        assert_eq!(applied, Applied::Duplicate { acked_seq: 1 });
        let applied = accept(&fleet, report("n2", "b2", 1, HealthState::Ok), arrival(t0));
        assert!(matches!(applied, Applied::Current { .. }));
        assert_eq!(fleet.nodes().len(), 2);

        // Room again once a node is forgotten.
        fleet.sweep(t0 + FORGET_AFTER);
        assert!(fleet.nodes().is_empty());
        accept(
            &fleet,
            report("n3", "b1", 1, HealthState::Ok),
            arrival(t0 + FORGET_AFTER),
        );
        assert_eq!(fleet.nodes().len(), 1);
    }

    #[test]
    fn a_refused_name_is_cut_short_in_the_error() {
        let fleet = Fleet::new(
            Limits {
                max_nodes: 1,
                ..LIMITS
            },
            64,
        );
        let t0 = Instant::now();
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));
        let long = "x".repeat(100_000);
        let refused = fleet
            .apply(report(&long, "b1", 1, HealthState::Ok), arrival(t0))
            .expect_err("fleet full");
        assert_eq!(refused.node, long, "the error keeps the whole name");
        assert!(refused.to_string().len() < 300, "{refused}");
    }

    #[test]
    fn queries_are_sorted_and_filtered() {
        let fleet = Fleet::new(LIMITS, 64);
        let t0 = Instant::now();
        accept(
            &fleet,
            report("n2", "b1", 1, HealthState::Warning),
            arrival(t0),
        );
        accept(&fleet, report("n1", "b1", 1, HealthState::Ok), arrival(t0));

        let names: Vec<String> = fleet.nodes().into_iter().map(|s| s.node).collect();
        assert_eq!(names, vec!["n1", "n2"]);

        let all: Vec<(String, String)> = fleet
            .devices(&DeviceFilter::default())
            .into_iter()
            .map(|d| {
                (
                    d.node,
                    device_id(d.device.as_ref().expect("device")).to_string(),
                )
            })
            .collect();
        assert_eq!(
            all,
            vec![
                ("n1".to_string(), "loihi-0".to_string()),
                ("n1".to_string(), "photonic-0".to_string()),
                ("n2".to_string(), "loihi-0".to_string()),
                ("n2".to_string(), "photonic-0".to_string()),
            ]
        );

        let warning_loihi = fleet.devices(&DeviceFilter {
            kind: Some(DeviceKind::Loihi2),
            state: Some(HealthState::Warning),
            node: None,
        });
        assert_eq!(warning_loihi.len(), 1);
        assert_eq!(warning_loihi[0].node, "n2");

        let on_n1 = fleet.devices(&DeviceFilter {
            node: Some("n1".to_string()),
            ..Default::default()
        });
        assert_eq!(on_n1.len(), 2);
        assert!(fleet.node("n3").is_none());
    }
}
