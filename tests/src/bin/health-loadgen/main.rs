//! `health-loadgen`: a fleet of simulated agents against a real collector, over real gRPC on
//! loopback, to measure how the collector scales (docs/benchmarks.md, "Collector at scale").
//!
//! N agents, each with D devices, each on its own Report stream at 1 Hz (K agents share one
//! HTTP/2 connection; K = 1 is one connection per agent, as in a real fleet). A fraction of
//! the agents toggle a THERMAL_WARNING so alerts fire and resolve all the time; a WatchAlerts
//! subscriber times each event from its report's send to its arrival. At the end every sample
//! is accounted for: sent = acknowledged, the collector's `reports_total` = sent, and every
//! sample dropped here shows up in the collector's `missing_total`. CPU and memory of the
//! collector (by pid) and of this process come from `/proc`.
//!
//! It lives in the e2e crate, beside the harness, because it is a test tool: it needs the
//! agent's snapshot conversion and the HAL simulators (for realistic payloads), which the
//! collector must not depend on. It is a benchmark: it prints figures and asserts nothing about
//! time; it exits non-zero only when the accounting does not add up or the run failed.

mod agent;
mod histogram;
mod procstat;
mod snapshot;
mod watcher;
mod wire;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use health_proto::v1::collector_client::CollectorClient;
use health_proto::v1::ListNodesRequest;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::histogram::{Histogram, Summary};

#[derive(Debug, Parser)]
#[command(
    name = "health-loadgen",
    about = "Simulated agents streaming to a collector over loopback gRPC; prints throughput, latency, CPU and memory"
)]
struct Cli {
    /// Collector address (loopback), host:port
    #[arg(long, value_name = "ADDR")]
    collector: String,
    /// The collector's pid, to sample its CPU and memory from /proc
    #[arg(long, value_name = "PID")]
    collector_pid: Option<u32>,
    /// Simulated agents (nodes)
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Devices per agent
    #[arg(long, default_value_t = 8)]
    devices: usize,
    /// Agents sharing one HTTP/2 connection (1: one connection per agent, as in a real fleet)
    #[arg(long, default_value_t = 1)]
    agents_per_connection: usize,
    /// Seconds measured, after the warm-up
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of reporting before measuring starts
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Fraction of agents whose first device toggles a THERMAL_WARNING
    #[arg(long, default_value_t = 0.01)]
    toggle_fraction: f64,
    /// Reports per phase of a toggling agent (1: the alert fires and resolves on alternate reports)
    #[arg(long, default_value_t = 1)]
    toggle_every: u64,
    /// Reports an agent queues in front of its stream before dropping one
    #[arg(long, default_value_t = 4)]
    queue: usize,
    /// Seconds after the end that outstanding acknowledgements and alerts may take
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Connections opened at once while ramping up
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Node names are PREFIX-00000...; default lg<pid>
    #[arg(long)]
    node_prefix: Option<String>,
    /// Print the result as one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

/// Everything a run measured; printed as a table or JSON.
#[derive(Debug, Default, serde::Serialize)]
struct Results {
    agents: usize,
    devices_per_agent: usize,
    connections: usize,
    measured_seconds: f64,
    /// Reports (and device samples) per second sent during the measured window.
    reports_per_second: f64,
    device_samples_per_second: f64,
    report_bytes: usize,
    sent: u64,
    acked: u64,
    dropped_in_gaps: u64,
    dropped_at_end: u64,
    ticks_skipped: u64,
    agent_errors: u64,
    first_error: Option<String>,
    collector_reports_total: u64,
    collector_duplicates_total: u64,
    collector_missing_total: u64,
    collector_nodes_seen: usize,
    collector_cpu_percent: Option<f64>,
    collector_rss_mib: Option<f64>,
    collector_peak_rss_mib: Option<f64>,
    loadgen_cpu_percent: f64,
    loadgen_peak_rss_mib: f64,
    /// All CPU use on the machine in the window (percent of one core; 200 = both cores busy).
    machine_cpu_percent: f64,
    /// The 1-minute load average at the end: other work sharing the cores.
    load1: Option<f64>,
    ack_latency: Summary,
    alert_latency: Summary,
    alert_events_expected: u64,
    alert_events_received: u64,
    alerts_firing: u64,
    alerts_resolved: u64,
    alerts_node_stale: u64,
    alerts_without_report: u64,
    /// Problems with the accounting; empty when every sample is accounted for.
    unaccounted: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("health-loadgen: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(results) => {
            if cli.json {
                match serde_json::to_string(&results) {
                    Ok(line) => println!("{line}"),
                    Err(error) => eprintln!("health-loadgen: cannot encode the results: {error}"),
                }
            } else {
                print_table(&results);
            }
            if results.unaccounted.is_empty() {
                ExitCode::SUCCESS
            } else {
                for problem in &results.unaccounted {
                    eprintln!("health-loadgen: unaccounted: {problem}");
                }
                ExitCode::from(3)
            }
        }
        Err(error) => {
            eprintln!("health-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Arguments clap cannot check on its own.
fn check_args(cli: &Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.agents > 0, "--agents: expected at least 1, found 0");
    anyhow::ensure!(
        cli.agents_per_connection > 0,
        "--agents-per-connection: expected at least 1, found 0"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.toggle_fraction),
        "--toggle-fraction: expected 0..1, found {}",
        cli.toggle_fraction
    );
    Ok(())
}

async fn run(cli: &Cli) -> anyhow::Result<Results> {
    check_args(cli)?;
    let connections = cli.agents.div_ceil(cli.agents_per_connection);
    raise_open_files(connections as u64 + 256)?;
    let url = format!("http://{}", cli.collector);
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("--collector: not a usable address: {}", cli.collector))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let prefix = cli
        .node_prefix
        .clone()
        .unwrap_or_else(|| format!("lg{}", std::process::id()));
    let boot_id = format!(
        "loadgen-{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );

    let template = Arc::new(snapshot::template(cli.devices).await?);
    let report_bytes = template.healthy.len();

    // Connections first, so the measured window has the whole fleet in it.
    let ramp_started = Instant::now();
    let channels = connect_all(&endpoint, connections, cli.connect_concurrency).await?;
    eprintln!(
        "health-loadgen: {} connections to {} in {:.1}s",
        channels.len(),
        cli.collector,
        ramp_started.elapsed().as_secs_f64()
    );

    let first_report = Instant::now() + Duration::from_millis(500);
    let measure_from = first_report + Duration::from_secs(cli.warmup);
    let stop_at = measure_from + Duration::from_secs(cli.duration);
    let measure_from_wall =
        SystemTime::now() + measure_from.saturating_duration_since(Instant::now());

    let alert_latency = Arc::new(Histogram::new());
    let alert_counts = Arc::new(watcher::Counts::default());
    let watcher = watcher::start(
        endpoint
            .connect()
            .await
            .context("connect the WatchAlerts subscriber")?,
        format!("{prefix}-"),
        measure_from_wall,
        Arc::clone(&alert_latency),
        Arc::clone(&alert_counts),
    )
    .await?;

    let live = Arc::new(agent::Live::default());
    let ack_latency = Arc::new(Histogram::new());
    let window = Window {
        first_report,
        measure_from,
        stop_at,
    };
    let tasks = spawn_agents(
        cli,
        &prefix,
        &boot_id,
        window,
        &channels,
        (&template, &live, &ack_latency),
    );

    let m = measure(cli, window, &live, &alert_counts).await?;
    let measured = m.self_to.at.saturating_duration_since(m.self_from.at);
    let sent_in_window = live.sent.load(Ordering::Relaxed) - m.sent_from;

    let mut results = Results {
        agents: cli.agents,
        devices_per_agent: cli.devices,
        connections,
        measured_seconds: measured.as_secs_f64(),
        report_bytes,
        loadgen_cpu_percent: procstat::cpu_percent(&m.self_from, &m.self_to),
        loadgen_peak_rss_mib: mib(m.self_to.peak_rss_bytes),
        machine_cpu_percent: procstat::machine_percent(&m.machine_from, &m.machine_to),
        load1: procstat::load1(),
        ..Results::default()
    };
    if let (Some(from), Some(to)) = (m.collector_from, m.collector_to) {
        results.collector_cpu_percent = Some(procstat::cpu_percent(&from, &to));
        results.collector_rss_mib = Some(mib(to.rss_bytes));
        results.collector_peak_rss_mib = Some(mib(m.collector_peak_rss.max(to.rss_bytes)));
    }

    let expected_alerts = add_outcomes(tasks, &mut results).await?;
    results.reports_per_second = sent_in_window as f64 / measured.as_secs_f64().max(1e-9);
    results.device_samples_per_second = results.reports_per_second * cli.devices as f64;

    add_alerts(cli, expected_alerts, &alert_counts, &mut results).await;
    watcher.abort();
    results.ack_latency = ack_latency.summary();
    results.alert_latency = alert_latency.summary();

    collector_counts(&endpoint, &prefix, &mut results).await?;
    results.unaccounted = check(&results);
    Ok(results)
}

/// The alert events seen by the WatchAlerts subscriber. The last ones trail the last acks by
/// a moment: waited for, bounded by `--drain`.
async fn add_alerts(
    cli: &Cli,
    expected_alerts: u64,
    alert_counts: &watcher::Counts,
    results: &mut Results,
) {
    let alerts_deadline = Instant::now() + Duration::from_secs(cli.drain);
    while alert_counts.from_reports.load(Ordering::Relaxed) < expected_alerts
        && Instant::now() < alerts_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    results.alert_events_expected = expected_alerts;
    results.alert_events_received = alert_counts.from_reports.load(Ordering::Relaxed);
    results.alerts_firing = alert_counts.firing.load(Ordering::Relaxed);
    results.alerts_resolved = alert_counts.resolved.load(Ordering::Relaxed);
    results.alerts_node_stale = alert_counts.node_stale.load(Ordering::Relaxed);
    results.alerts_without_report = alert_counts.without_report.load(Ordering::Relaxed);
}

/// Readings at the start and end of the measured window.
struct Measured {
    collector_from: Option<procstat::Reading>,
    collector_to: Option<procstat::Reading>,
    collector_peak_rss: u64,
    self_from: procstat::Reading,
    self_to: procstat::Reading,
    machine_from: procstat::Machine,
    machine_to: procstat::Machine,
    sent_from: u64,
}

/// CPU and memory over the measured window (peak RSS sampled every second), with progress
/// every 5 s.
async fn measure(
    cli: &Cli,
    window: Window,
    live: &agent::Live,
    alert_counts: &watcher::Counts,
) -> anyhow::Result<Measured> {
    let Window {
        measure_from,
        stop_at,
        ..
    } = window;
    tokio::time::sleep_until(measure_from.into()).await;
    let collector_from = cli
        .collector_pid
        .map(|pid| procstat::read(Some(pid)))
        .transpose()?;
    let self_from = procstat::read(None)?;
    let machine_from = procstat::machine()?;
    let sent_from = live.sent.load(Ordering::Relaxed);
    let mut collector_peak_rss = collector_from.map_or(0, |r| r.rss_bytes);
    let mut collector_to = collector_from;
    let mut next_progress = Instant::now() + Duration::from_secs(5);
    while Instant::now() < stop_at {
        tokio::time::sleep(
            Duration::from_secs(1).min(stop_at.saturating_duration_since(Instant::now())),
        )
        .await;
        if let Some(pid) = cli.collector_pid {
            let reading = procstat::read(Some(pid))?;
            collector_peak_rss = collector_peak_rss.max(reading.rss_bytes);
            collector_to = Some(reading);
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(5);
            eprintln!(
                "health-loadgen: sent {} acked {} dropped {} alert events {}",
                live.sent.load(Ordering::Relaxed),
                live.acked.load(Ordering::Relaxed),
                live.dropped.load(Ordering::Relaxed),
                alert_counts.from_reports.load(Ordering::Relaxed)
            );
        }
    }
    let self_to = procstat::read(None)?;
    let machine_to = procstat::machine()?;
    Ok(Measured {
        collector_from,
        collector_to,
        collector_peak_rss,
        self_from,
        self_to,
        machine_from,
        machine_to,
        sent_from,
    })
}

/// When the agents start reporting, when the measurement starts and when it stops.
#[derive(Clone, Copy)]
struct Window {
    first_report: Instant,
    measure_from: Instant,
    stop_at: Instant,
}

/// One task per simulated agent, spread evenly over a second and over the connections.
fn spawn_agents(
    cli: &Cli,
    prefix: &str,
    boot_id: &str,
    window: Window,
    channels: &[tonic::transport::Channel],
    (template, live, ack_latency): (&Arc<snapshot::Template>, &Arc<agent::Live>, &Arc<Histogram>),
) -> Vec<tokio::task::JoinHandle<agent::Outcome>> {
    let Window {
        first_report,
        measure_from,
        stop_at,
    } = window;
    let boot_id = boot_id.to_string();
    let toggling = (cli.agents as f64 * cli.toggle_fraction).round() as usize;
    let mut tasks = Vec::with_capacity(cli.agents);
    for index in 0..cli.agents {
        // Spread the agents evenly over the second, as independent hosts would be.
        let phase = Duration::from_secs_f64(index as f64 / cli.agents as f64);
        // Toggling agents spread over the fleet too, not bunched on the first connections.
        let toggles = toggling > 0
            && index % (cli.agents / toggling).max(1) == 0
            && index / (cli.agents / toggling).max(1) < toggling;
        let spec = agent::Spec {
            node: format!("{prefix}-{index:05}"),
            boot_id: boot_id.clone(),
            toggles,
            toggle_every: cli.toggle_every,
            queue: cli.queue,
            first_report: first_report + phase,
            measure_from,
            stop_at,
            drain: Duration::from_secs(cli.drain),
        };
        let channel = channels[index / cli.agents_per_connection].clone();
        tasks.push(tokio::spawn(agent::run(
            channel,
            spec,
            Arc::clone(template),
            Arc::clone(live),
            Arc::clone(ack_latency),
        )));
    }

    tasks
}

/// Adds every agent's outcome to the results; returns the alert events they expect.
async fn add_outcomes(
    tasks: Vec<tokio::task::JoinHandle<agent::Outcome>>,
    results: &mut Results,
) -> anyhow::Result<u64> {
    let mut expected_alerts = 0;
    for task in tasks {
        let outcome = task.await.context("an agent task panicked")?;
        results.sent += outcome.sent;
        results.acked += outcome.acked;
        results.dropped_in_gaps += outcome.dropped_in_gaps;
        results.dropped_at_end += outcome.dropped_at_end;
        results.ticks_skipped += outcome.ticks_skipped;
        expected_alerts += outcome.expected_alert_events;
        if let Some(error) = outcome.error {
            results.agent_errors += 1;
            results.first_error.get_or_insert(error);
        }
    }
    Ok(expected_alerts)
}

/// The collector's own count of what it received from this run's nodes.
async fn collector_counts(
    endpoint: &Endpoint,
    prefix: &str,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut client =
        CollectorClient::new(endpoint.connect().await.context("connect for ListNodes")?)
            .max_decoding_message_size(256 * 1024 * 1024);
    let nodes = client
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("ListNodes: {status}"))?
        .into_inner()
        .nodes;
    for node in nodes
        .iter()
        .filter(|n| n.node.starts_with(&format!("{prefix}-")))
    {
        results.collector_nodes_seen += 1;
        results.collector_reports_total += node.reports_total;
        results.collector_duplicates_total += node.duplicates_total;
        results.collector_missing_total += node.missing_total;
    }
    Ok(())
}

/// Every way the counts can fail to add up.
fn check(r: &Results) -> Vec<String> {
    let mut problems = Vec::new();
    if r.agent_errors > 0 {
        problems.push(format!(
            "{} agents ended with an error; first: {}",
            r.agent_errors,
            r.first_error.as_deref().unwrap_or("?")
        ));
    }
    // (what was sent or expected, what the other side counted, what a mismatch means)
    let tallies = [
        (
            r.sent,
            r.acked,
            format!("sent {} reports, {} acknowledged", r.sent, r.acked),
        ),
        (
            r.sent,
            r.collector_reports_total,
            format!(
                "sent {} reports, the collector counted {}",
                r.sent, r.collector_reports_total
            ),
        ),
        (
            r.dropped_in_gaps,
            r.collector_missing_total,
            format!(
                "dropped {} reports before later ones, the collector counted {} missing",
                r.dropped_in_gaps, r.collector_missing_total
            ),
        ),
        (
            0,
            r.collector_duplicates_total,
            format!(
                "no report was sent twice, the collector counted {} duplicates",
                r.collector_duplicates_total
            ),
        ),
        (
            r.agents as u64,
            r.collector_nodes_seen as u64,
            format!(
                "{} agents, the collector lists {} of them",
                r.agents, r.collector_nodes_seen
            ),
        ),
        (
            r.alert_events_expected,
            r.alert_events_received,
            format!(
                "expected {} alert events from the reports, WatchAlerts delivered {}",
                r.alert_events_expected, r.alert_events_received
            ),
        ),
    ];
    problems.extend(
        tallies
            .into_iter()
            .filter(|(want, got, _)| want != got)
            .map(|(_, _, problem)| problem),
    );
    problems
}

/// Opens `count` connections, at most `concurrency` at a time.
async fn connect_all(
    endpoint: &Endpoint,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Channel>> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut pending = Vec::with_capacity(count);
    for _ in 0..count {
        let endpoint = endpoint.clone();
        let permits = Arc::clone(&permits);
        pending.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            endpoint.connect().await
        }));
    }
    let mut channels = Vec::with_capacity(count);
    for (index, task) in pending.into_iter().enumerate() {
        let channel = task
            .await
            .context("a connect task panicked")?
            .with_context(|| format!("connection {index} of {count} to the collector"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// One socket per connection: make sure the soft limit allows them (up to the hard limit).
fn raise_open_files(wanted: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= wanted {
        return Ok(());
    }
    anyhow::ensure!(
        hard >= wanted,
        "{wanted} open files needed, the hard limit is {hard} (raise it with ulimit -Hn or use --agents-per-connection)"
    );
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_table(r: &Results) {
    let opt =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}{unit}"));
    println!(
        "agents x devices          {} x {} ({} connections)",
        r.agents, r.devices_per_agent, r.connections
    );
    println!("report size               {} bytes", r.report_bytes);
    println!("measured                  {:.1} s", r.measured_seconds);
    println!(
        "reports/s, samples/s      {:.0}, {:.0}",
        r.reports_per_second, r.device_samples_per_second
    );
    println!(
        "collector CPU             {}",
        opt(r.collector_cpu_percent, " %")
    );
    println!(
        "collector RSS (peak)      {} ({})",
        opt(r.collector_rss_mib, " MiB"),
        opt(r.collector_peak_rss_mib, " MiB")
    );
    println!(
        "loadgen CPU, peak RSS     {:.1} %, {:.1} MiB",
        r.loadgen_cpu_percent, r.loadgen_peak_rss_mib
    );
    println!(
        "machine CPU, load1        {:.1} %, {}",
        r.machine_cpu_percent,
        opt(r.load1, "")
    );
    let lat = |s: &Summary| {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
            s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count
        )
    };
    println!("send -> alert             {}", lat(&r.alert_latency));
    println!("send -> ack               {}", lat(&r.ack_latency));
    println!("sent / acked              {} / {}", r.sent, r.acked);
    println!(
        "dropped (gaps / at end)   {} / {}",
        r.dropped_in_gaps, r.dropped_at_end
    );
    println!(
        "collector reports/dup/miss {} / {} / {}",
        r.collector_reports_total, r.collector_duplicates_total, r.collector_missing_total
    );
    println!(
        "alert events exp/recv     {} / {} (firing {}, resolved {}; NODE_STALE {}, other {})",
        r.alert_events_expected,
        r.alert_events_received,
        r.alerts_firing,
        r.alerts_resolved,
        r.alerts_node_stale,
        r.alerts_without_report
    );
    println!("ticks skipped (loadgen behind) {}", r.ticks_skipped);
    println!("agent errors              {}", r.agent_errors);
    println!(
        "accounting                {}",
        if r.unaccounted.is_empty() {
            "every sample accounted for"
        } else {
            "DOES NOT ADD UP"
        }
    );
}
