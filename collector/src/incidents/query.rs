//! The incident RPCs' reading side: check the request, read the node's history on the
//! blocking pool, and group it (`super::group`). Kept out of `service.rs` so the service only
//! converts calls.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use health_proto::v1::{
    AddIncidentNoteRequest, GetIncidentRequest, HistoryEntry, HistoryKind, Incident, IncidentNote,
    ListIncidentsRequest,
};
use tonic::Status;

use super::{group, parse_id, LEAD_IN};
use crate::audit::Outcome;
use crate::history::{HistoryEvent, HistoryQuery, HistoryReader, HistorySink, MAX_LIMIT};
use crate::operator::Operator;

/// Longest note accepted: a paragraph for the post-mortem, not a log dump.
const MAX_NOTE_BYTES: usize = 4096;

/// Incidents a list answers by default.
const DEFAULT_INCIDENTS: u32 = 100;
/// How long before `since` a list looks for incidents still open at `since`.
const LIST_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// What the incident RPCs need: the history and when an incident is over.
#[derive(Clone)]
pub struct IncidentBook {
    history: Option<HistoryReader>,
    /// Where notes are written (the same database).
    notes: Option<HistorySink>,
    close_after: Duration,
}

impl IncidentBook {
    pub fn new(
        history: Option<HistoryReader>,
        notes: Option<HistorySink>,
        close_after: Duration,
    ) -> Self {
        IncidentBook {
            history,
            notes,
            close_after,
        }
    }

    /// The incident `id`, as GetIncident answers, with the operator's note added. The note is
    /// recorded in the collector's audit log first (its hash goes with the note), then kept
    /// in the history as a NOTE entry of the incident's node; the answer shows it at once,
    /// though the history writer may store it a moment later.
    pub async fn add_note(
        &self,
        operator: &Operator,
        request: AddIncidentNoteRequest,
    ) -> Result<Incident, Status> {
        let text = request.text.trim().to_string();
        if text.is_empty() || text.len() > MAX_NOTE_BYTES {
            return Err(Status::invalid_argument(format!(
                "AddIncidentNoteRequest.text: expected 1 to {MAX_NOTE_BYTES} bytes of text, \
                 got {}",
                text.len()
            )));
        }
        let Some(notes) = self.notes.clone() else {
            return Err(self.reader().err().unwrap_or_else(|| {
                Status::failed_precondition("this collector keeps no history for notes")
            }));
        };
        let mut incident = self
            .get(GetIncidentRequest {
                id: request.id.clone(),
            })
            .await?;
        let args = serde_json::json!({"incident": incident.id, "text": text});
        let appended = operator
            .record(
                "AddIncidentNote",
                args,
                Outcome::Succeeded,
                format!("note on {}", incident.id),
            )
            .await?;
        let now = SystemTime::now();
        let by = operator.caller.principal().to_string();
        notes.event(HistoryEvent {
            name: "NOTE".to_string(),
            status: "ADDED".to_string(),
            message: text.clone(),
            id: incident.id.clone(),
            caller: by.clone(),
            audit_hash: appended.hash.clone(),
            ..HistoryEvent::new(HistoryKind::Note, now, &incident.node, &incident.id)
        });
        incident.notes.push(IncidentNote {
            at: Some(now.into()),
            by,
            text,
            audit_hash: appended.hash,
        });
        Ok(incident)
    }

    fn reader(&self) -> Result<HistoryReader, Status> {
        self.history.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this collector keeps no history, and incidents are built from it: set \
                 history_path or history_url in its configuration (collector.toml) and restart it",
            )
        })
    }

    /// ListIncidents: newest first, without their timelines and notes (GetIncident has them).
    /// The incidents are found from the alert transitions alone (since `since` minus
    /// `LIST_LOOKBACK`, so one still open at `since` is found); each one listed is then
    /// built from its node's whole history, as GetIncident builds it.
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
        let query = HistoryQuery {
            node: (!request.node.is_empty()).then_some(request.node),
            since: since.and_then(|s| s.checked_sub(LIST_LOOKBACK)),
            limit: MAX_LIMIT,
            // Newest first: past the limit, the oldest transitions are the ones left out,
            // never the incidents open now.
            oldest_first: false,
            alerts_only: true,
            ..HistoryQuery::default()
        };
        let alerts = read(history, query).await?;
        let now = SystemTime::now();
        let mut by_node: BTreeMap<&str, Vec<HistoryEntry>> = BTreeMap::new();
        for entry in &alerts {
            by_node
                .entry(entry.node.as_str())
                .or_default()
                .push(entry.clone());
        }
        let mut found: Vec<Incident> = by_node
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
        found.sort_by_key(|i| std::cmp::Reverse(i.opened_at.map(|t| (t.seconds, t.nanos))));
        let limit = match request.limit {
            0 => DEFAULT_INCIDENTS,
            n => n,
        };
        found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut incidents = Vec::with_capacity(found.len());
        for sketch in found {
            let mut incident = self
                .get(GetIncidentRequest {
                    id: sketch.id.clone(),
                })
                .await
                .unwrap_or(sketch);
            incident.timeline.clear();
            incident.notes.clear();
            incidents.push(incident);
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
        let query = HistoryQuery {
            node: Some(node.clone()),
            since: opened.checked_sub(LEAD_IN),
            limit: MAX_LIMIT,
            oldest_first: true,
            ..HistoryQuery::default()
        };
        let entries = read(history, query).await?;
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

async fn read(history: HistoryReader, query: HistoryQuery) -> Result<Vec<HistoryEntry>, Status> {
    tokio::task::spawn_blocking(move || history.query(&query))
        .await
        .map_err(|e| Status::internal(format!("history query task failed: {e}")))?
        .map_err(|e| Status::unavailable(format!("cannot read the history: {e}")))
}
