//! `/metrics` as Prometheus sees it: one scrape over plain HTTP/1.1 (the agent's page has a
//! length, the collector's is streamed in chunks; both are read to the end), the collector's
//! per-node series by `match[]`, and `promtool check metrics` on the text (promtool from the
//! Debian package `prometheus`, which the test script installs).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `GET /metrics` over plain HTTP/1.1; panics with the status line on anything but 200. The
/// collector's default scrape: fleet aggregates (its per-node series: [`scrape_nodes`]).
pub fn scrape_metrics(addr: &str) -> String {
    scrape_target(addr, "/metrics")
}

/// The collector's per-node series of the nodes `selector` selects (a `match[]` selector such
/// as `{node="n1"}`); panics on anything but 200.
pub fn scrape_nodes(addr: &str, selector: &str) -> String {
    let query: String = form_urlencoded::byte_serialize(selector.as_bytes()).collect();
    scrape_target(addr, &format!("/metrics?match[]={query}"))
}

/// `GET target` (path and query) as Prometheus sends it; panics on anything but a 200 in the
/// Prometheus text format.
pub fn scrape_target(addr: &str, target: &str) -> String {
    let (status, head, body) = http_get(addr, target);
    assert_eq!(status, 200, "scrape of {addr}{target}: {head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// `GET target` over HTTP/1.1 (`Connection: close`): the status, the header and the body, a
/// chunked body (the collector streams its page) decoded.
pub fn http_get(addr: &str, target: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {response:?}"));
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let raw = &response[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    let body = String::from_utf8(body).unwrap_or_else(|e| panic!("{addr}{target}: not UTF-8: {e}"));
    (status, head, body)
}

/// Decodes a chunked HTTP/1.1 body; panics on a malformed or cut one (a scrape that ended
/// early must fail, not parse as a shorter page).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("chunked body cut short after {} bytes", out.len()));
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size {size_text:?}: {e}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        assert!(
            raw.len() >= size + 2,
            "chunk cut short after {} bytes",
            out.len()
        );
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Panics, with promtool's words and the scrape, unless `promtool check metrics` accepts it.
pub fn promtool_check_metrics(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (apt-get install prometheus; tests/run.sh does this)"
            )
        });
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics rejects the {what} scrape:\n{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses sample lines as Prometheus's text format has them (`name{l="v",...} value`, escapes
/// in label values); comments are skipped. Panics, naming the line, on anything else: test
/// code reading the collector's or agent's own page.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).expect("sample name");
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut key = String::new();
            let mut end = 0;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => value.push('\n'),
                                    Some(c) => value.push(c),
                                    None => panic!("dangling escape in {line}"),
                                },
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            rest = &body[end..];
        }
        let value = rest
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}
