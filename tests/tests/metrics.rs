//! Prometheus on the real binaries: `/metrics` of a simulated agent and of a collector it
//! reports to, scraped over HTTP on loopback, checked by `promtool check metrics`, and compared
//! with what the same daemons say over gRPC. Also: the shipped rules (`promtool check rules`,
//! `promtool test rules`, every alert tested firing and quiet) and the Grafana dashboard (every
//! metric its queries name is exported by a live scrape).
//!
//! promtool comes from the Debian package `prometheus` (`.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use health_e2e::{
    eventually, free_port, promtool_check_metrics, scrape_metrics, scrape_nodes, sim_config,
    wait_for, wait_until, Agent, Collector,
};
use health_e2e::{samples, Sample};
use health_proto::v1 as pb;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs promtool with `args`, feeding `stdin`; Ok(stdout) or Err(stdout + stderr).
fn promtool(args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (apt-get install prometheus; .ci/run does this)"
            )
        });
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn find<'a>(all: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn one(all: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(all, name, want);
    assert_eq!(found.len(), 1, "{name}{want:?}: {found:?}");
    found[0].value
}

/// A collector with `/metrics` and a simulated agent (with `/metrics`) reporting to it.
struct Pair {
    collector: Collector,
    collector_metrics: String,
    agent: Agent,
    agent_metrics: String,
    node: String,
}

fn start_pair(node: &str, report: &str) -> Pair {
    let collector_metrics = format!("127.0.0.1:{}", free_port());
    let collector = Collector::start(&format!(
        "metrics_listen = \"{collector_metrics}\"\nstale_after = \"1h\"\nforget_after = \"2h\"\n"
    ));
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let mut config = sim_config("200ms", "2s", report);
    config = format!(
        "node = \"{node}\"\ncollector = \"{}\"\nmetrics_listen = \"{agent_metrics}\"\n{config}",
        collector.url()
    );
    let agent = Agent::with_config(&config, &[]);
    for addr in [&collector_metrics, &agent_metrics] {
        wait_until("the metrics endpoint", Duration::from_secs(10), || {
            TcpStream::connect(addr.as_str()).is_ok()
        });
    }
    Pair {
        collector,
        collector_metrics,
        agent,
        agent_metrics,
        node: node.to_string(),
    }
}

fn temperatures(snapshot: &pb::NodeSnapshot) -> BTreeMap<(String, String), f64> {
    let mut t = BTreeMap::new();
    for d in &snapshot.devices {
        let id = d
            .identity
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_default();
        for r in &d.readings {
            if r.quantity() == pb::Quantity::TemperatureCelsius {
                t.insert((id.clone(), r.sensor.clone()), r.value);
            }
        }
    }
    t
}

fn scraped_temperatures(all: &[Sample], node: &str) -> BTreeMap<(String, String), f64> {
    find(all, "health_device_temperature_celsius", &[("node", node)])
        .into_iter()
        .map(|s| {
            (
                (s.labels["device"].clone(), s.labels["sensor"].clone()),
                s.value,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_pass_promtool_and_agree_with_the_grpc_view() {
    let p = start_pair("metrics-node", "1s");
    // Wait until the collector holds a snapshot with every device read.
    let node = p.node.clone();
    eventually(
        "every device's temperature at the collector",
        Duration::from_secs(10),
        || async {
            let snap = p.collector.fleet_node(&node).await?.snapshot?;
            (temperatures(&snap).len() >= 4 && snap.devices.len() == 4).then_some(())
        },
    )
    .await;
    agent_scrape_matches_the_published_report(&p).await;
    collector_scrape_matches_get_node(&p).await;
}

/// The agent's /metrics renders the latest published report, the one WatchHealth streams after
/// its first (freshly assembled) message: readings of the same seq agree.
async fn agent_scrape_matches_the_published_report(p: &Pair) {
    let node = p.node.clone();
    let mut watch = p.agent.watch_health().await;
    let mut compared = false;
    for _ in 0..10 {
        let published = watch
            .message()
            .await
            .expect("stream")
            .expect("a published snapshot");
        let addr = p.agent_metrics.clone();
        let text = tokio::task::spawn_blocking(move || scrape_metrics(&addr))
            .await
            .expect("scrape task");
        let all = samples(&text);
        if one(&all, "health_agent_report_seq", &[("node", &node)]) as u64 != published.seq {
            continue; // the next report went out in between; try the next one
        }
        promtool_check_metrics("agent", &text);
        let want = temperatures(&published);
        assert!(want.len() >= 5, "a sensor per kind at least: {want:?}");
        assert_eq!(scraped_temperatures(&all, &node), want);
        let host = published.host.clone().expect("host");
        assert_eq!(
            one(&all, "health_host_memory_total_bytes", &[("node", &node)]),
            host.memory_total_bytes as f64
        );
        for d in &published.devices {
            let id = d.identity.as_ref().expect("identity");
            let state = health_metrics::node::state_name(d.state);
            assert_eq!(
                one(
                    &all,
                    "health_device_state",
                    &[("device", &id.id), ("state", state)]
                ),
                1.0,
                "{} is {state}",
                id.id
            );
            let kind = health_metrics::node::kind_name(id.kind);
            assert_eq!(one(&all, "health_device_info", &[("device", &id.id)]), 1.0);
            assert_eq!(
                find(
                    &all,
                    "health_device_info",
                    &[("device", &id.id), ("kind", kind)]
                )
                .len(),
                1
            );
            for c in &d.conditions {
                let code = health_metrics::node::code_name(c.code);
                let subject = if c.subject.is_empty() {
                    &id.id
                } else {
                    &c.subject
                };
                assert_eq!(
                    one(
                        &all,
                        "health_condition_active",
                        &[("node", &node), ("subject", subject), ("code", &code)]
                    ),
                    1.0
                );
            }
        }
        let status = published.agent.expect("agent status");
        assert!(status.uplink_configured);
        assert_eq!(
            one(&all, "health_agent_uplink_connected", &[("node", &node)]),
            if status.uplink_connected { 1.0 } else { 0.0 }
        );
        assert_eq!(
            one(&all, "health_agent_reports_sent_total", &[("node", &node)]),
            status.reports_sent_total as f64
        );
        compared = true;
        break;
    }
    assert!(
        compared,
        "no scrape matched a published report's seq in 10 reports"
    );
}

/// The collector's /metrics renders the snapshot its GetNode returns: compared when the node's
/// last_seq did not move across the scrape.
async fn collector_scrape_matches_get_node(p: &Pair) {
    let node = p.node.clone();
    let mut collector = p.collector.client().await;
    let mut compared = false;
    for _ in 0..10 {
        let before = collector
            .get_node(pb::GetFleetNodeRequest { node: node.clone() })
            .await
            .expect("GetNode")
            .into_inner();
        let addr = p.collector_metrics.clone();
        let selector = format!("{{node=\"{node}\"}}");
        // The default scrape has the fleet aggregates; the node's own series are asked for.
        let (fleet_text, text) = tokio::task::spawn_blocking(move || {
            (scrape_metrics(&addr), scrape_nodes(&addr, &selector))
        })
        .await
        .expect("scrape task");
        let after = collector
            .get_node(pb::GetFleetNodeRequest { node: node.clone() })
            .await
            .expect("GetNode")
            .into_inner();
        let (sb, sa) = (
            before.summary.expect("summary"),
            after.summary.expect("summary"),
        );
        if sb.last_seq != sa.last_seq {
            continue;
        }
        promtool_check_metrics("collector", &text);
        promtool_check_metrics("collector (fleet)", &fleet_text);
        let fleet = samples(&fleet_text);
        let all = samples(&text);
        let snap = after.snapshot.expect("snapshot");
        assert_eq!(scraped_temperatures(&all, &node), temperatures(&snap));
        assert_eq!(
            one(&all, "health_node_last_seq", &[("node", &node)]),
            sa.last_seq as f64
        );
        assert_eq!(
            one(&all, "health_node_reports_total", &[("node", &node)]),
            sa.reports_total as f64
        );
        assert_eq!(one(&all, "health_node_stale", &[("node", &node)]), 0.0);
        assert_eq!(one(&fleet, "health_collector_nodes", &[]), 1.0);
        assert_eq!(
            one(&fleet, "health_collector_reports_total", &[]),
            sa.reports_total as f64
        );
        let state = health_metrics::node::state_name(sa.state);
        assert_eq!(
            one(
                &fleet,
                "health_collector_nodes_by_state",
                &[("state", state)]
            ),
            1.0
        );
        assert!(
            fleet.iter().all(|s| !s.labels.contains_key("node")),
            "the default scrape carries no per-node series"
        );
        assert_eq!(
            one(
                &all,
                "health_node_state",
                &[("node", &node), ("state", state)]
            ),
            1.0
        );
        compared = true;
        break;
    }
    assert!(
        compared,
        "the node's last_seq moved during every one of 10 scrapes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_actions_and_rpc_outcomes_show_up_in_both_scrapes() {
    let p = start_pair("busy-node", "500ms");
    let node = p.node.clone();
    let out = p.agent.ctl(&["inject-fault", "loihi-0", "overheat"]);
    assert!(out.status.success(), "{out:?}");
    let out = p.agent.ctl(&["reset-device", "xbar-0", "--soft"]);
    assert!(out.status.success(), "{out:?}");
    let out = p.agent.ctl(&["device", "no-such-device"]);
    assert!(!out.status.success());
    let mut collector = p.collector.client().await;
    let missing = collector
        .get_node(pb::GetFleetNodeRequest {
            node: "nobody".into(),
        })
        .await;
    assert_eq!(
        missing.expect_err("unknown node").code(),
        tonic::Code::NotFound
    );

    let agent_addr = p.agent_metrics.clone();
    let node2 = node.clone();
    let agent_text = tokio::task::spawn_blocking(move || {
        wait_for(
            "the agent to report loihi-0 overheating",
            Duration::from_secs(60),
            || {
                let text = scrape_metrics(&agent_addr);
                let all = samples(&text);
                let hot = find(
                    &all,
                    "health_condition_active",
                    &[("node", &node2), ("subject", "loihi-0")],
                )
                .iter()
                .any(|s| s.labels["code"].starts_with("THERMAL_"));
                hot.then_some(text)
            },
        )
    })
    .await
    .expect("scrape task");
    promtool_check_metrics("agent", &agent_text);
    let all = samples(&agent_text);
    assert_eq!(
        one(
            &all,
            "health_agent_actions_total",
            &[
                ("device", "xbar-0"),
                ("action", "reset-soft"),
                ("outcome", "SUCCEEDED")
            ]
        ),
        1.0
    );
    assert_eq!(
        one(
            &all,
            "health_agent_actions_total",
            &[
                ("device", "loihi-0"),
                ("action", "inject-fault"),
                ("outcome", "SUCCEEDED")
            ]
        ),
        1.0
    );
    assert!(
        one(
            &all,
            "health_grpc_server_handled_total",
            &[("grpc_method", "GetDevice"), ("grpc_code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        one(
            &all,
            "health_grpc_server_handling_seconds_count",
            &[
                ("grpc_service", "health.v1.Agent"),
                ("grpc_method", "ResetDevice")
            ]
        ) >= 1.0
    );

    collector_scrape_shows_the_condition_and_rpc_outcomes(&p).await;
}

/// The collector's scrape, once it fires loihi-0's thermal alert: the condition and the
/// outcomes of the RPCs the test made (a GetNode for an unknown node, the agent's reports).
async fn collector_scrape_shows_the_condition_and_rpc_outcomes(p: &Pair) {
    let node = p.node.clone();
    let collector_addr = p.collector_metrics.clone();
    let collector_text = tokio::task::spawn_blocking(move || {
        wait_for(
            "the collector to show loihi-0 overheating",
            Duration::from_secs(30),
            || {
                let text = scrape_metrics(&collector_addr);
                let all = samples(&text);
                let hot = find(&all, "health_collector_alerts_firing", &[])
                    .iter()
                    .any(|s| s.labels["code"].starts_with("THERMAL_"));
                hot.then_some(text)
            },
        )
    })
    .await
    .expect("scrape task");
    promtool_check_metrics("collector", &collector_text);
    let all = samples(&collector_text);
    let addr = p.collector_metrics.clone();
    let selector = format!("{{node=\"{node}\"}}");
    let node_text = tokio::task::spawn_blocking(move || scrape_nodes(&addr, &selector))
        .await
        .expect("scrape task");
    promtool_check_metrics("collector (node)", &node_text);
    assert!(find(
        &samples(&node_text),
        "health_condition_active",
        &[("node", &node), ("subject", "loihi-0")]
    )
    .iter()
    .any(|s| s.labels["code"].starts_with("THERMAL_")));
    assert!(
        one(
            &all,
            "health_grpc_server_handled_total",
            &[("grpc_method", "GetNode"), ("grpc_code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        one(
            &all,
            "health_grpc_server_handled_total",
            &[("grpc_method", "Report"), ("grpc_code", "OK")]
        ) >= 1.0
    );
}

#[test]
fn a_taken_metrics_port_fails_the_agent_start_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(health_e2e::bin("health-agent"))
        .args(["--simulate", "--metrics-listen", &addr, "--socket"])
        .arg(dir.path().join("a.sock"))
        .stdin(Stdio::null())
        .output()
        .expect("run health-agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    let out = Command::new(health_e2e::bin("health-agent"))
        .args(["--simulate", "--metrics-listen", "localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("run health-agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"),
        "{out:?}"
    );
}

// ---- rules ----------------------------------------------------------------------------------

const RULES: &str = "deploy/prometheus/health-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/health-rules.test.yml";

#[test]
fn promtool_check_rules_accepts_the_shipped_rules() {
    if let Err(problems) = promtool(&["check", "rules", RULES], "") {
        panic!("promtool check rules {RULES}:\n{problems}");
    }
}

/// `- alert: Name` / `- record: name` lines of the rules file.
fn rule_names(kind: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(RULES)).expect("read rules");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("- {kind}: ")))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn promtool_rule_tests_pass_and_every_alert_is_tested_firing_and_quiet() {
    if let Err(problems) = promtool(&["test", "rules", RULE_TESTS], "") {
        panic!("promtool test rules {RULE_TESTS}:\n{problems}");
    }
    let alerts = rule_names("alert");
    for wanted in [
        "AnalogPDESolverDown",
        "HighMemoryUsage",
        "SPICESimulationTimeout",
        "ConvergenceFailure",
        "HighErrorRate",
        "HealthAgentDown",
        "HealthApiErrors",
        "DeviceErrors",
        "LinkDegraded",
        "DeviceOverheating",
        "DeviceUnresponsive",
        "DeviceMissing",
        "CalibrationDrift",
        "ResetFailed",
        "NodeStale",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "{wanted} not in {RULES}"
        );
    }
    // Each `alertname:` case is followed by its `exp_alerts:`; `[]` means "stays quiet".
    let text = std::fs::read_to_string(repo().join(RULE_TESTS)).expect("read rule tests");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname: ") {
            let expectation = lines[i + 1..]
                .iter()
                .find(|l| l.starts_with("exp_alerts:"))
                .expect("exp_alerts after alertname");
            if expectation.trim_end() == "exp_alerts: []" {
                quiet.insert(name.to_string());
            } else {
                fires.insert(name.to_string());
            }
        }
    }
    for alert in &alerts {
        assert!(fires.contains(alert), "no test case where {alert} fires");
        assert!(
            quiet.contains(alert),
            "no test case where {alert} stays quiet"
        );
    }
    for record in rule_names("record") {
        assert!(
            text.contains(&format!("expr: {record}")),
            "recording rule {record} has no promql_expr_test"
        );
    }
}

// ---- Grafana --------------------------------------------------------------------------------

/// Metric names a PromQL expression selects: identifiers that are not functions, aggregation
/// keywords, operators, label lists (`by (...)`), matchers (`{...}`), ranges (`[...]`), numbers,
/// strings or Grafana variables.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 9] = [
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may be followed by `by (...)` before their `(`.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, open: char, close: char| {
        let mut depth = 0;
        let mut quote: Option<char> = None;
        while *i < chars.len() {
            let c = chars[*i];
            match quote {
                Some(_) if c == '\\' => *i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        *i += 1;
                        return;
                    }
                }
                None => {}
            }
            *i += 1;
        }
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            skip_to(&mut i, '{', '}');
        } else if c == '[' {
            skip_to(&mut i, '[', ']');
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (ident(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = j;
                    skip_to(&mut i, '(', ')');
                }
            } else if !call
                && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                && !AGGREGATIONS.contains(&word.as_str())
            {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_promql_tokenizer_finds_metrics_not_functions_labels_or_variables() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{x=\"y}\"}[$__rate_interval])))"
        ),
        vec!["a_bucket"]
    );
    assert_eq!(
        metric_names("1 - max(b{node=\"$node\"}) / on (node) group_left(kind) c == 1 or time() - d offset 5m"),
        vec!["b", "c", "d"]
    );
    assert_eq!(
        metric_names("topk(10, max without (instance) (e))"),
        vec!["e"]
    );
}

/// Every PromQL expression in the dashboard: panel targets (rows' nested panels included) and
/// the metric part of `label_values(...)` variable queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_string());
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if var["type"] == "query" {
            let query = query.expect("a query variable has a query");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(metric, _label)| metric.to_string())
                .unwrap_or_else(|| query.to_string());
            out.push(inner);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let path = repo().join("deploy/grafana/health-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read dashboard");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    // The parts of Grafana's dashboard schema an import needs.
    for key in ["title", "uid", "schemaVersion", "panels", "templating"] {
        assert!(!dashboard[key].is_null(), "dashboard has no {key}");
    }
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "node", "device"] {
        assert!(vars.contains(&v), "dashboard variable {v} missing");
    }
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        assert!(
            panel["type"].is_string() && panel["gridPos"]["w"].is_u64(),
            "{panel}"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert!(
                target["refId"].is_string(),
                "target without refId in {}",
                panel["title"]
            );
        }
    }

    // Live scrapes, after the things the dashboard shows have happened at least once.
    let p = start_pair("grafana-node", "500ms");
    p.agent.ctl_ok(&["reset-device", "xbar-0", "--soft"]);
    p.agent.ctl_ok(&["inject-fault", "loihi-0", "overheat"]);
    let mut collector = p.collector.client().await;
    let _ = collector.list_nodes(pb::ListNodesRequest::default()).await;
    let (agent_addr, collector_addr) = (p.agent_metrics.clone(), p.collector_metrics.clone());
    let exported = tokio::task::spawn_blocking(move || {
        wait_for(
            "both scrapes to carry conditions",
            Duration::from_secs(30),
            || {
                let a = scrape_metrics(&agent_addr);
                let c = scrape_metrics(&collector_addr);
                // The per-node series, as a sharded job scrapes them (one shard of one).
                let n = health_e2e::scrape_target(&collector_addr, "/metrics?shard=0&of=1");
                let all: Vec<Sample> = [a, c, n].iter().flat_map(|t| samples(t)).collect();
                let has = |n: &str| all.iter().any(|s| s.name == n);
                (has("health_condition_active") && has("health_collector_alerts_firing"))
                    .then(|| all.into_iter().map(|s| s.name).collect::<BTreeSet<_>>())
            },
        )
    })
    .await
    .expect("scrape task");

    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut unknown = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "no metric in {q:?}");
        for name in names {
            if !exported.contains(&name) {
                unknown.insert(format!("{name} (in {q})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics neither daemon exports:\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}
