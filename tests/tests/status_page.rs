//! The collector's status page, end to end in real headless Chromium (Debian `chromium` and
//! `chromium-driver`): the fleet, a node and a device show what the gRPC API says; a fault
//! injected into the simulated board shows on the open page by itself, without a reload;
//! the incident it opens is listed with its timeline and its markdown export is the one
//! `agent-ctl` writes; a lost collector is said so. Screenshots are saved (under
//! `HEALTH_SCREENSHOT_DIR` when set) and checked not blank.
//!
//! The access rule is tested over real HTTP and TLS: with `[tls]` the plain listener refuses
//! the page and says where it is, and the HTTPS `web.listen` serves only client certificates
//! from the CA.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use health_e2e::{
    ctl, eventually, free_port, http_get, make_certs, output_text, pem, screenshot_dir, wait_for,
    Agent, Browser, Collector,
};
use health_proto::v1 as pb;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(30);
/// "Within a few seconds" of the fault: the agent reports every 200 ms, the page hears of a
/// change within a second of it.
const LIVE: Duration = Duration::from_secs(8);
const NODE: &str = "page-node";

/// One board of each kind; host thresholds this machine cannot reach, so only the injected
/// fault fires.
fn agent_config() -> String {
    let mut config = health_e2e::sim_config("200ms", "500ms", "200ms");
    config.push_str(
        "\n[host]\ndisk_warning_ratio = 0.9998\ndisk_critical_ratio = 0.9999\n\
         memory_warning_ratio = 0.9998\nmemory_critical_ratio = 0.9999\nload_warning_per_cpu = 1000.0\n",
    );
    config
}

fn shot(browser: &Browser, dir: &Path, name: &str) {
    let path = dir.join(format!("status-page-{name}.png"));
    browser.screenshot(&path).assert_not_blank();
}

/// The text of every cell in column `col` of the rows matching `rows`.
fn column(browser: &Browser, rows: &str, col: usize) -> Vec<String> {
    let v = browser.execute(
        "return [...document.querySelectorAll(arguments[0])].map(r => r.cells[arguments[1]].innerText.trim());",
        vec![json!(rows), json!(col)],
    );
    serde_json::from_value(v).unwrap()
}

fn state_name(s: pb::HealthState) -> String {
    s.as_str_name()
        .trim_start_matches("HEALTH_STATE_")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_api_says_and_follows_a_fault_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut collector = Collector::start(&format!(
        "metrics_listen = \"{web}\"\nhistory_path = \"{}\"\n\
         [alerts]\nfor = {{ DEVICE_UNRESPONSIVE = \"0s\" }}\n[web]\nchart_step = \"1s\"\n",
        dir.path().join("history.db").display()
    ));
    let agent = Agent::with_config(
        &agent_config(),
        &["--node", NODE, "--collector", &collector.url()],
    );
    // The test plays the operator: no policy acts on the fault it injects.
    agent.hands_off();
    let mut client = collector.client().await;
    let node = eventually("the node's four devices at the collector", LIMIT, || {
        let mut client = client.clone();
        async move {
            client
                .get_node(pb::GetFleetNodeRequest { node: NODE.into() })
                .await
                .ok()
                .map(|r| r.into_inner())
                .filter(|n| n.snapshot.as_ref().is_some_and(|s| s.devices.len() == 4))
        }
    })
    .await;
    let shots = screenshot_dir(dir.path());
    let base = format!("http://{web}");
    let browser = Browser::start(1280, 900);

    // The fleet: the node's row says what ListNodes says.
    browser.goto(&format!("{base}/#/fleet"));
    browser.wait_js(
        "the fleet table with the node",
        LIMIT,
        &format!("return document.querySelector('#nodes tr[data-node=\"{NODE}\"]') !== null;"),
    );
    browser.wait_js(
        "the live connection",
        LIMIT,
        "return document.querySelector('#conn').dataset.state === 'live';",
    );
    let listed = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner();
    let summary = listed.nodes.iter().find(|n| n.node == NODE).unwrap();
    let row = format!("#nodes tr[data-node=\"{NODE}\"]");
    assert_eq!(column(&browser, &row, 0), vec![NODE.to_string()]);
    assert!(column(&browser, &row, 1)[0].starts_with(&state_name(summary.state())));
    assert_eq!(
        column(&browser, &row, 2),
        vec![summary.device_count.to_string()]
    );
    assert_eq!(
        browser.text("#summary [data-count=\"nodes\"] b"),
        listed.nodes.len().to_string()
    );
    shot(&browser, &shots, "fleet");

    // A node, reached by its link: every device GetNode reports, with its state.
    browser.click(&format!("{row} a"));
    browser.wait_js(
        "the node's devices",
        LIMIT,
        "return document.querySelectorAll('#devices tr[data-device]').length === 4;",
    );
    let snapshot = node.snapshot.unwrap();
    let mut api_devices: Vec<(String, String)> = snapshot
        .devices
        .iter()
        .map(|d| (d.identity.clone().unwrap().id, state_name(d.state())))
        .collect();
    api_devices.sort();
    let ids = column(&browser, "#devices tr[data-device]", 0);
    let states = column(&browser, "#devices tr[data-device]", 2);
    let mut page_devices: Vec<(String, String)> = ids.into_iter().zip(states).collect();
    page_devices.sort();
    assert_eq!(page_devices, api_devices);
    assert!(browser.page_text().contains(&format!("Node {NODE}")));
    shot(&browser, &shots, "node");

    // A device: its readings as GetNode has them, and a chart of at least two points.
    browser.click("#devices tr[data-device=\"loihi-0\"] a");
    browser.wait_js(
        "the temperature chart with two points or more",
        LIMIT,
        "const c = document.querySelector('#chart-temperature'); return c !== null && Number(c.dataset.points) >= 2;",
    );
    let loihi = snapshot
        .devices
        .iter()
        .find(|d| d.identity.as_ref().unwrap().id == "loihi-0")
        .unwrap();
    let sensors = column(&browser, "#readings tbody tr", 0);
    let mut api_sensors: Vec<String> = loihi.readings.iter().map(|r| r.sensor.clone()).collect();
    let mut page_sensors = sensors.clone();
    api_sensors.sort();
    page_sensors.sort();
    assert_eq!(page_sensors, api_sensors);
    shot(&browser, &shots, "device");

    // Back to the node; mark the document so a reload would show.
    browser.goto(&format!("{base}/#/node/{NODE}"));
    browser.wait_js(
        "the node view",
        LIMIT,
        "return document.querySelectorAll('#devices tr[data-device]').length === 4;",
    );
    browser.execute("window.__not_reloaded = true; return true;", vec![]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    browser.wait_js(
        "loihi-0 CRITICAL with its DEVICE_UNRESPONSIVE alert, without a reload",
        LIVE,
        "const r = document.querySelector('#devices tr[data-device=\"loihi-0\"]');
         const alerts = document.querySelector('#node-alerts');
         return window.__not_reloaded === true && r && r.dataset.state === 'CRITICAL'
             && alerts && alerts.innerText.includes('FIRING');",
    );
    let alerts = client
        .list_alerts(pb::ListAlertsRequest {})
        .await
        .unwrap()
        .into_inner();
    let firing: Vec<&pb::Alert> = alerts
        .alerts
        .iter()
        .filter_map(|e| e.alert.as_ref())
        .filter(|a| a.node == NODE && a.status == pb::AlertStatus::Firing as i32)
        .collect();
    assert!(!firing.is_empty(), "the API has the alert the page shows");
    let page_alerts = column(&browser, "#node-alerts tbody tr", 2);
    for a in &firing {
        assert!(
            page_alerts.contains(&a.alertname),
            "{} missing from {page_alerts:?}",
            a.alertname
        );
    }
    assert!(browser
        .text("#devices tr[data-device=\"loihi-0\"]")
        .contains("DEVICE_UNRESPONSIVE"));
    shot(&browser, &shots, "node-fault");

    // The incident the fault opened, with its timeline, as GetIncident has it.
    browser.click("nav a[data-nav=\"incidents\"]");
    let incident_row = format!("#incidents tr[data-incident$=\"-{NODE}\"]");
    browser.wait_js(
        "the incident listed",
        LIMIT,
        &format!("return document.querySelector('{incident_row}') !== null;"),
    );
    let id = browser
        .execute(
            &format!("return document.querySelector('{incident_row}').dataset.incident;"),
            vec![],
        )
        .as_str()
        .unwrap()
        .to_string();
    browser.click(&format!("{incident_row} a"));
    browser.wait_js(
        "the timeline",
        LIMIT,
        "return document.querySelectorAll('#timeline tbody tr').length > 0;",
    );
    let incident = client
        .get_incident(pb::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let whats = column(&browser, "#timeline tbody tr", 2);
    // The page may have drawn a moment before the API answered: what it shows is a prefix.
    assert!(
        !whats.is_empty() && whats.len() <= incident.timeline.len(),
        "{whats:?}"
    );
    for (shown, entry) in whats.iter().zip(&incident.timeline) {
        assert_eq!(shown, &entry.what);
    }
    assert!(browser.page_text().contains(&incident.detection));
    shot(&browser, &shots, "incident");
    // The export link gives what `agent-ctl incident ID --export markdown` writes.
    let (status, markdown) = http_get(&web, &format!("/api/incident/{id}/export.md")).unwrap();
    assert_eq!(status, 200, "{markdown}");
    let out = ctl(&[
        "--collector",
        &collector.addr,
        "incident",
        &id,
        "--export",
        "markdown",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let ctl_markdown = String::from_utf8(out.stdout).unwrap();
    // Both read the history at their own moment: the same incident, the same skeleton.
    assert_eq!(markdown.lines().next(), ctl_markdown.lines().next());
    assert!(markdown.contains("## Timeline") && markdown.contains(&incident.detection));

    // A narrow window: the document does not scroll sideways (wide tables scroll in place).
    browser.set_viewport_size(390, 800);
    browser.goto(&format!("{base}/#/node/{NODE}"));
    browser.wait_js(
        "the node view",
        LIMIT,
        "return document.querySelectorAll('#devices tr[data-device]').length === 4;",
    );
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        vec![],
    );
    assert!(
        overflow.as_i64().unwrap() <= 1,
        "the page scrolls sideways by {overflow}px"
    );
    shot(&browser, &shots, "narrow");
    // The keyboard, on a fresh load: the first Tab lands on the skip link, which moves focus
    // to the content; a view is opened from the navigation with Enter.
    browser.goto(&format!("{base}/?keyboard#/fleet"));
    browser.wait_js(
        "the fleet view",
        LIMIT,
        "return document.querySelector('#nodes') !== null;",
    );
    browser.press_key(Browser::KEY_TAB);
    let focused = "return document.activeElement.textContent.trim();";
    assert_eq!(browser.execute(focused, vec![]), json!("Skip to content"));
    browser.press_key(Browser::KEY_ENTER);
    assert_eq!(
        browser.execute("return document.activeElement.id;", vec![]),
        json!("main")
    );
    browser.execute(
        "document.querySelector('nav a[data-nav=\"alerts\"]').focus(); return true;",
        vec![],
    );
    browser.press_key(Browser::KEY_ENTER);
    browser.wait_js("the alerts view, opened with the keyboard", LIMIT, "const h = document.querySelector('main h1'); return h !== null && h.textContent === 'Alerts';");
    // Focus follows the view: its heading, then the first filter.
    assert_eq!(browser.execute(focused, vec![]), json!("Alerts"));
    browser.press_key(Browser::KEY_TAB);
    assert_eq!(
        browser.execute("return document.activeElement.id;", vec![]),
        json!("f-q")
    );
    browser.set_viewport_size(1280, 900);

    // The collector goes away: the page says so by itself.
    collector.proc.signal(Signal::SIGKILL);
    collector.proc.wait_exit(Duration::from_secs(5));
    browser.wait_js(
        "the page to say it lost the collector",
        Duration::from_secs(25),
        "return document.querySelector('#conn').dataset.state === 'lost' && !document.querySelector('#lost').hidden;",
    );
    assert!(browser.text("#lost").starts_with("Lost the collector"));
    shot(&browser, &shots, "lost");
}

/// `GET path` over TLS with `openssl s_client` (from the package the test script installs),
/// presenting `identity` (certificate, key) if given: the status line, or `None` when the
/// handshake or the connection failed.
fn https_get(addr: &str, path: &str, ca: &str, identity: Option<(&str, &str)>) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-quiet",
        "-connect",
        addr,
        "-CAfile",
        ca,
        "-verify_return_error",
    ]);
    if let Some((cert, key)) = identity {
        cmd.args(["-cert", cert, "-key", key]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        let _ = write!(
            stdin,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
    }
    wait_for("openssl s_client to finish", LIMIT, || {
        child.try_wait().ok().flatten()
    });
    let mut text = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .ok()?;
    text.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .map(str::to_string)
}

#[test]
fn with_tls_the_page_needs_a_client_certificate_and_the_plain_listener_says_where_it_is() {
    let pki = make_certs();
    let d = pki.path();
    let ca = pem(d, "ca.pem");
    let metrics = format!("127.0.0.1:{}", free_port());
    let web = format!("127.0.0.1:{}", free_port());
    let collector = Collector::start(&format!(
        "metrics_listen = \"{metrics}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{ca}\"\n\
         [web]\nlisten = \"{web}\"\n",
        pem(d, "collector.pem"),
        pem(d, "collector.key"),
    ));
    wait_for("the web listener", LIMIT, || {
        std::net::TcpStream::connect(&web).ok()
    });
    // The plain listener: /metrics as before, the page refused with where to go.
    let (status, body) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("health_collector_nodes"));
    let (status, body) = http_get(&metrics, "/").unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&format!("https://{web}/")), "{body}");
    let (status, _) = http_get(&metrics, "/api/summary").unwrap();
    assert_eq!(status, 403);
    // HTTPS: a reader's certificate from the CA is served; none, or another CA's, is not.
    let reader = (pem(d, "bob-reader.pem"), pem(d, "bob-reader.key"));
    let line = https_get(&web, "/api/summary", &ca, Some((&reader.0, &reader.1)));
    assert_eq!(
        line.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "a reader's certificate"
    );
    let line = https_get(&web, "/", &ca, Some((&reader.0, &reader.1)));
    assert_eq!(line.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(
        https_get(&web, "/api/summary", &ca, None),
        None,
        "no certificate"
    );
    let rogue = (pem(d, "rogue.pem"), pem(d, "rogue.key"));
    assert_eq!(
        https_get(&web, "/api/summary", &ca, Some((&rogue.0, &rogue.1))),
        None,
        "another CA's certificate"
    );
    drop(collector);
}

#[test]
fn the_api_checks_its_arguments_and_names_what_it_expected() {
    let web = format!("127.0.0.1:{}", free_port());
    let _collector = Collector::start(&format!("metrics_listen = \"{web}\"\n"));
    let (status, body) = http_get(&web, "/api/nodes?per_page=100000").unwrap();
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error["error"],
        "per_page: expected a whole number from 1 to 500, found \"100000\""
    );
    let (status, body) = http_get(&web, "/api/alerts?status=purple").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("status: expected one of all, firing, suppressed"),
        "{body}"
    );
    let (status, body) = http_get(&web, "/api/node/nowhere").unwrap();
    assert_eq!(status, 404, "{body}");
    // No history: incidents say why rather than an empty list.
    let (status, body) = http_get(&web, "/api/incidents").unwrap();
    assert_eq!(status, 503, "{body}");
    let (status, body) = http_get(&web, "/api/incident/inc-1-x/export.exe").unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_get(&web, "/nothing-here").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"));
    // The page and its assets are the embedded ones, with a policy that allows no other origin.
    let (status, html) = http_get(&web, "/").unwrap();
    assert_eq!(status, 200);
    assert!(html.contains("/assets/app.js"));
    for asset in ["/assets/app.js", "/assets/style.css"] {
        assert_eq!(http_get(&web, asset).unwrap().0, 200, "{asset}");
    }
}
