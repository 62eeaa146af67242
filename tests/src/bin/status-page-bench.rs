//! Benchmark (not a test): how fast the collector's status page opens, in real headless
//! Chromium, against a collector that is already holding a fleet (`tests/bench/status_page.sh`
//! starts one and fills it with `health-loadgen`). Each run loads the page afresh (a new
//! document), waits until the fleet table is drawn, and reads the browser's own clocks:
//! first contentful paint, the fleet table drawn (the page's `main[data-drawn]`), and how long
//! each API call took. Prints every run and the median.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed step ends it

use std::time::Duration;

use clap::Parser;
use health_e2e::Browser;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// The collector's metrics_listen address (loopback), host:port
    #[arg(long)]
    page: String,
    /// Page loads measured, after one warm-up load
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The view to open: fleet, alerts, incidents, node/NAME, ...
    #[arg(long, default_value = "fleet")]
    view: String,
}

const MEASURE: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
const api = {};
for (const r of performance.getEntriesByType('resource')) {
  const path = new URL(r.name).pathname;
  if (path.startsWith('/api/') && path !== '/api/events' && !(path in api)) api[path] = r.duration;
}
return {
  html_ms: nav.responseEnd - nav.startTime,
  first_paint_ms: fcp ? fcp.startTime : null,
  drawn_ms: Number(document.querySelector('main').dataset.drawn) - performance.timeOrigin,
  rows: document.querySelectorAll('main tbody tr').length,
  api,
};
"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let browser = Browser::start(1280, 900);
    let mut results: Vec<Value> = Vec::new();
    for run in 0..=args.runs {
        browser.goto(&format!("http://{}/?run={run}#/{}", args.page, args.view));
        browser.wait_js(
            "the view drawn",
            Duration::from_secs(60),
            "return document.querySelector('main').dataset.drawn !== undefined && document.querySelector('main h1') !== null;",
        );
        let m = browser.execute(MEASURE, vec![]);
        if run == 0 {
            continue; // warm-up: the first load also starts Chromium's caches
        }
        println!("run {run}: {m}");
        results.push(m);
    }
    let pick = |key: &str| -> Vec<f64> { results.iter().filter_map(|m| m[key].as_f64()).collect() };
    println!(
        "median of {} loads of #/{}: HTML {:.0} ms, first contentful paint {:.0} ms, view drawn {:.0} ms ({} rows)",
        results.len(),
        args.view,
        median(pick("html_ms")),
        median(pick("first_paint_ms")),
        median(pick("drawn_ms")),
        results.last().map_or(0, |m| m["rows"].as_u64().unwrap_or(0)),
    );
    let paths: Vec<String> = results
        .first()
        .and_then(|m| m["api"].as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for path in paths {
        let times: Vec<f64> = results
            .iter()
            .filter_map(|m| m["api"][&path].as_f64())
            .collect();
        println!(
            "  {path}: median {:.1} ms over {} loads",
            median(times.clone()),
            times.len()
        );
    }
}
