//! One look at one service, each part bounded by the rule's `timeout`: the unit's state from
//! `systemctl show`, a GET of the health URL, the port in the kernel's socket tables, and the
//! service's own request counter. Returns what was seen; `conditions.rs` decides what it means.
//!
//! `systemctl` is found on `PATH` and run through the HAL's vendor-command runner (its own
//! process group, output capped, the group killed when the deadline passes), the same guarantees
//! a vendor tool gets. The port is read from `/proc/net/tcp` and `tcp6` (a socket in LISTEN
//! on that local port, any address) rather than by connecting: a connect would land in the
//! service's accept queue and its logs every interval, and would miss a listener bound only to
//! a non-loopback address.

use std::time::{Duration, Instant};

use bytes::Bytes;
use health_hal::plugin::{VendorCommand, Verdict};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Most of a health reply kept (its first line goes into the message).
pub const HEALTH_BODY_CAP: usize = 64 << 10;
/// Most of a metrics page read for the error counter.
pub const METRICS_BODY_CAP: usize = 4 << 20;
/// Output of `systemctl show` for four properties is a few hundred bytes.
const SYSTEMCTL_OUTPUT_CAP: usize = 64 << 10;

/// The unit as `systemctl show` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub restarts: u32,
}

/// What the health URL answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthAnswer {
    /// 0: no answer.
    pub status: u16,
    /// Empty when it answered 2xx; else what was seen (status and body line, timeout, refused).
    pub error: String,
    pub latency: Duration,
}

pub type Http = Client<HttpConnector, Empty<Bytes>>;

/// One client per rule: no pooled connections, so each check opens its own, as a new user of
/// the service would.
pub fn http_client(timeout: Duration) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// `systemctl show` of the unit's states and restart count.
pub async fn unit_state(unit: &str, timeout: Duration) -> Result<UnitState, String> {
    let cmd = VendorCommand::new("systemctl", Vec::new(), timeout, SYSTEMCTL_OUTPUT_CAP);
    let args: Vec<String> = [
        "show",
        "--property=LoadState,ActiveState,SubState,NRestarts",
        "--",
        unit,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = cmd.run(&args, None).await.map_err(|e| e.to_string())?;
    if out.verdict != Verdict::Ok {
        return Err(format!(
            "systemctl show {unit} exited with status 1: {}",
            out.stderr_line().unwrap_or_else(|| "(no stderr)".into())
        ));
    }
    parse_show(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("systemctl show {unit}: {e}"))
}

/// `Key=value` lines; ActiveState is required, NRestarts absent (older systemd) is 0.
pub fn parse_show(text: &str) -> Result<UnitState, String> {
    let mut s = UnitState::default();
    let mut active = false;
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        match k {
            "LoadState" => s.load_state = v.to_string(),
            "ActiveState" => {
                s.active_state = v.to_string();
                active = true;
            }
            "SubState" => s.sub_state = v.to_string(),
            "NRestarts" if !v.is_empty() => {
                s.restarts = v
                    .parse()
                    .map_err(|_| format!("NRestarts: expected a count, found {v:?}"))?;
            }
            _ => {}
        }
    }
    if !active || s.active_state.is_empty() {
        return Err("expected an ActiveState= line, found none".into());
    }
    Ok(s)
}

/// A GET of `url` within `timeout` (connect, headers and body together).
pub async fn health(client: &Http, url: &str, timeout: Duration) -> HealthAnswer {
    let t0 = Instant::now();
    let got = tokio::time::timeout(timeout, get(client, url, HEALTH_BODY_CAP)).await;
    let latency = t0.elapsed();
    let (status, error) = match got {
        Err(_) => (
            0,
            format!(
                "GET {url}: no answer within {}",
                humantime::format_duration(timeout)
            ),
        ),
        Ok(Err(e)) => (0, format!("GET {url}: {e}")),
        Ok(Ok((status, _))) if (200..300).contains(&status) => (status, String::new()),
        Ok(Ok((status, body))) => {
            let line = first_line(&body)
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            (status, format!("GET {url}: status {status}{line}"))
        }
    };
    HealthAnswer {
        status,
        error,
        latency,
    }
}

/// The first non-empty line of a reply, cut to what fits in a message.
fn first_line(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(160).collect())
}

/// Status and up to `cap` bytes of the body (the rest is not read).
async fn get(client: &Http, url: &str, cap: usize) -> Result<(u16, Vec<u8>), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let req = hyper::Request::get(uri)
        .header(hyper::header::USER_AGENT, "health-agent")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| connect_error(&e))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut kept = Vec::new();
    while kept.len() < cap {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(format!("reading the body: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = cap - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok((status, kept))
}

/// hyper-util's error says "client error (Connect)"; the cause says what happened.
fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Whether the kernel has a TCP socket in LISTEN on local `port` (IPv4 or IPv6, any address).
pub async fn listening(port: u16, timeout: Duration) -> Result<bool, String> {
    let job = tokio::task::spawn_blocking(move || {
        let mut seen_any = false;
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    seen_any = true;
                    if listens_on(&text, port) {
                        return Ok(true);
                    }
                }
                // No IPv6 in this kernel: tcp6 is absent, which is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot read {file}: {e}")),
            }
        }
        if seen_any {
            Ok(false)
        } else {
            Err("neither /proc/net/tcp nor /proc/net/tcp6 exists".to_string())
        }
    });
    match tokio::time::timeout(timeout, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("the port check failed: {e}")),
        Err(_) => Err(format!(
            "reading /proc/net/tcp took longer than {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// `/proc/net/tcp` rows: `sl local_address rem_address st ...`, the port in hex after the
/// colon, state 0A is LISTEN.
pub fn listens_on(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|row| {
        let mut cols = row.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(state)) = (cols.next(), cols.next(), cols.next())
        else {
            return false;
        };
        state == "0A"
            && local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

/// Requests the service counted, split into 5xx and the rest, from its own counter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestCounts {
    pub server_errors: f64,
    pub other: f64,
}

/// Reads `counter` at `url` and sums its samples by the first digit of their `code` (or
/// `status`) label.
pub async fn request_counts(
    client: &Http,
    url: &str,
    counter: &str,
    timeout: Duration,
) -> Result<RequestCounts, String> {
    let (status, body) = tokio::time::timeout(timeout, get(client, url, METRICS_BODY_CAP))
        .await
        .map_err(|_| {
            format!(
                "GET {url}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !(200..300).contains(&status) {
        return Err(format!("GET {url}: status {status}"));
    }
    parse_counter(&String::from_utf8_lossy(&body), counter)
        .ok_or_else(|| format!("{url} has no {counter} sample with a code or status label"))
}

/// Sums `name{...code="5.."...} value` lines; `None` when no sample has a code/status label.
pub fn parse_counter(text: &str, name: &str) -> Option<RequestCounts> {
    let mut counts = RequestCounts::default();
    let mut found = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(labels_and_value) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = labels_and_value.split_once('}') else {
            continue;
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let code = labels.split(',').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            matches!(k.trim(), "code" | "status" | "status_code").then(|| v.trim_matches('"'))
        });
        let Some(code) = code else { continue };
        found = true;
        if code.starts_with('5') {
            counts.server_errors += v;
        } else {
            counts.other += v;
        }
    }
    found.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show_is_read_by_key() {
        let s = parse_show("LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=3\n")
            .expect("valid");
        assert_eq!(s.active_state, "failed");
        assert_eq!(s.restarts, 3);
        assert!(parse_show("SubState=dead\n").is_err());
        assert!(parse_show("ActiveState=active\nNRestarts=x\n").is_err());
    }

    #[test]
    fn listen_rows_match_the_port_in_hex_and_state_0a() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:1F40 00000000:0000 0A 00000000:00000000\n\
            1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000\n";
        assert!(listens_on(table, 8000));
        assert!(
            !listens_on(table, 8001),
            "an established socket is not a listener"
        );
        assert!(!listens_on(table, 80));
    }

    #[test]
    fn the_counter_is_split_by_status_class() {
        let text = "# TYPE http_requests_total counter\n\
            http_requests_total{code=\"200\",path=\"/solve\"} 90\n\
            http_requests_total{code=\"500\",path=\"/solve\"} 7\n\
            http_requests_total{path=\"/x\",status=\"503\"} 3\n\
            http_requests_total_created{code=\"200\"} 1.7e9\n";
        let c = parse_counter(text, "http_requests_total").expect("found");
        assert_eq!(c.server_errors, 10.0);
        assert_eq!(c.other, 90.0);
        assert!(parse_counter("http_requests_total 5\n", "http_requests_total").is_none());
    }
}
