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

/// Clicks the first element matching `css` once it is there, in one WebDriver command, so a
/// redraw between finding and clicking cannot leave a stale element.
fn click(browser: &Browser, css: &str) {
    browser.wait_js(
        &format!("{css} to click"),
        LIMIT,
        &format!(
            "const e = document.querySelector({}); if (!e) return false; e.click(); return true;",
            json!(css)
        ),
    );
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
    let node = eventually(
        "the node's four devices read and OK at the collector",
        LIMIT,
        || {
            let mut client = client.clone();
            async move {
                client
                    .get_node(pb::GetFleetNodeRequest { node: NODE.into() })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
                    .filter(|n| {
                        // Every device read at least once: the states the page will show are
                        // the settled ones, not UNKNOWN of a device not yet polled.
                        n.snapshot.as_ref().is_some_and(|s| {
                            s.devices.len() == 4
                                && s.devices.iter().all(|d| d.state() == pb::HealthState::Ok)
                        })
                    })
            }
        },
    )
    .await;
    let shots = screenshot_dir(dir.path());
    let base = format!("http://{web}");
    let browser = Browser::start(1280, 900);

    let page = Page {
        browser,
        base,
        shots,
        web,
    };
    let snapshot = node.snapshot.unwrap();
    fleet_is_what_list_nodes_says(&page, &mut client).await;
    node_is_what_get_node_says(&page, &snapshot);
    device_is_what_get_node_says(&page, &snapshot);
    a_fault_shows_without_a_reload(&page, &agent, &client).await;
    the_incident_shows_with_its_timeline_and_export(&page, &collector, &mut client).await;
    narrow_windows_and_the_keyboard_work(&page);
    // The collector goes away: the page says so by itself.
    collector.proc.signal(Signal::SIGKILL);
    collector.proc.wait_exit(Duration::from_secs(5));
    page.browser.wait_js(
        "the page to say it lost the collector",
        Duration::from_secs(25),
        "return document.querySelector('#conn').dataset.state === 'lost' && !document.querySelector('#lost').hidden;",
    );
    assert!(page.browser.text("#lost").starts_with("Lost the collector"));
    shot(&page.browser, &page.shots, "lost");
}

/// The browser on the page of one collector.
struct Page {
    browser: Browser,
    base: String,
    shots: std::path::PathBuf,
    web: String,
}

type Client = health_proto::v1::collector_client::CollectorClient<tonic::transport::Channel>;

async fn fleet_is_what_list_nodes_says(page: &Page, client: &mut Client) {
    // The fleet: the node's row says what ListNodes says.
    page.browser.goto(&format!("{}/#/fleet", page.base));
    page.browser.wait_js(
        "the fleet table with the node",
        LIMIT,
        &format!("return document.querySelector('#nodes tr[data-node=\"{NODE}\"]') !== null;"),
    );
    page.browser.wait_js(
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
    assert_eq!(column(&page.browser, &row, 0), vec![NODE.to_string()]);
    assert!(column(&page.browser, &row, 1)[0].starts_with(&state_name(summary.state())));
    assert_eq!(
        column(&page.browser, &row, 2),
        vec![summary.device_count.to_string()]
    );
    assert_eq!(
        page.browser.text("#summary [data-count=\"nodes\"] b"),
        listed.nodes.len().to_string()
    );
    shot(&page.browser, &page.shots, "fleet");
}

fn node_is_what_get_node_says(page: &Page, snapshot: &pb::NodeSnapshot) {
    // A node, reached by its link: every device GetNode reports, with its state.
    page.browser
        .click(&format!("#nodes tr[data-node=\"{NODE}\"] a"));
    page.browser.wait_js(
        "the node's devices",
        LIMIT,
        "return document.querySelectorAll('#devices tr[data-device]').length === 4;",
    );
    let mut api_devices: Vec<(String, String)> = snapshot
        .devices
        .iter()
        .map(|d| (d.identity.clone().unwrap().id, state_name(d.state())))
        .collect();
    api_devices.sort();
    let ids = column(&page.browser, "#devices tr[data-device]", 0);
    let states = column(&page.browser, "#devices tr[data-device]", 2);
    let mut page_devices: Vec<(String, String)> = ids.into_iter().zip(states).collect();
    page_devices.sort();
    assert_eq!(page_devices, api_devices);
    assert!(page.browser.page_text().contains(&format!("Node {NODE}")));
    shot(&page.browser, &page.shots, "node");
}

fn device_is_what_get_node_says(page: &Page, snapshot: &pb::NodeSnapshot) {
    // A device: its readings as GetNode has them, and a chart of at least two points.
    click(&page.browser, "#devices tr[data-device=\"loihi-0\"] a");
    page.browser.wait_js(
        "the temperature chart with two points or more",
        LIMIT,
        "const c = document.querySelector('#chart-temperature'); return c !== null && Number(c.dataset.points) >= 2;",
    );
    let loihi = snapshot
        .devices
        .iter()
        .find(|d| d.identity.as_ref().unwrap().id == "loihi-0")
        .unwrap();
    let sensors = column(&page.browser, "#readings tbody tr", 0);
    let mut api_sensors: Vec<String> = loihi.readings.iter().map(|r| r.sensor.clone()).collect();
    let mut page_sensors = sensors.clone();
    api_sensors.sort();
    page_sensors.sort();
    assert_eq!(page_sensors, api_sensors);
    shot(&page.browser, &page.shots, "device");
}

async fn a_fault_shows_without_a_reload(page: &Page, agent: &Agent, client: &Client) {
    // Back to the node; mark the document so a reload would show.
    page.browser.goto(&format!("{}/#/node/{NODE}", page.base));
    page.browser.wait_js(
        "the node view",
        LIMIT,
        "return document.querySelectorAll('#devices tr[data-device]').length === 4;",
    );
    page.browser
        .execute("window.__not_reloaded = true; return true;", vec![]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    // First the API (detection takes its own time), then the page, which must follow within
    // a few seconds and without a reload.
    let alertname = eventually("the API's firing alert on loihi-0", LIMIT, || {
        let mut client = client.clone();
        async move {
            let alerts = client.list_alerts(pb::ListAlertsRequest {}).await.ok()?;
            alerts
                .into_inner()
                .alerts
                .into_iter()
                .filter_map(|e| e.alert)
                .find(|a| {
                    a.node == NODE
                        && a.device == "loihi-0"
                        && a.status == pb::AlertStatus::Firing as i32
                })
                .map(|a| a.alertname)
        }
    })
    .await;
    page.browser.wait_js(
        "loihi-0 CRITICAL with its DEVICE_UNRESPONSIVE alert, without a reload",
        LIVE,
        "const r = document.querySelector('#devices tr[data-device=\"loihi-0\"]');
         const alerts = document.querySelector('#node-alerts');
         return window.__not_reloaded === true && r && r.dataset.state === 'CRITICAL'
             && alerts && alerts.innerText.includes('FIRING');",
    );
    let page_alerts = column(&page.browser, "#node-alerts tbody tr", 2);
    assert!(
        page_alerts.contains(&alertname),
        "{alertname} missing from {page_alerts:?}"
    );
    assert!(page
        .browser
        .text("#devices tr[data-device=\"loihi-0\"]")
        .contains("DEVICE_UNRESPONSIVE"));
    shot(&page.browser, &page.shots, "node-fault");
}

async fn the_incident_shows_with_its_timeline_and_export(
    page: &Page,
    collector: &Collector,
    client: &mut Client,
) {
    // The incident the fault opened, with its timeline, as GetIncident has it.
    click(&page.browser, "nav a[data-nav=\"incidents\"]");
    let incident_row = format!("#incidents tr[data-incident$=\"-{NODE}\"]");
    page.browser.wait_js(
        "the incident listed",
        LIMIT,
        &format!("return document.querySelector('{incident_row}') !== null;"),
    );
    let id = page
        .browser
        .execute(
            &format!("return document.querySelector('{incident_row}').dataset.incident;"),
            vec![],
        )
        .as_str()
        .unwrap()
        .to_string();
    click(&page.browser, &format!("{incident_row} a"));
    page.browser.wait_js(
        "the timeline",
        LIMIT,
        "return document.querySelectorAll('#timeline tbody tr').length > 0;",
    );
    // The page first, then the API: the timeline only grows, so what the page shows is a
    // prefix of what the API answers a moment later.
    let whats = column(&page.browser, "#timeline tbody tr", 2);
    let incident = client
        .get_incident(pb::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !whats.is_empty() && whats.len() <= incident.timeline.len(),
        "{whats:?}"
    );
    for (shown, entry) in whats.iter().zip(&incident.timeline) {
        assert_eq!(shown, &entry.what);
    }
    assert!(page.browser.page_text().contains(&incident.detection));
    shot(&page.browser, &page.shots, "incident");
    // The export link gives what `agent-ctl incident ID --export markdown` writes.
    let (status, markdown) = http_get(&page.web, &format!("/api/incident/{id}/export.md")).unwrap();
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
    // Both read the history at their own moment: the same incident, the same skeleton, and
    // the same detection (which a later entry cannot change).
    let section = |md: &str, from: &str, to: &str| -> String {
        let start = md
            .find(from)
            .unwrap_or_else(|| panic!("{from} missing:\n{md}"));
        let end = md[start..]
            .find(to)
            .unwrap_or_else(|| panic!("{to} missing:\n{md}"));
        md[start..start + end].to_string()
    };
    assert_eq!(markdown.lines().next(), ctl_markdown.lines().next());
    assert_eq!(
        section(&markdown, "## Detection", "## Timeline"),
        section(&ctl_markdown, "## Detection", "## Timeline")
    );
    assert!(markdown.contains(&incident.detection));
}

fn narrow_windows_and_the_keyboard_work(page: &Page) {
    // A narrow window: the document does not scroll sideways (wide tables scroll in place).
    page.browser.set_viewport_size(390, 800);
    page.browser.goto(&format!("{}/#/node/{NODE}", page.base));
    page.browser.wait_js(
        "the node view",
        LIMIT,
        "return document.querySelectorAll('#devices tr[data-device]').length === 4;",
    );
    let overflow = page.browser.execute(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        vec![],
    );
    assert!(
        overflow.as_i64().unwrap() <= 1,
        "the page scrolls sideways by {overflow}px"
    );
    shot(&page.browser, &page.shots, "narrow");
    // The keyboard, on a fresh load: the first Tab lands on the skip link, which moves focus
    // to the content; a view is opened from the navigation with Enter.
    page.browser
        .goto(&format!("{}/?keyboard#/fleet", page.base));
    page.browser.wait_js(
        "the fleet view",
        LIMIT,
        "return document.querySelector('#nodes') !== null;",
    );
    // Each focus is checked for a while: the page redraws every second meanwhile (reports keep
    // coming), and a redraw must leave the focus where the keyboard put it.
    let focus_stays = |what: &str, script: &str| {
        page.browser.wait_js(what, Duration::from_secs(5), script);
        std::thread::sleep(Duration::from_millis(1500));
        page.browser.wait_js(what, Duration::from_secs(1), script);
    };
    page.browser.press_key(Browser::KEY_TAB);
    focus_stays(
        "focus on the skip link",
        "return document.activeElement.textContent.trim() === 'Skip to content';",
    );
    page.browser.press_key(Browser::KEY_ENTER);
    focus_stays(
        "focus on the content",
        "return document.activeElement.id === 'main';",
    );
    page.browser.execute(
        "document.querySelector('nav a[data-nav=\"alerts\"]').focus(); return true;",
        vec![],
    );
    page.browser.press_key(Browser::KEY_ENTER);
    // Focus follows the view: its heading, then the first filter.
    focus_stays(
        "the alerts view opened with the keyboard, its heading focused",
        "const h = document.activeElement; return h.tagName === 'H1' && h.textContent === 'Alerts';",
    );
    page.browser.press_key(Browser::KEY_TAB);
    focus_stays(
        "focus on the first filter",
        "return document.activeElement.id === 'f-q';",
    );
    page.browser.set_viewport_size(1280, 900);
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
