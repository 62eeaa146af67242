//! The incident RPCs' reading side: check the request, read the node's history on the
//! blocking pool, and group it (`super::group`). Kept out of `service.rs` so the service only
//! converts calls.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use health_proto::v1::{GetIncidentRequest, HistoryEntry, Incident, ListIncidentsRequest};
use tonic::Status;

use super::{group, parse_id, LEAD_IN};
use crate::history::{HistoryQuery, HistoryReader, MAX_LIMIT};

/// Incidents a list answers by default, and at most.
const DEFAULT_INCIDENTS: u32 = 100;

/// What the incident RPCs need: the history and when an incident is over.
#[derive(Clone)]
pub struct IncidentBook {
    history: Option<HistoryReader>,
    close_after: Duration,
}

impl IncidentBook {
    pub fn new(history: Option<HistoryReader>, close_after: Duration) -> Self {
        IncidentBook {
            history,
            close_after,
        }
    }

    fn reader(&self) -> Result<HistoryReader, Status> {
        self.history.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this collector keeps no history, and incidents are built from it: set \
                 history_path in its configuration (collector.toml) and restart it",
            )
        })
    }

    /// ListIncidents: newest first, without their timelines and notes (GetIncident has them).
    pub async fn list(&self, request: ListIncidentsRequest) -> Result<Vec<Incident>, Status> {
        let history = self.reader()?;
        if request.limit > MAX_LIMIT {
            return Err(Status::invalid_argument(format!(
                "ListIncidentsRequest.limit: expected at most {MAX_LIMIT}, got {}",
                request.limit
            )));
        }
        let since = match request.since {
            None => None,
            Some(at) => Some(SystemTime::try_from(at).map_err(|_| {
                Status::invalid_argument(format!(
                    "ListIncidentsRequest.since: not a valid time ({}s, {}ns)",
                    at.seconds, at.nanos
                ))
            })?),
        };
        let node = (!request.node.is_empty()).then_some(request.node);
        // An incident still open at `since` may have opened a while before it.
        let from = since.and_then(|s| s.checked_sub(LEAD_IN));
        let entries = read(history, node, from).await?;
        let now = SystemTime::now();
        let mut by_node: BTreeMap<&str, Vec<HistoryEntry>> = BTreeMap::new();
        for entry in &entries {
            by_node
                .entry(entry.node.as_str())
                .or_default()
                .push(entry.clone());
        }
        let mut incidents: Vec<Incident> = by_node
            .iter()
            .flat_map(|(node, entries)| group(node, entries, self.close_after, now))
            .filter(|i| !request.open_only || i.open)
            .filter(|i| match (since, i.closed_at) {
                (Some(since), Some(closed)) => {
                    SystemTime::try_from(closed).is_ok_and(|closed| closed >= since)
                }
                _ => true,
            })
            .collect();
        incidents.sort_by_key(|i| std::cmp::Reverse(i.opened_at.map(|t| (t.seconds, t.nanos))));
        let limit = match request.limit {
            0 => DEFAULT_INCIDENTS,
            n => n,
        };
        incidents.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        for incident in &mut incidents {
            incident.timeline.clear();
            incident.notes.clear();
        }
        Ok(incidents)
    }

    /// GetIncident: the incident with its whole timeline, oldest first.
    pub async fn get(&self, request: GetIncidentRequest) -> Result<Incident, Status> {
        let history = self.reader()?;
        let Some((node, opened_ms)) = parse_id(&request.id) else {
            return Err(Status::invalid_argument(format!(
                "GetIncidentRequest.id: expected an incident id such as \
                 inc-1765087200123-node-7 (agent-ctl incidents lists them), got {:?}",
                request.id
            )));
        };
        let opened =
            SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(opened_ms).unwrap_or(0));
        let entries = read(history, Some(node.clone()), opened.checked_sub(LEAD_IN)).await?;
        group(&node, &entries, self.close_after, SystemTime::now())
            .into_iter()
            .find(|i| i.id == request.id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {} in this collector's history (it may be older than \
                     history_retention, or another collector held the node)",
                    request.id
                ))
            })
    }
}

async fn read(
    history: HistoryReader,
    node: Option<String>,
    since: Option<SystemTime>,
) -> Result<Vec<HistoryEntry>, Status> {
    let query = HistoryQuery {
        node,
        device: None,
        since,
        limit: MAX_LIMIT,
    };
    tokio::task::spawn_blocking(move || history.query(&query))
        .await
        .map_err(|e| Status::internal(format!("history query task failed: {e}")))?
        .map_err(|e| Status::unavailable(format!("cannot read the history: {e}")))
}
