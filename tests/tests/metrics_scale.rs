//! The collector's `/metrics` at fleet scale, on the real binaries over loopback: a collector
//! filled by the load generator (60 nodes x 8 devices, a quarter with a condition) and scraped
//! the ways Prometheus is configured to scrape it (`deploy/prometheus/prometheus.yml`).
//!
//! - The default scrape carries the fleet aggregates, which add up to the fleet, and no series
//!   with a `node` label.
//! - The shards `shard=i&of=n` partition the per-node series: their union is the full set (a
//!   `match[]` selecting every node), with no series twice, and each node is in the shard of
//!   the documented hash (FNV-1a 64 of its name, mod n), computed here independently.
//! - `match[]` selects exactly the named nodes (several: the union).
//! - Bad parameters are a 400 naming the parameter.
//! - Every page passes `promtool check metrics`, and a real Prometheus running the shipped
//!   scrape config (targets replaced by loopback addresses) stores every node exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use health_e2e::{
    free_port, http_get_metrics, promtool_check_metrics, scrape_metrics, scrape_target, wait_for,
    wait_until, Collector, Proc,
};

const NODES: usize = 60;
const DEVICES: usize = 8;
const PREFIX: &str = "scale";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// One sample: name and labels (the value is left out: what is compared is which series).
type Series = (String, BTreeMap<String, String>);

/// The series of a page with their values (`health_e2e::samples`).
fn parse(text: &str) -> Vec<(Series, f64)> {
    health_e2e::samples(text)
        .into_iter()
        .map(|s| ((s.name, s.labels), s.value))
        .collect()
}

fn nodes_of(samples: &[(Series, f64)]) -> BTreeSet<String> {
    samples
        .iter()
        .filter_map(|((_, labels), _)| labels.get("node").cloned())
        .collect()
}

fn sum(samples: &[(Series, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

/// FNV-1a 64 of `name` mod `of`: the shard the collector documents, written out here again.
fn expected_shard(name: &str, of: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % of
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A collector holding NODES nodes that the load generator reported for, then stopped: the
/// nodes stay (stale_after 1h) and their snapshots no longer change. THERMAL_WARNING fires at
/// once, as the load generator's alert accounting expects.
fn filled_collector() -> (Collector, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let collector = Collector::start(&format!(
        "metrics_listen = \"{metrics}\"\nstale_after = \"1h\"\nforget_after = \"2h\"\n\
         [alerts]\nfor = {{ THERMAL_WARNING = \"0s\" }}\n"
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_health-loadgen"))
        .args(["--collector", &collector.addr, "--collector-pid"])
        .arg(collector.proc.child.id().to_string())
        .args([
            "--agents",
            &NODES.to_string(),
            "--devices",
            &DEVICES.to_string(),
        ])
        .args([
            "--duration",
            "1",
            "--warmup",
            "1",
            "--toggle-fraction",
            "0.25",
        ])
        .args(["--node-prefix", PREFIX, "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run health-loadgen");
    assert!(
        output.status.success(),
        "health-loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (collector, metrics)
}

#[test]
fn default_scrape_is_aggregates_and_shards_partition_the_per_node_series() {
    let (_collector, metrics) = filled_collector();
    let names: BTreeSet<String> = (0..NODES).map(|i| format!("{PREFIX}-{i:05}")).collect();

    // The default scrape: aggregates that add up to the fleet, and nothing per node.
    let text = scrape_metrics(&metrics);
    promtool_check_metrics("collector (default)", &text);
    let fleet = parse(&text);
    assert!(
        nodes_of(&fleet).is_empty(),
        "a node label in the default scrape:\n{text}"
    );
    assert_eq!(sum(&fleet, "health_collector_nodes"), NODES as f64);
    assert_eq!(sum(&fleet, "health_collector_nodes_by_state"), NODES as f64);
    assert_eq!(
        sum(&fleet, "health_collector_devices"),
        (NODES * DEVICES) as f64
    );
    assert_eq!(
        sum(&fleet, "health_collector_node_report_age_seconds_count"),
        NODES as f64
    );
    // The load generator's conditions come and go: the family is there, with or without them.
    assert!(
        text.contains("# TYPE health_collector_conditions gauge\n"),
        "{text}"
    );
    assert!(sum(&fleet, "health_collector_reports_total") >= NODES as f64);
    for family in [
        "health_node_",
        "health_device_",
        "health_host_",
        "health_condition_",
    ] {
        assert!(
            !fleet.iter().any(|((n, _), _)| n.starts_with(family)),
            "{family}* in the default scrape"
        );
    }

    // Every node, as one page: what the shards must add up to.
    let all_text = scrape_target(
        &metrics,
        &format!("/metrics?match[]={}", enc("{node=~\".+\"}")),
    );
    promtool_check_metrics("collector (every node)", &all_text);
    let all: BTreeSet<Series> = parse(&all_text).into_iter().map(|(s, _)| s).collect();
    assert_eq!(nodes_of(&parse(&all_text)), names);
    assert!(
        all.iter().all(|(_, l)| l.contains_key("node")),
        "only per-node series"
    );
    assert!(all
        .iter()
        .any(|(n, _)| n == "health_device_temperature_celsius"));

    for of in [1u64, 3, 4] {
        let mut union = BTreeSet::new();
        for shard in 0..of {
            let text = scrape_target(&metrics, &format!("/metrics?shard={shard}&of={of}"));
            promtool_check_metrics(&format!("collector (shard {shard} of {of})"), &text);
            let samples = parse(&text);
            let want: BTreeSet<String> = names
                .iter()
                .filter(|n| expected_shard(n, of) == shard)
                .cloned()
                .collect();
            assert_eq!(nodes_of(&samples), want, "shard {shard} of {of}");
            for (series, _) in samples {
                assert!(
                    union.insert(series.clone()),
                    "{series:?} in two shards of {of}"
                );
            }
        }
        assert_eq!(
            union, all,
            "the shards of {of} together are every node's series"
        );
    }
}

#[test]
fn match_selects_exactly_the_named_nodes_and_bad_parameters_are_refused() {
    let (_collector, metrics) = filled_collector();
    let query = format!(
        "/metrics?match[]={}&match[]={}",
        enc(&format!("{{node=\"{PREFIX}-00003\"}}")),
        enc(&format!("{{node=~\"{PREFIX}-0001[0-2]\"}}")),
    );
    let text = scrape_target(&metrics, &query);
    promtool_check_metrics("collector (match[])", &text);
    let want: BTreeSet<String> = ["00003", "00010", "00011", "00012"]
        .iter()
        .map(|n| format!("{PREFIX}-{n}"))
        .collect();
    assert_eq!(nodes_of(&parse(&text)), want);
    // A selector that matches nothing: the families, declared, and no sample.
    let text = scrape_target(
        &metrics,
        &format!("/metrics?match[]={}", enc("{node=\"nobody\"}")),
    );
    promtool_check_metrics("collector (no node)", &text);
    assert!(parse(&text).is_empty(), "{text}");
    assert!(text.contains("# TYPE health_node_state gauge"), "{text}");

    for (query, words) in [
        ("shard=4&of=4", "shard: expected 0 to 3"),
        ("shard=0&of=0", "of: expected 1 to 1024"),
        ("shard=0&of=5000", "of: expected 1 to 1024"),
        ("shard=1", "shard needs of"),
        ("match[]=%7Bjob%3D%22x%22%7D", "found \"job\""),
        ("match[]=%7Bnode%3D~%22(%22%7D", "not a regular expression"),
        ("limit=5", "unknown parameter \"limit\""),
    ] {
        let (status, _, body) = http_get_metrics(&metrics, &format!("/metrics?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(words), "{query}: {body:?} lacks {words:?}");
    }
}

/// `prometheus` from the Debian package `prometheus` (the package that gives promtool).
fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|candidate| candidate.is_file())
    });
    found.expect("prometheus not found: install the Debian package prometheus (tests/run.sh does)")
}

/// A Prometheus query's vector result: (labels, value) per element, or None while it is not
/// answering.
fn query(addr: &str, promql: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
    let (status, _, body) = http_get_metrics(addr, &format!("/api/v1/query?query={}", enc(promql)));
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = json["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect(),
    )
}

#[test]
fn a_real_prometheus_with_the_shipped_config_stores_every_node_once() {
    let shipped = repo().join("deploy/prometheus/prometheus.yml");
    let status = Command::new("promtool")
        .args(["check", "config"])
        .arg(&shipped)
        .status()
        .expect("run promtool");
    assert!(
        status.success(),
        "promtool check config {}",
        shipped.display()
    );

    let (_collector, metrics) = filled_collector();
    let dir = tempfile::tempdir().expect("tempdir");
    // The shipped file, pointed at loopback: the collector, and a port nobody listens on for
    // the agent job; scraped every second so the test does not wait 15 s.
    let nobody = format!("127.0.0.1:{}", free_port());
    let config = std::fs::read_to_string(&shipped)
        .expect("read the shipped config")
        .replace("collector:9465", &metrics)
        .replace("accel-17:9464", &nobody)
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
    std::fs::copy(
        repo().join("deploy/prometheus/health-rules.yml"),
        dir.path().join("health-rules.yml"),
    )
    .expect("copy the rules");
    let web = format!("127.0.0.1:{}", free_port());
    let child = Command::new(prometheus_binary())
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start prometheus");
    let mut prometheus = Proc {
        child,
        name: "prometheus",
    };
    wait_until("Prometheus to be ready", Duration::from_secs(30), || {
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            panic!("prometheus exited ({status}) before it was ready: see its log above");
        }
        std::net::TcpStream::connect(&web).is_ok() && http_get_metrics(&web, "/-/ready").0 == 200
    });

    // Every shard target up, and every node stored once, from the shard its name hashes to.
    let per_node = wait_for(
        "Prometheus to hold every node",
        Duration::from_secs(60),
        || {
            let up = query(&web, "up{job=\"health-collector-nodes\"} == 1")?;
            let nodes = query(&web, "health_node_last_seq")?;
            (up.len() == 8 && nodes.len() == NODES).then_some(nodes)
        },
    );
    let mut seen = BTreeSet::new();
    for (labels, _) in &per_node {
        let node = &labels["node"];
        assert!(
            seen.insert(node.clone()),
            "{node} stored twice: {per_node:?}"
        );
        let shard: u64 = labels["shard"].parse().expect("shard label");
        assert_eq!(shard, expected_shard(node, 8), "{labels:?}");
    }
    let fleet = wait_for(
        "the aggregates in Prometheus",
        Duration::from_secs(30),
        || {
            let v = query(
                &web,
                "sum(health_collector_devices{job=\"health-collector\"})",
            )?;
            v.first().map(|(_, value)| *value)
        },
    );
    assert_eq!(fleet, (NODES * DEVICES) as f64);
}
