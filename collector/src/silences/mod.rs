//! Silences the collector makes in Alertmanager, and remembers.
//!
//! Two kinds: an operator's (`CreateSilence` / `ExpireSilence`, through `agent-ctl silence`
//! and `unsilence`; operator role, audited), and one per maintenance window, held by the
//! reconciler task ([`reconciler`]) for as long as the window lasts. Each is made in every
//! configured Alertmanager (each gives it its own id; the first one's is the one shown).
//!
//! The book is in memory. On start the reconciler adopts what the Alertmanagers still hold
//! with a `createdBy` starting with `health-collector`, so a restart does not lose track of
//! them. `silenced_by` on an alert lists the active silences of this book whose matchers
//! match the alert's Alertmanager labels ([`matcher`], Alertmanager's own semantics).
//!
//! Locking: the book's lock is held only to read or update the book, never across a network
//! call; the alert book calls [`Silences::silencing`] under its own lock, so nothing here
//! ever calls into the alert book.

pub mod client;
pub mod maintenance;
pub mod matcher;
mod reconciler;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use health_proto::v1::{Alert, CreateSilenceRequest, Silence, SilenceMatcher};
use serde_json::json;
use tonic::Status;

use crate::audit::Outcome;
use crate::operator::Operator;
use client::{AmMatcher, GettableSilence, PostableSilence, SilenceClient};
use maintenance::{MaintenanceWindows, WindowKey};
use matcher::Matcher;

pub use reconciler::spawn as spawn_reconciler;

/// `createdBy` of every silence the collector makes starts with this.
pub const CREATED_BY: &str = "health-collector";
/// `createdBy` of the silences held for maintenance windows.
const MAINTENANCE_CREATED_BY: &str = "health-collector (maintenance)";
/// Longest operator silence: longer absences are maintenance, with a reason on the host.
pub const MAX_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_COMMENT: usize = 1024;
const MAX_MATCHERS: usize = 16;
/// Expired operator silences remembered for `silences --all`.
const EXPIRED_KEPT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Operator,
    Maintenance,
}

/// One silence of the book.
#[derive(Debug, Clone)]
pub struct Held {
    /// Its id in each configured Alertmanager (config order); `None` where not made yet.
    pub ids: Vec<Option<String>>,
    pub matchers: Vec<Matcher>,
    pub starts_at: SystemTime,
    pub ends_at: SystemTime,
    pub created_by: String,
    pub comment: String,
    pub audit_hash: String,
    pub origin: Origin,
    pub expired: bool,
    /// Found in Alertmanager at start rather than made by this process.
    pub adopted: bool,
}

impl Held {
    /// The id shown: the first Alertmanager's that has one.
    pub fn id(&self) -> &str {
        self.ids.iter().flatten().next().map_or("", String::as_str)
    }

    fn active(&self, now: SystemTime) -> bool {
        !self.expired && self.starts_at <= now && now < self.ends_at
    }

    fn to_proto(&self, key: Option<&WindowKey>, now: SystemTime) -> Silence {
        let state = if self.expired || now >= self.ends_at {
            "expired"
        } else if self.id().is_empty() {
            "pending"
        } else {
            "active"
        };
        Silence {
            id: self.id().to_string(),
            matchers: self.matchers.iter().map(|m| m.spec.clone()).collect(),
            starts_at: Some(self.starts_at.into()),
            ends_at: Some(self.ends_at.into()),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            state: state.into(),
            audit_hash: self.audit_hash.clone(),
            origin: match self.origin {
                Origin::Operator => "operator",
                Origin::Maintenance => "maintenance",
            }
            .into(),
            node: key.map(|k| k.node.clone()).unwrap_or_default(),
            device: key.map(|k| k.device.clone()).unwrap_or_default(),
        }
    }

    fn postable(&self, id: Option<String>) -> PostableSilence {
        PostableSilence {
            id,
            matchers: self
                .matchers
                .iter()
                .map(|m| AmMatcher::from(&m.spec))
                .collect(),
            starts_at: rfc3339(self.starts_at),
            ends_at: rfc3339(self.ends_at),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[derive(Debug, Default)]
struct Book {
    /// Operator silences, oldest first.
    operator: Vec<Held>,
    /// The silence held for each maintenance window.
    maintenance: BTreeMap<WindowKey, Held>,
}

/// The collector's silences and the Alertmanagers they live in.
pub struct Silences {
    client: Option<SilenceClient>,
    book: Mutex<Book>,
    windows: Arc<MaintenanceWindows>,
    /// Alertmanager calls of the maintenance reconciler that failed (for /metrics).
    pub sync_failures: AtomicU64,
    /// Operators' silences are kept in the history (and so in incidents) when it is on.
    history: std::sync::OnceLock<crate::history::HistorySink>,
}

impl Silences {
    /// `client`: `None` when no Alertmanager is configured (then CreateSilence is refused and
    /// maintenance only suppresses).
    pub fn new(client: Option<SilenceClient>, windows: Arc<MaintenanceWindows>) -> Arc<Silences> {
        Arc::new(Silences {
            client,
            book: Mutex::new(Book::default()),
            windows,
            sync_failures: AtomicU64::new(0),
            history: std::sync::OnceLock::new(),
        })
    }

    /// Operators' silences go into this history from now on.
    pub fn keep_history(&self, history: crate::history::HistorySink) {
        let _ = self.history.set(history);
    }

    /// A SILENCE spell in the history: made (ACTIVE) or expired, keyed by the silence id, on
    /// the node its `node=` matcher names (fleet-wide: no node).
    fn record(&self, held: &Held, caller: &str, ended: Option<SystemTime>) {
        let Some(history) = self.history.get() else {
            return;
        };
        let equal = |name: &str| {
            held.matchers
                .iter()
                .find(|m| m.spec.name == name && m.spec.is_equal && !m.spec.is_regex)
                .map_or(String::new(), |m| m.spec.value.clone())
        };
        let matchers: Vec<String> = held
            .matchers
            .iter()
            .map(|m| {
                format!(
                    "{}{}{}",
                    m.spec.name,
                    matcher::operator(&m.spec),
                    m.spec.value
                )
            })
            .collect();
        history.event(crate::history::HistoryEvent {
            name: matchers.join(","),
            status: if ended.is_some() { "EXPIRED" } else { "ACTIVE" }.to_string(),
            message: format!("until {}: {}", rfc3339(held.ends_at), held.comment),
            id: held.id().to_string(),
            caller: caller.to_string(),
            audit_hash: held.audit_hash.clone(),
            ended_at: ended,
            ..crate::history::HistoryEvent::new(
                health_proto::v1::HistoryKind::Silence,
                held.starts_at,
                &equal("node"),
                &equal("device"),
            )
        });
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ids of the active silences whose matchers match the alert's Alertmanager labels.
    pub fn silencing(&self, alert: &Alert) -> Vec<String> {
        let labels = crate::alertmanager::labels(alert);
        let now = SystemTime::now();
        let book = self.book();
        book.operator
            .iter()
            .chain(book.maintenance.values())
            .filter(|h| h.active(now) && matcher::all_match(&h.matchers, &labels))
            .map(|h| h.id().to_string())
            .filter(|id| !id.is_empty())
            .collect()
    }

    /// Every silence of the book, operator ones first (oldest first), then the maintenance
    /// ones, including windows whose silence is not in Alertmanager yet (`pending`).
    pub fn list(&self, include_expired: bool) -> Vec<Silence> {
        let now = SystemTime::now();
        let windows = self.windows.all();
        let book = self.book();
        let mut out: Vec<Silence> = book
            .operator
            .iter()
            .map(|h| h.to_proto(None, now))
            .chain(
                book.maintenance
                    .iter()
                    .map(|(k, h)| h.to_proto(Some(k), now)),
            )
            .collect();
        for (key, window) in &windows {
            if !book.maintenance.contains_key(key) {
                let held = reconciler::maintenance_silence(key, window, 0);
                out.push(held.to_proto(Some(key), now));
            }
        }
        out.retain(|s| include_expired || s.state != "expired");
        out
    }

    /// An operator's silence, made in every Alertmanager.
    pub async fn create(
        &self,
        operator: &Operator,
        request: CreateSilenceRequest,
    ) -> Result<Silence, Status> {
        let matchers = checked(&request)?;
        let Some(client) = &self.client else {
            return Err(Status::failed_precondition(
                "CreateSilence: no Alertmanager configured on the collector (alerts.alertmanager)",
            ));
        };
        let now = SystemTime::now();
        let mut held = Held {
            ids: Vec::new(),
            matchers,
            starts_at: now,
            ends_at: now + Duration::from_secs(request.for_seconds),
            created_by: format!("{CREATED_BY} ({})", operator.caller.principal()),
            comment: request.comment.clone(),
            audit_hash: String::new(),
            origin: Origin::Operator,
            expired: false,
            adopted: false,
        };
        let mut errors = Vec::new();
        for url in client.urls() {
            match client.post(url, &held.postable(None)).await {
                Ok(id) => held.ids.push(Some(id)),
                Err(e) => {
                    errors.push(e);
                    held.ids.push(None);
                }
            }
        }
        let args = json!({
            "id": held.id(),
            "matchers": held.matchers.iter().map(|m| AmMatcher::from(&m.spec)).collect::<Vec<_>>(),
            "ends_at": rfc3339(held.ends_at),
            "comment": held.comment,
        });
        if held.id().is_empty() {
            let message = format!("no Alertmanager took the silence: {}", errors.join("; "));
            operator
                .record("CreateSilence", args, Outcome::Failed, message.clone())
                .await?;
            return Err(Status::unavailable(format!("CreateSilence: {message}")));
        }
        for e in &errors {
            tracing::warn!(error = %e, id = held.id(), "silence not made in one Alertmanager");
        }
        let recorded = operator
            .record("CreateSilence", args, Outcome::Succeeded, errors.join("; "))
            .await;
        let appended = match recorded {
            Ok(appended) => appended,
            Err(status) => {
                // Not recorded, so not made: take it back.
                self.delete_everywhere(client, &held.ids).await;
                return Err(status);
            }
        };
        held.audit_hash = appended.hash;
        tracing::info!(target: "audit", id = held.id(), by = %operator.caller.identity, "silence created");
        let silence = held.to_proto(None, now);
        self.record(&held, operator.caller.principal(), None);
        let mut book = self.book();
        book.operator.push(held);
        prune_expired(&mut book.operator);
        Ok(silence)
    }

    /// Expires an operator's silence in every Alertmanager.
    pub async fn expire(&self, operator: &Operator, id: &str) -> Result<Silence, Status> {
        let found = {
            let book = self.book();
            if book.maintenance.values().any(|h| h.id() == id) {
                return Err(Status::failed_precondition(format!(
                    "silence {id} is held for a maintenance window; end the maintenance instead"
                )));
            }
            book.operator
                .iter()
                .find(|h| h.id() == id && !h.expired)
                .cloned()
        };
        let Some(held) = found else {
            return Err(Status::not_found(format!(
                "no active silence {id:?} made through this collector (agent-ctl silences lists them)"
            )));
        };
        let Some(client) = &self.client else {
            return Err(Status::failed_precondition(
                "ExpireSilence: no Alertmanager configured on the collector",
            ));
        };
        // One past its endsAt has been ended by Alertmanager already.
        let errors = if held.ends_at <= SystemTime::now() {
            Vec::new()
        } else {
            self.delete_everywhere(client, &held.ids).await
        };
        let args = json!({ "id": id });
        if !errors.is_empty() {
            let message = errors.join("; ");
            operator
                .record("ExpireSilence", args, Outcome::Failed, message.clone())
                .await?;
            return Err(Status::unavailable(format!(
                "ExpireSilence {id}: {message}"
            )));
        }
        let appended = operator
            .record("ExpireSilence", args, Outcome::Succeeded, String::new())
            .await?;
        let now = SystemTime::now();
        let mut book = self.book();
        let mut shown = None;
        if let Some(h) = book.operator.iter_mut().find(|h| h.id() == id) {
            h.expired = true;
            h.ends_at = h.ends_at.min(now);
            h.audit_hash = appended.hash;
            shown = Some(h.to_proto(None, now));
            self.record(h, operator.caller.principal(), Some(now));
        }
        prune_expired(&mut book.operator);
        Ok(shown.unwrap_or_else(|| held.to_proto(None, now)))
    }

    /// DELETEs in every Alertmanager that has the silence; returns the failures.
    async fn delete_everywhere(
        &self,
        client: &SilenceClient,
        ids: &[Option<String>],
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for (url, id) in client.urls().iter().zip(ids) {
            if let Some(id) = id {
                if let Err(e) = client.delete(url, id).await {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Takes into the book the silences the Alertmanagers still hold that this collector made
    /// (before a restart). Silences found in several Alertmanagers are joined by their
    /// matchers, createdBy and comment.
    pub async fn adopt(&self) -> Result<usize, String> {
        let Some(client) = &self.client else {
            return Ok(0);
        };
        let mut found: Vec<(usize, GettableSilence)> = Vec::new();
        let mut errors = Vec::new();
        for (i, url) in client.urls().iter().enumerate() {
            // One Alertmanager of several down must not hold up the others: what it holds
            // is made again there once it is back (a duplicate that ends by itself).
            let listed = match client.list(url).await {
                Ok(listed) => listed,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            found.extend(
                listed
                    .into_iter()
                    .filter(|s| s.created_by.starts_with(CREATED_BY) && s.status.state != "expired")
                    .map(|s| (i, s)),
            );
        }
        if errors.len() == client.urls().len() {
            return Err(errors.join("; "));
        }
        for e in &errors {
            tracing::warn!(error = %e, "silences of one Alertmanager not adopted");
        }
        let count = client.urls().len();
        let mut adopted: Vec<(Option<WindowKey>, Held)> = Vec::new();
        for (i, s) in found {
            if let Some((_, held)) = adopted.iter_mut().find(|(_, h)| {
                h.ids.get(i).is_some_and(Option::is_none)
                    && h.created_by == s.created_by
                    && h.comment == s.comment
                    && h.matchers
                        .iter()
                        .map(|m| AmMatcher::from(&m.spec))
                        .eq(s.matchers.iter().cloned())
            }) {
                held.ids[i] = Some(s.id.clone());
                continue;
            }
            let Some(held) = adopted_held(&s, i, count) else {
                continue;
            };
            let key = (held.origin == Origin::Maintenance)
                .then(|| window_key(&s.matchers))
                .flatten();
            adopted.push((key, held));
        }
        let n = adopted.len();
        let mut book = self.book();
        for (key, held) in adopted {
            match key {
                Some(key) => {
                    book.maintenance.entry(key).or_insert(held);
                }
                None if held.origin == Origin::Operator
                    && !book.operator.iter().any(|h| h.id() == held.id()) =>
                {
                    book.operator.push(held);
                }
                None => {}
            }
        }
        if n > 0 {
            tracing::info!(
                silences = n,
                "adopted the collector's silences still in Alertmanager"
            );
        }
        Ok(n)
    }
}

/// A silence found in Alertmanager at start, as a book entry.
fn adopted_held(s: &GettableSilence, index: usize, count: usize) -> Option<Held> {
    let parse = |t: &str| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok();
    let matchers = s
        .matchers
        .iter()
        .enumerate()
        .map(|(i, m)| Matcher::new(SilenceMatcher::from(m), i).ok())
        .collect::<Option<Vec<_>>>()?;
    let mut ids = vec![None; count];
    *ids.get_mut(index)? = Some(s.id.clone());
    Some(Held {
        ids,
        matchers,
        starts_at: parse(&s.starts_at)?,
        ends_at: parse(&s.ends_at)?,
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
        audit_hash: String::new(),
        origin: if s.created_by == MAINTENANCE_CREATED_BY {
            Origin::Maintenance
        } else {
            Origin::Operator
        },
        expired: false,
        adopted: true,
    })
}

/// The window a maintenance silence's matchers describe: node=X, and device=Y or not.
fn window_key(matchers: &[AmMatcher]) -> Option<WindowKey> {
    let value = |name: &str| {
        matchers
            .iter()
            .find(|m| m.name == name && m.is_equal && !m.is_regex)
            .map(|m| m.value.clone())
    };
    Some(WindowKey {
        node: value("node")?,
        device: value("device").unwrap_or_default(),
    })
}

/// Forgets the oldest ended silences beyond [`EXPIRED_KEPT`] (expired, or past their end).
fn prune_expired(operator: &mut Vec<Held>) {
    let now = SystemTime::now();
    let ended = |h: &Held| h.expired || h.ends_at <= now;
    let expired = operator.iter().filter(|h| ended(h)).count();
    if expired > EXPIRED_KEPT {
        let mut drop = expired - EXPIRED_KEPT;
        operator.retain(|h| {
            if ended(h) && drop > 0 {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// The request's matchers, checked; INVALID_ARGUMENT naming the field otherwise.
fn checked(request: &CreateSilenceRequest) -> Result<Vec<Matcher>, Status> {
    let invalid = |m: String| Status::invalid_argument(format!("CreateSilence: {m}"));
    if request.matchers.is_empty() {
        return Err(invalid(
            "matchers: expected at least one matcher, found none".into(),
        ));
    }
    if request.matchers.len() > MAX_MATCHERS {
        return Err(invalid(format!(
            "matchers: expected at most {MAX_MATCHERS}, found {}",
            request.matchers.len()
        )));
    }
    if request.for_seconds == 0 || request.for_seconds > MAX_FOR.as_secs() {
        return Err(invalid(format!(
            "for_seconds: expected 1 to {} (30 days), found {}",
            MAX_FOR.as_secs(),
            request.for_seconds
        )));
    }
    if request.comment.trim().is_empty() || request.comment.len() > MAX_COMMENT {
        return Err(invalid(format!(
            "comment: expected why (1 to {MAX_COMMENT} bytes), found {} bytes",
            request.comment.trim().len()
        )));
    }
    request
        .matchers
        .iter()
        .enumerate()
        .map(|(i, m)| Matcher::new(m.clone(), i).map_err(invalid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        matchers: Vec<SilenceMatcher>,
        for_seconds: u64,
        comment: &str,
    ) -> CreateSilenceRequest {
        CreateSilenceRequest {
            matchers,
            for_seconds,
            comment: comment.into(),
        }
    }

    fn node_is(value: &str) -> SilenceMatcher {
        SilenceMatcher {
            name: "node".into(),
            value: value.into(),
            is_regex: false,
            is_equal: true,
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let e = checked(&request(vec![], 60, "x")).unwrap_err();
        assert!(
            e.message().contains("matchers: expected at least one"),
            "{e:?}"
        );
        let e = checked(&request(vec![node_is("n1")], 0, "x")).unwrap_err();
        assert!(e.message().contains("for_seconds: expected 1 to"), "{e:?}");
        let e = checked(&request(vec![node_is("n1")], MAX_FOR.as_secs() + 1, "x")).unwrap_err();
        assert!(e.message().contains("for_seconds"), "{e:?}");
        let e = checked(&request(vec![node_is("n1")], 60, " ")).unwrap_err();
        assert!(e.message().contains("comment: expected why"), "{e:?}");
        assert_eq!(
            checked(&request(vec![node_is("n1")], 60, "x"))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_maintenance_silences_matchers_name_its_window() {
        let m = |name: &str, value: &str| AmMatcher {
            name: name.into(),
            value: value.into(),
            is_regex: false,
            is_equal: true,
        };
        assert_eq!(
            window_key(&[m("node", "n1"), m("device", "loihi-0")]),
            Some(WindowKey {
                node: "n1".into(),
                device: "loihi-0".into()
            })
        );
        assert_eq!(
            window_key(&[m("node", "n1")]),
            Some(WindowKey {
                node: "n1".into(),
                device: String::new()
            })
        );
        assert_eq!(window_key(&[m("device", "loihi-0")]), None);
    }

    #[test]
    fn silencing_lists_the_active_matching_silences() {
        let silences = Silences::new(None, Arc::default());
        let now = SystemTime::now();
        let held = |id: &str, node: &str, ends_at: SystemTime| Held {
            ids: vec![Some(id.into())],
            matchers: vec![Matcher::new(node_is(node), 0).unwrap()],
            starts_at: now - Duration::from_secs(1),
            ends_at,
            created_by: CREATED_BY.into(),
            comment: "c".into(),
            audit_hash: String::new(),
            origin: Origin::Operator,
            expired: false,
            adopted: false,
        };
        {
            let mut book = silences.book();
            book.operator
                .push(held("a", "n1", now + Duration::from_secs(60)));
            book.operator
                .push(held("b", "n2", now + Duration::from_secs(60)));
            book.operator
                .push(held("c", "n1", now - Duration::from_millis(1)));
        }
        let alert = Alert {
            node: "n1".into(),
            subject: "host".into(),
            name: "HOST_DISK_FULL".into(),
            ..Alert::default()
        };
        assert_eq!(silences.silencing(&alert), vec!["a".to_string()]);
        assert_eq!(silences.list(false).len(), 2);
        assert_eq!(silences.list(true).len(), 3);
    }
}
