//! The page's JSON: one handler per view, each built from the read RPCs (`reader.rs`) and
//! written with `health_view::json`, so a node, device, alert or incident reads here exactly
//! as `agent-ctl --json` prints it. Lists are filtered and paged here, so the browser gets a
//! page of the fleet, never all of it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use health_proto::v1 as pb;
use health_view::{incident, json, names};
use serde_json::{json, Value};
use tonic::{Code, Status};

use super::query::Params;
use super::WebState;

/// How far back the incidents view looks by default.
const INCIDENTS_SINCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// History rows shown for a device.
const DEVICE_HISTORY: u32 = 50;

/// A failed request: the status and a message the page shows as is.
pub struct ApiError(StatusCode, String);

impl From<Status> for ApiError {
    fn from(status: Status) -> ApiError {
        let code = match status.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::FailedPrecondition | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, status.message().to_string())
    }
}

impl From<String> for ApiError {
    fn from(message: String) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.0, &json!({ "error": self.1 }))
    }
}

pub fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        value.to_string(),
    )
        .into_response()
}

type Answer = Result<Response, ApiError>;

fn ok(value: Value) -> Answer {
    Ok(json_response(StatusCode::OK, &value))
}

/// Worst first, so a page of the fleet starts with what needs a person.
fn rank(state: &str, stale: bool) -> u8 {
    match (state, stale) {
        ("CRITICAL", _) => 0,
        (_, true) => 1,
        ("WARNING", _) => 2,
        ("UNKNOWN", _) => 3,
        _ => 4,
    }
}

fn firing(a: &pb::Alert) -> bool {
    a.status == pb::AlertStatus::Firing as i32
}

/// Counts for the header: nodes by state and staleness, alerts by priority.
pub async fn summary(State(web): State<WebState>) -> Answer {
    let nodes = web.reader.nodes().await?;
    let alerts = web.reader.alerts().await?;
    let mut by_state: HashMap<String, usize> = HashMap::new();
    let mut devices = 0u64;
    for n in &nodes {
        *by_state.entry(names::state(n.state())).or_default() += 1;
        devices += u64::from(n.device_count);
    }
    let mut by_priority: HashMap<String, usize> = HashMap::new();
    let mut suppressed = 0;
    for a in alerts.iter().filter_map(|e| e.alert.as_ref()) {
        if firing(a) {
            let p = if a.priority.is_empty() {
                "-"
            } else {
                &a.priority
            };
            *by_priority.entry(p.to_string()).or_default() += 1;
        } else if a.status == pb::AlertStatus::Suppressed as i32 {
            suppressed += 1;
        }
    }
    ok(json!({
        "nodes": nodes.len(),
        "stale": nodes.iter().filter(|n| n.stale).count(),
        "devices": devices,
        "nodes_by_state": by_state,
        "firing_by_priority": by_priority,
        "firing": by_priority.values().sum::<usize>(),
        "suppressed": suppressed,
        "maintenance": web.reader.maintenance().len(),
        "history": web.history,
        "chart_step_seconds": web.chart_step.as_secs(),
        "generation": *web.changes.borrow(),
        "now": names::time(&Some(SystemTime::now().into())),
    }))
}

/// `GET /api/nodes?q=&state=&page=&per_page=`: a page of the fleet, worst first.
pub async fn nodes(
    State(web): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let params = Params(params);
    let paging = params.paging()?;
    let state = params.choice("state", &["OK", "WARNING", "CRITICAL", "UNKNOWN", "STALE"])?;
    let needle = params.needle();
    let alerts = web.reader.alerts().await?;
    let mut firing_of: HashMap<&str, (usize, usize)> = HashMap::new();
    for a in alerts.iter().filter_map(|e| e.alert.as_ref()) {
        let entry = firing_of.entry(a.node.as_str()).or_default();
        if firing(a) {
            entry.0 += 1;
        } else if a.status == pb::AlertStatus::Suppressed as i32 {
            entry.1 += 1;
        }
    }
    let maintenance: std::collections::HashSet<String> = web
        .reader
        .maintenance()
        .into_iter()
        .map(|(key, _)| key.node)
        .collect();
    let mut rows: Vec<pb::NodeSummary> = web
        .reader
        .nodes()
        .await?
        .into_iter()
        .filter(|n| match state.as_deref() {
            None => true,
            Some("STALE") => n.stale,
            Some(s) => names::state(n.state()) == s,
        })
        .filter(|n| {
            needle
                .as_ref()
                .is_none_or(|q| n.node.to_lowercase().contains(q))
        })
        .collect();
    // Worst first, then by name; the key is computed once per node, not per comparison.
    rows.sort_by_cached_key(|n| (rank(&names::state(n.state()), n.stale), n.node.clone()));
    let (page, meta) = paging.slice(&rows);
    let listed: Vec<Value> = page
        .iter()
        .map(|n| {
            let (firing, suppressed) = firing_of.get(n.node.as_str()).copied().unwrap_or_default();
            let mut row = json::node_summary(n);
            row["alerts_firing"] = json!(firing);
            row["alerts_suppressed"] = json!(suppressed);
            row["maintenance"] = json!(maintenance.contains(&n.node));
            row
        })
        .collect();
    ok(json!({ "paging": meta, "nodes": listed }))
}

fn alerts_about<'a>(
    alerts: &'a [pb::AlertEvent],
    node: &'a str,
    subject: Option<&'a str>,
) -> impl Iterator<Item = Value> + 'a {
    alerts
        .iter()
        .filter(move |e| {
            e.alert.as_ref().is_some_and(|a| {
                a.node == node && subject.is_none_or(|s| a.subject == s || a.device == s)
            })
        })
        .map(json::alert)
}

/// `GET /api/node/{node}`: the node as `GetNode` returns it, with its alerts and windows.
pub async fn node(State(web): State<WebState>, Path(node): Path<String>) -> Answer {
    let fleet_node = web.reader.node(&node).await?;
    let alerts = web.reader.alerts().await?;
    let windows: Vec<Value> = web
        .reader
        .maintenance()
        .into_iter()
        .filter(|(key, _)| key.node == node)
        .map(|(key, w)| window_json(&key, &w))
        .collect();
    ok(json!({
        "node": json::fleet_node(&fleet_node),
        "alerts": alerts_about(&alerts, &node, None).collect::<Vec<_>>(),
        "maintenance": windows,
    }))
}

/// `GET /api/device/{node}/{device}`: the device, its chart, alerts, actions and history.
pub async fn device(
    State(web): State<WebState>,
    Path((node, id)): Path<(String, String)>,
) -> Answer {
    let fleet_node = web.reader.node(&node).await?;
    let snapshot = fleet_node.snapshot.unwrap_or_default();
    let Some(device) = snapshot
        .devices
        .iter()
        .find(|d| d.identity.as_ref().is_some_and(|i| i.id == id))
    else {
        let known: Vec<&str> = snapshot
            .devices
            .iter()
            .filter_map(|d| d.identity.as_ref().map(|i| i.id.as_str()))
            .collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "node {node:?} reports no device {id:?}; it reports: {}",
                known.join(", ")
            ),
        ));
    };
    let alerts = web.reader.alerts().await?;
    let actions: Vec<Value> = snapshot
        .recent_actions
        .iter()
        .filter(|a| a.device_id == id)
        .map(json::action)
        .collect();
    let history = if web.history {
        let since = SystemTime::now().checked_sub(Duration::from_secs(24 * 3600));
        let request = pb::QueryHistoryRequest {
            node: node.clone(),
            device: id.clone(),
            since: since.map(Into::into),
            limit: DEVICE_HISTORY,
            ..Default::default()
        };
        web.reader
            .history(request)
            .await?
            .iter()
            .map(json::history_entry)
            .collect()
    } else {
        Vec::new()
    };
    let chart = web.reader.chart(&node, &id).map(|c| {
        json!({
            "start": names::time(&Some(c.start.into())),
            "step_seconds": c.step.as_secs(),
            "temperature_c": c.temperature_c,
            "power_w": c.power_w,
        })
    });
    ok(json!({
        "node": node,
        "stale": fleet_node.summary.as_ref().is_some_and(|s| s.stale),
        "device": json::device(device),
        "chart": chart,
        "alerts": alerts_about(&alerts, &node, Some(&id)).collect::<Vec<_>>(),
        "actions": actions,
        "history": history,
    }))
}

/// `GET /api/alerts?q=&status=&priority=`: the active set, highest priority first.
pub async fn alerts(
    State(web): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let params = Params(params);
    let paging = params.paging()?;
    let status = params.choice("status", &["FIRING", "SUPPRESSED"])?;
    let priority = params.choice("priority", &["P0", "P1", "P2", "P3"])?;
    let needle = params.needle();
    let mut rows: Vec<pb::AlertEvent> = web
        .reader
        .alerts()
        .await?
        .into_iter()
        .filter(|e| {
            let Some(a) = e.alert.as_ref() else {
                return false;
            };
            status
                .as_deref()
                .is_none_or(|s| names::alert_status(a.status()) == s)
                && priority.as_deref().is_none_or(|p| a.priority == p)
                && needle.as_ref().is_none_or(|q| {
                    [&a.node, &a.subject, &a.alertname, &a.name]
                        .iter()
                        .any(|f| f.to_lowercase().contains(q))
                })
        })
        .collect();
    // Firing before suppressed, then priority (none last), node, subject: keys computed once.
    rows.sort_by_cached_key(|e| {
        let a = e.alert.as_ref();
        let priority = a.map_or("", |a| a.priority.as_str());
        (
            !a.is_some_and(firing),
            if priority.is_empty() {
                "P9".to_string()
            } else {
                priority.to_string()
            },
            a.map(|a| a.node.clone()).unwrap_or_default(),
            a.map(|a| a.subject.clone()).unwrap_or_default(),
        )
    });
    let (page, meta) = paging.slice(&rows);
    ok(json!({ "paging": meta, "alerts": page.iter().map(json::alert).collect::<Vec<_>>() }))
}

/// `GET /api/incidents?open=&since=&node=`: newest first, as `ListIncidents` returns them.
pub async fn incidents(
    State(web): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let params = Params(params);
    let paging = params.paging()?;
    let since = params.since("since", INCIDENTS_SINCE)?;
    let request = pb::ListIncidentsRequest {
        open_only: params.flag("open")?,
        since: SystemTime::now().checked_sub(since).map(Into::into),
        node: params.text("node").unwrap_or_default().to_string(),
        limit: 1000,
    };
    let rows = web.reader.incidents(request).await?;
    let (page, meta) = paging.slice(&rows);
    let listed: Vec<Value> = page
        .iter()
        .map(|i| {
            let mut row = json::incident(i);
            row["state"] = json!(names::incident_state(i));
            row
        })
        .collect();
    ok(json!({ "paging": meta, "incidents": listed }))
}

/// `GET /api/incident/{id}`: one incident with its timeline.
pub async fn incident(State(web): State<WebState>, Path(id): Path<String>) -> Answer {
    let i = web.reader.incident(&id).await?;
    let mut value = json::incident(&i);
    value["state"] = json!(names::incident_state(&i));
    ok(value)
}

/// `GET /api/incident/{id}/export.md` and `export.json`: the same text
/// `agent-ctl incident ID --export` writes, as a download.
pub async fn export(
    State(web): State<WebState>,
    Path((id, file)): Path<(String, String)>,
) -> Answer {
    let (body, content_type) = match file.as_str() {
        "export.md" => (
            incident::markdown(&web.reader.incident(&id).await?),
            "text/markdown; charset=utf-8",
        ),
        "export.json" => (
            format!("{:#}\n", json::incident(&web.reader.incident(&id).await?)),
            "application/json",
        ),
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no export {other:?}: expected export.md or export.json"),
            ))
        }
    };
    // The id is checked by GetIncident (inc-<ms>-<node>); keep only safe file-name characters.
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let extension = if file.ends_with(".md") { "md" } else { "json" };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}.{extension}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        body,
    )
        .into_response())
}

fn window_json(
    key: &crate::silences::maintenance::WindowKey,
    w: &crate::silences::maintenance::Window,
) -> Value {
    json!({
        "node": key.node,
        "device": key.device,
        "until": names::time(&Some(w.until.into())),
        "reason": w.reason,
        "by": w.by,
        "audit_hash": w.audit_hash,
    })
}

/// `GET /api/maintenance`: every window in force and every silence the collector holds.
pub async fn maintenance(State(web): State<WebState>) -> Answer {
    let windows: Vec<Value> = web
        .reader
        .maintenance()
        .iter()
        .map(|(key, w)| window_json(key, w))
        .collect();
    let silences: Vec<Value> = web
        .reader
        .silences()
        .await?
        .iter()
        .map(json::silence)
        .collect();
    ok(json!({ "windows": windows, "silences": silences }))
}
