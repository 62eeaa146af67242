//! The `[web]` table: the read-only status page (`web/`). It is served on `metrics_listen`
//! and, with `listen`, on a listener of its own; who may read it is decided in `web/access.rs`
//! from these keys and `[tls]`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use health_daemon::FieldError;

use serde::{Deserialize, Deserializer};

use super::de::{duration_within, listen_address};
use super::{Bounds, Config, ConfigError};

/// One chart point per step; a chart holds `web::trail::POINTS` of them (an hour by default).
const DEFAULT_CHART_STEP: Duration = Duration::from_secs(60);
const CHART_STEP_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(3600),
};

/// Every key of the `[web]` table.
pub(super) const WEB_KEYS: [&str; 4] = ["enabled", "listen", "allow_remote", "chart_step"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the page at all (on `metrics_listen`, and on `listen` when set).
    pub enabled: bool,
    /// A listener of the page's own: HTTPS for client certificates from `tls.client_ca` when
    /// `[tls]` is set, plain HTTP otherwise.
    #[serde(deserialize_with = "web_listen")]
    pub listen: Option<SocketAddr>,
    /// Without `[tls]`, also answer peers that are not on loopback (off: the page, like an
    /// unauthenticated API, is for the collector's own host unless a person says otherwise).
    pub allow_remote: bool,
    /// How much time one point of a device's chart covers.
    #[serde(deserialize_with = "chart_step")]
    pub chart_step: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: None,
            allow_remote: false,
            chart_step: DEFAULT_CHART_STEP,
        }
    }
}

fn web_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    listen_address(d).map(Some)
}

fn chart_step<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &CHART_STEP_BOUNDS)
}

/// The page's listener is its own port, and `allow_remote` only means something without TLS
/// (with TLS, a client certificate is what lets a remote reader in).
pub(super) fn check(file: &Path, config: &Config) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| {
        Err(ConfigError::Key {
            file: file.to_path_buf(),
            field: FieldError::new(key, message),
        })
    };
    let web = &config.web;
    if let Some(addr) = web.listen {
        if addr == config.listen || Some(addr) == config.metrics_listen {
            return fail(
                "web.listen",
                format!("expected an address of its own, found {addr}, already listen or metrics_listen"),
            );
        }
    }
    if web.allow_remote && config.tls.cert.is_some() {
        return fail(
            "web.allow_remote",
            "expected false with [tls]: remote readers of the page present a client certificate on web.listen".to_string(),
        );
    }
    Ok(())
}
