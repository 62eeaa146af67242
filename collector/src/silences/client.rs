//! Alertmanager's v2 silence API, on the same pooled hyper client style as the alert push
//! (`crate::alertmanager`): `POST /api/v2/silences` (a body with an `id` updates that
//! silence), `GET /api/v2/silences`, `DELETE /api/v2/silence/{id}`. Every exchange is bounded
//! by `alerts.push_timeout`; errors are one line naming the URL.

use std::time::Duration;

use bytes::Bytes;
use health_proto::v1::SilenceMatcher;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::CONTENT_TYPE;
use hyper::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// Largest reply read (a GET of every silence an Alertmanager holds).
const REPLY_LIMIT: usize = 8 * 1024 * 1024;

/// A matcher in Alertmanager's JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    /// Alertmanager before 0.22 did not send it: equality then.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl From<&SilenceMatcher> for AmMatcher {
    fn from(m: &SilenceMatcher) -> AmMatcher {
        AmMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: m.is_regex,
            is_equal: m.is_equal,
        }
    }
}

impl From<&AmMatcher> for SilenceMatcher {
    fn from(m: &AmMatcher) -> SilenceMatcher {
        SilenceMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: m.is_regex,
            is_equal: m.is_equal,
        }
    }
}

/// A silence to create (no `id`) or update (`id` of an existing one).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub matchers: Vec<AmMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SilenceStatus {
    pub state: String,
}

/// A silence as `GET /api/v2/silences` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    pub id: String,
    pub status: SilenceStatus,
    pub matchers: Vec<AmMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

/// The silence API of every configured Alertmanager.
#[derive(Clone)]
pub struct SilenceClient {
    urls: Vec<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl SilenceClient {
    /// `urls`: Alertmanager base URLs (`http://host:9093`), as `alerts.alertmanager` has them.
    pub fn new(urls: &[String], timeout: Duration) -> SilenceClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        SilenceClient {
            urls: urls.to_vec(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Creates or updates a silence in the Alertmanager at `base`; returns its id (a new one
    /// when Alertmanager could not update in place).
    pub async fn post(&self, base: &str, silence: &PostableSilence) -> Result<String, String> {
        let body = serde_json::to_vec(silence).map_err(|e| format!("cannot encode: {e}"))?;
        let url = format!("{base}/api/v2/silences");
        let reply = self.exchange(Method::POST, &url, body).await?;
        serde_json::from_slice::<Created>(&reply)
            .map(|c| c.silence_id)
            .map_err(|e| format!("{url}: the reply has no silenceID: {e}"))
    }

    /// Every silence the Alertmanager at `base` holds.
    pub async fn list(&self, base: &str) -> Result<Vec<GettableSilence>, String> {
        let url = format!("{base}/api/v2/silences");
        let reply = self.exchange(Method::GET, &url, Vec::new()).await?;
        serde_json::from_slice(&reply).map_err(|e| format!("{url}: not a list of silences: {e}"))
    }

    /// Expires a silence. One Alertmanager no longer has (404), or has expired already (it
    /// answers 500 "already expired" for one past its endsAt), is done.
    pub async fn delete(&self, base: &str, id: &str) -> Result<(), String> {
        let url = format!("{base}/api/v2/silence/{id}");
        match self.exchange(Method::DELETE, &url, Vec::new()).await {
            Ok(_) => Ok(()),
            Err(e) if e.contains("HTTP 404") || e.contains("already expired") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn exchange(&self, method: Method, url: &str, body: Vec<u8>) -> Result<Bytes, String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request for {url}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let reply = Limited::new(response.into_body(), REPLY_LIMIT)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("{url}: reading the reply: {e}"))?;
            if status.is_success() {
                Ok(reply)
            } else {
                let text = String::from_utf8_lossy(&reply);
                Err(format!("{url}: HTTP {}: {}", status.as_u16(), text.trim()))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
    }
}
