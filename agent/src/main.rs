//! `health-agent`: the per-node daemon. This file only parses the command line and the
//! config; [`health_agent::daemon`] runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use health_agent::config::{self, ConfigError};

#[derive(Parser)]
#[command(
    name = "health-agent",
    version,
    about = "Hardware and solver health agent for accelerator hosts"
)]
struct Cli {
    /// Config file (default /etc/health-agent/agent.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run on the embedded default: one simulated device of each kind, no config file needed.
    #[arg(long, conflicts_with = "config")]
    simulate: bool,
    /// Unix socket path for the Agent API (overrides the config).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Collector URL, e.g. http://127.0.0.1:7070 (overrides the config). Repeat it for a
    /// failover list, in order of preference.
    #[arg(long, value_name = "URL")]
    collector: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (overrides the
    /// config's metrics_listen).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Audit log file (overrides the config; with --simulate the default is audit.jsonl
    /// beside the socket).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Node name (overrides the config; default: the host name).
    #[arg(long)]
    node: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and exit: 0 if valid, 2 with the file, key and reason if not.
    CheckConfig { file: PathBuf },
    /// Print the embedded `--simulate` config, a starting point for a real one.
    PrintSimulateConfig,
}

fn load(cli: &Cli) -> Result<config::AgentConfig, ConfigError> {
    let mut cfg = if cli.simulate {
        config::parse("<embedded --simulate config>", config::SIMULATE_TOML)?
    } else {
        let path = cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH));
        config::load(&path)?
    };
    let flag = |key: &str, message: String| ConfigError {
        file: "command line".into(),
        key: key.into(),
        message,
    };
    if let Some(s) = &cli.socket {
        cfg.socket = s.clone();
    }
    if !cli.collector.is_empty() {
        for c in &cli.collector {
            if !(c.starts_with("http://") || c.starts_with("https://")) {
                return Err(flag(
                    "--collector",
                    format!("expected a URL like http://127.0.0.1:7070, found {c:?}"),
                ));
            }
        }
        cfg.collectors = cli.collector.clone();
        cfg.collector = cfg.collectors.first().cloned();
    }
    if let Some(m) = &cli.metrics_listen {
        match m.parse() {
            Ok(addr) => cfg.metrics_listen = Some(addr),
            Err(_) => {
                return Err(flag(
                    "--metrics-listen",
                    format!("expected an address like 127.0.0.1:9464, found {m:?}"),
                ))
            }
        }
    }
    match &cli.audit_log {
        Some(p) if !p.is_absolute() => {
            return Err(flag(
                "--audit-log",
                format!(
                    "expected an absolute path, found {:?}",
                    p.display().to_string()
                ),
            ))
        }
        Some(p) => cfg.audit_log = p.clone(),
        // A demo must not write into the host's real audit log.
        None if cli.simulate => {
            cfg.audit_log = cfg
                .socket
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("audit.jsonl")
        }
        None => {}
    }
    if let Some(n) = &cli.node {
        if n.trim().is_empty() {
            return Err(flag("--node", "expected a non-empty name".into()));
        }
        cfg.node = n.clone();
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            return match config::load(file) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} devices, node {:?})",
                        file.display(),
                        c.devices.len(),
                        c.node
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::PrintSimulateConfig) => {
            print!("{}", config::SIMULATE_TOML);
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("health-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("health-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(health_agent::daemon::run(cfg));
    // A blocking read stuck in the kernel (a dead NFS mount, a hung driver) must not keep the
    // process alive after shutdown: dropping the runtime would wait for it forever.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("health-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
