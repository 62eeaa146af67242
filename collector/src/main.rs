//! `health-collector`: the central service that agents stream their health to.
//!
//! `health-collector [--config FILE] [--listen ADDR] [--metrics-listen ADDR]` runs the service;
//! `health-collector check-config FILE` validates a configuration and exits.
//!
//! Modules: `config` (the TOML file), `fleet` (per-node state, duplicates, gaps, staleness,
//! forgetting silent nodes, the node limit), `alerts` (alerts from node conditions and
//! staleness, with pending durations), `priority` (P0..P3 and escalation), `alert_names`
//! (on-call alert names), `alertmanager` (the push to Alertmanager), `history` (the SQLite
//! history of conditions, alerts, actions and events), `leases` (the remediation lease
//! budget and circuit breaker), `metrics` (the `/metrics` endpoint), `service` (the gRPC
//! Collector API), `sweeper` (the staleness and forgetting sweep, and watchdog pings), `server`
//! (wiring, serving, shutdown, mutual TLS on the listener from `[tls]`), `shutdown` (signals)
//! and `authz` (which client certificates may call Report and take leases).
//! TLS files, certificate subjects and systemd notifications come from `health-daemon`, shared
//! with the agent.

#![forbid(unsafe_code)]

mod alert_names;
mod alertmanager;
mod alerts;
mod audit;
mod authz;
mod config;
#[cfg(test)]
mod config_fuzz;
mod fleet;
mod history;
mod incidents;
mod leases;
mod metrics;
mod operator;
mod priority;
mod server;
mod service;
mod shutdown;
mod silences;
mod sweeper;
mod trail;
mod unix_socket;
mod web;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Ingest is allocation-bound: decoding a report builds a few hundred small strings and
/// vectors, and replacing a node's snapshot frees as many. Under glibc's allocator that was
/// about 40% of the collector's CPU at 5,000 agents (docs/benchmarks.md, "Collector at
/// scale"); mimalloc's thread-local free lists make both cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "health-collector",
    version,
    about = "Central health collector: ingests agent reports, keeps fleet state, raises alerts"
)]
struct Cli {
    /// Configuration file [default: /etc/health-collector/collector.toml, if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on, overriding the configuration's `listen`
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Serve Prometheus metrics at http://ADDR/metrics, overriding the configuration's
    /// `metrics_listen`
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file: prints "FILE: ok" and exits 0, or prints the error
    /// and exits non-zero
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        None => serve(cli.config.as_deref(), cli.listen, cli.metrics_listen),
    }
}

/// Logs go to stderr (the journal, under systemd); RUST_LOG filters, default `info`.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in the journal they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn check_config(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(CONFIG_ERROR)
        }
    }
}

/// Exit status for a config that does not validate, as health-agent uses.
const CONFIG_ERROR: u8 = 2;

fn serve(
    config_file: Option<&Path>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
) -> ExitCode {
    let mut config = match load_config(config_file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("health-collector: {error}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if metrics_listen.is_some() {
        config.metrics_listen = metrics_listen;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("health-collector: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The given file; else the default file if there is one; else the built-in defaults.
fn load_config(file: Option<&Path>) -> Result<Config, config::ConfigError> {
    if let Some(file) = file {
        return config::load(file);
    }
    let default = Path::new(config::DEFAULT_PATH);
    match default.try_exists() {
        Ok(false) => {
            tracing::info!(
                path = config::DEFAULT_PATH,
                "no configuration file; using the built-in defaults"
            );
            Ok(Config::default())
        }
        // If it exists, or we cannot even tell (permissions), reading it gives the real error.
        Ok(true) | Err(_) => config::load(default),
    }
}
