//! `agent-ctl`: the operator's command line for one agent (over its Unix socket by default)
//! and for the collector (`--collector ADDR`). A gRPC client like any other: it uses only the
//! public `health.v1` API, so anything it can do, a control plane can do too.
//!
//! Exit status: 0 on success; 1 with a one-line reason on stderr when the call fails or an
//! action's outcome is not SUCCEEDED; 2 for usage errors.

pub mod audit;
pub mod endpoint;
mod history;
pub mod processes;
pub mod render;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand};
use health_proto::v1 as pb;
use health_proto::v1::agent_client::AgentClient;
use health_proto::v1::collector_client::CollectorClient;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "agent-ctl",
    version,
    about = "Operate a health-agent and query the health collector"
)]
pub struct Cli {
    /// Agent endpoint: unix:///path/agent.sock, http://host:port or https://host:port.
    #[arg(long, global = true, env = "HEALTH_AGENT_ENDPOINT", default_value = endpoint::DEFAULT_AGENT_ENDPOINT)]
    endpoint: String,
    /// Collector address (host:port or URL) for fleet commands: nodes, fleet-devices, alerts.
    #[arg(long, global = true, env = "HEALTH_COLLECTOR")]
    collector: Option<String>,
    /// CA certificate (PEM) to trust for https:// endpoints, instead of the system roots.
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its subject decides the role.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Actions: confirm a hard reset or power cycle.
    #[arg(long, global = true)]
    yes: bool,
    /// Actions: check everything (role, device, limits) and say what would happen; do nothing.
    #[arg(long, global = true)]
    dry_run: bool,
    /// Actions: the idempotency key (default: a random one per invocation, reused on
    /// agent-ctl's own retries). A script that may rerun a command passes its own.
    #[arg(long, global = true, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a call after this long (actions wait for the device's own deadline).
    #[arg(long, global = true, default_value = "90s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Node, host and device health at a glance.
    Status,
    /// One line per device.
    Devices,
    /// Everything about one device: identity, readings, conditions with runbook steps.
    Device { id: String },
    /// Live health until interrupted (or --count snapshots).
    Watch {
        /// Stop after this many snapshots.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Reset a device.
    ResetDevice {
        id: String,
        #[command(flatten)]
        kind: ResetKindArg,
        /// Calibrate after a successful reset.
        #[arg(long)]
        recalibrate: bool,
        /// Fail unless a fresh read after the reset shows no critical condition.
        #[arg(long)]
        verify: bool,
    },
    /// Calibrate a device.
    Calibrate { id: String },
    /// Set a device's power limit.
    SetPowerLimit {
        id: String,
        // Negative values reach the agent, which names the field in its refusal.
        #[arg(allow_negative_numbers = true)]
        watts: f64,
    },
    /// Disable a device (it idles; it is still monitored).
    Disable { id: String },
    /// Enable a device.
    Enable { id: String },
    /// Inject a fault into a simulated device: overheat, hang, drift, failing-reset, vanish, clear.
    InjectFault { id: String, kind: String },
    /// Run the solver probe on a problem file (under the agent's [probe] dirs).
    Probe {
        file: String,
        /// Conductance bits of the analog array it is meant for.
        #[arg(long)]
        bits: Option<u32>,
        #[arg(long, default_value_t = 0.0)]
        read_noise: f64,
    },
    /// Diagnose a device: a fresh read; with --full also the known-answer probe (devices with
    /// MATVEC). Exits 1 when the device is WARNING or CRITICAL afterwards.
    Diagnose {
        id: String,
        #[arg(long)]
        full: bool,
    },
    /// Recent actions on this agent, newest first.
    Actions {
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Watched processes ([[process]] rules): runtime, memory, state, conditions.
    Processes,
    /// Signal a watched process (TERM by default); reports whether it exited.
    KillProcess {
        pid: u32,
        /// term or kill.
        #[arg(long, default_value = "term")]
        signal: String,
        /// With TERM: send KILL if it is still running after this long (e.g. 10s).
        #[arg(long, value_parser = humantime::parse_duration)]
        escalate_after: Option<Duration>,
    },
    /// Show the audit log (read from the file) or check its hash chain (--verify).
    Audit {
        /// Check the chain; exit 1 naming the first broken line.
        #[arg(long)]
        verify: bool,
        /// The log file (default: audit_log from /etc/health-agent/agent.toml, else
        /// /var/lib/health-agent/audit.jsonl).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Show only the last N entries.
        #[arg(long)]
        tail: Option<usize>,
        /// With --verify and --collector: the node whose reported audit head the file must
        /// contain (a log cut short or rewritten fails even when its chain is intact).
        #[arg(long, requires = "verify")]
        node: Option<String>,
    },
    /// Fleet: every node the collector knows (needs --collector).
    Nodes,
    /// Fleet: one node as the collector sees it, with the ranges of reports it never received
    /// (needs --collector).
    FleetNode { node: String },
    /// Fleet: devices across nodes, filtered (needs --collector).
    FleetDevices {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
    /// Fleet: alerts firing now, then every change, until interrupted (needs --collector).
    Alerts {
        #[arg(long)]
        count: Option<u64>,
    },
    /// Fleet: conditions, alert transitions and actions from the collector's history,
    /// newest first (needs --collector, and history_path set on the collector).
    History {
        #[arg(long)]
        node: Option<String>,
        /// A device id, or a subject such as "host"
        #[arg(long)]
        device: Option<String>,
        /// How far back, e.g. 30m, 1h, 7d [default: everything kept]
        #[arg(long, value_name = "DURATION", value_parser = history::parse_since)]
        since: Option<std::time::Duration>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetKindArg {
    #[arg(long)]
    soft: bool,
    #[arg(long)]
    hard: bool,
    #[arg(long)]
    power_cycle: bool,
}

fn parse_enum<T>(
    what: &str,
    s: &str,
    prefix: &str,
    from: impl Fn(&str) -> Option<T>,
    choices: &str,
) -> anyhow::Result<T> {
    let name = format!("{prefix}{}", s.to_ascii_uppercase().replace('-', "_"));
    from(&name).ok_or_else(|| anyhow!("--{what} {s:?}: expected one of {choices}"))
}

struct Ctl {
    cli: Cli,
    out: std::io::Stdout,
    /// Sent with every action request of this invocation, including retries.
    idempotency_key: String,
}

/// Sends one action request, retrying (with the same idempotency key, so the agent runs it
/// at most once) when the agent is unavailable, then prints the result.
macro_rules! act {
    ($self:ident, $method:ident, $msg:expr) => {{
        let msg = $msg;
        let mut attempt = 0;
        loop {
            let result = match $self.agent().await {
                Ok(mut c) => c.$method($self.req(msg.clone())).await,
                Err(e) => break Err(e),
            };
            match result {
                Ok(r) => break $self.action(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(s) => break Err(s.into()),
            }
        }
    }};
}

impl Ctl {
    fn print(&mut self, text: &str) -> anyhow::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    fn json(&mut self, v: &serde_json::Value) -> anyhow::Result<()> {
        let s = serde_json::to_string(v)?;
        self.print(&format!("{s}\n"))
    }

    async fn agent(&self) -> anyhow::Result<AgentClient<Channel>> {
        let target = endpoint::parse(&self.cli.endpoint)?;
        Ok(AgentClient::new(
            endpoint::connect(&target, &self.tls()).await?,
        ))
    }

    async fn collector(&self) -> anyhow::Result<CollectorClient<Channel>> {
        let addr = self.cli.collector.as_deref().ok_or_else(|| {
            anyhow!("this command asks the collector: give --collector HOST:PORT")
        })?;
        let target = endpoint::parse(addr)?;
        Ok(CollectorClient::new(
            endpoint::connect(&target, &self.tls()).await?,
        ))
    }

    fn tls(&self) -> endpoint::TlsFiles {
        endpoint::TlsFiles {
            ca_cert: self.cli.ca_cert.clone(),
            client_cert: self.cli.client_cert.clone(),
            client_key: self.cli.client_key.clone(),
        }
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.cli.timeout);
        r
    }

    /// Prints an action result; an outcome other than SUCCEEDED is a failure.
    fn action(&mut self, r: pb::ActionResult) -> anyhow::Result<()> {
        if self.cli.json {
            self.json(&render::action_json(&r))?;
        } else {
            self.print(&render::action_text(&r))?;
        }
        if r.outcome() != pb::ActionOutcome::Succeeded {
            bail!(
                "{} {}: {}: {}",
                r.action,
                r.device_id,
                render::outcome(r.outcome()),
                r.message
            );
        }
        Ok(())
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let json = self.cli.json;
        match &self.cli.command {
            Command::Status => {
                let n = self
                    .agent()
                    .await?
                    .get_node(self.req(pb::GetNodeRequest {}))
                    .await?
                    .into_inner();
                if json {
                    self.json(&render::node_json(&n))
                } else {
                    self.print(&render::node_text(&n))
                }
            }
            Command::Devices => {
                let d = self
                    .agent()
                    .await?
                    .list_devices(self.req(pb::ListDevicesRequest {}))
                    .await?
                    .into_inner();
                if json {
                    self.json(&serde_json::Value::Array(
                        d.devices.iter().map(render::device_json).collect(),
                    ))
                } else {
                    self.print(&render::devices_table(&d.devices))
                }
            }
            Command::Device { id } => {
                let req = self.req(pb::GetDeviceRequest { id: id.clone() });
                let d = self.agent().await?.get_device(req).await?.into_inner();
                if json {
                    self.json(&render::device_json(&d))
                } else {
                    self.print(&render::device_text(&d))
                }
            }
            Command::Watch { count } => {
                let count = *count;
                let mut stream = self
                    .agent()
                    .await?
                    .watch_health(pb::WatchHealthRequest {})
                    .await?
                    .into_inner();
                let redraw = !json && std::io::stdout().is_terminal();
                let mut seen = 0u64;
                while let Some(n) = stream.message().await? {
                    if json {
                        self.json(&render::node_json(&n))?;
                    } else if redraw {
                        // Clear the screen and home the cursor: a live view, not a scroll.
                        self.print(&format!(
                            "\x1b[2J\x1b[H{}\n(Ctrl-C to stop)\n",
                            render::node_text(&n)
                        ))?;
                    } else {
                        self.print(&format!("{}\n", render::node_text(&n)))?;
                    }
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
                bail!("the agent closed the watch stream (agent shutting down?)")
            }
            Command::ResetDevice {
                id,
                kind,
                recalibrate,
                verify,
            } => {
                let k = if kind.soft {
                    pb::ResetKind::Soft
                } else if kind.hard {
                    pb::ResetKind::Hard
                } else {
                    pb::ResetKind::PowerCycle
                };
                let msg = pb::ResetDeviceRequest {
                    id: id.clone(),
                    kind: k as i32,
                    recalibrate_after: *recalibrate,
                    verify_after: *verify,
                    confirm: self.cli.yes,
                    dry_run: self.cli.dry_run,
                    idempotency_key: self.idempotency_key.clone(),
                };
                act!(self, reset_device, msg)
            }
            Command::Calibrate { id } => {
                let msg = pb::CalibrateDeviceRequest {
                    id: id.clone(),
                    confirm: self.cli.yes,
                    dry_run: self.cli.dry_run,
                    idempotency_key: self.idempotency_key.clone(),
                };
                act!(self, calibrate_device, msg)
            }
            Command::SetPowerLimit { id, watts } => {
                let msg = pb::SetPowerLimitRequest {
                    id: id.clone(),
                    watts: *watts,
                    confirm: self.cli.yes,
                    dry_run: self.cli.dry_run,
                    idempotency_key: self.idempotency_key.clone(),
                };
                act!(self, set_power_limit, msg)
            }
            Command::Disable { id } | Command::Enable { id } => {
                let enabled = matches!(self.cli.command, Command::Enable { .. });
                let msg = pb::SetDeviceEnabledRequest {
                    id: id.clone(),
                    enabled,
                    confirm: self.cli.yes,
                    dry_run: self.cli.dry_run,
                    idempotency_key: self.idempotency_key.clone(),
                };
                act!(self, set_device_enabled, msg)
            }
            Command::InjectFault { id, kind } => {
                let fault = parse_enum(
                    "kind",
                    kind,
                    "FAULT_KIND_",
                    pb::FaultKind::from_str_name,
                    health_hal::FaultKind::NAMES,
                )
                .map_err(|_| {
                    anyhow!(
                        "fault kind {kind:?}: expected one of {}",
                        health_hal::FaultKind::NAMES
                    )
                })?;
                let msg = pb::InjectFaultRequest {
                    id: id.clone(),
                    fault: fault as i32,
                    confirm: self.cli.yes,
                    dry_run: self.cli.dry_run,
                    idempotency_key: self.idempotency_key.clone(),
                };
                act!(self, inject_fault, msg)
            }
            Command::Probe {
                file,
                bits,
                read_noise,
            } => {
                let req = self.req(pb::ProbeMatrixRequest {
                    path: file.clone(),
                    bits: *bits,
                    read_noise: *read_noise,
                });
                let r = self.agent().await?.probe_matrix(req).await?.into_inner();
                if json {
                    self.print(&format!("{}\n", r.report_json))
                } else {
                    let mut out = format!("{file}: {} finding(s)\n", r.findings.len());
                    for c in &r.findings {
                        out.push_str(&format!(
                            "  {} {}: {}\n",
                            render::severity(c.severity()),
                            c.code().as_str_name(),
                            c.message
                        ));
                    }
                    self.print(&out)
                }
            }
            Command::Diagnose { id, full } => {
                let level = if *full {
                    pb::DiagnosticsLevel::Full
                } else {
                    pb::DiagnosticsLevel::Quick
                };
                let req = self.req(pb::RunDiagnosticsRequest {
                    id: id.clone(),
                    level: level as i32,
                });
                let r = self.agent().await?.run_diagnostics(req).await?.into_inner();
                if json {
                    self.json(&render::diagnostics_json(&r))?;
                } else {
                    self.print(&render::diagnostics_text(&r))?;
                }
                match r.state() {
                    pb::HealthState::Warning | pb::HealthState::Critical => bail!(
                        "diagnose {}: {} with {} finding(s)",
                        r.device_id,
                        render::state(r.state()),
                        r.findings.len()
                    ),
                    _ => Ok(()),
                }
            }
            Command::Actions { device, limit } => {
                let req = self.req(pb::ListActionsRequest {
                    limit: *limit,
                    device_id: device.clone().unwrap_or_default(),
                });
                let r = self.agent().await?.list_actions(req).await?.into_inner();
                if json {
                    self.json(&serde_json::Value::Array(
                        r.actions.iter().map(render::action_json).collect(),
                    ))
                } else {
                    self.print(&render::actions_table(&r.actions))
                }
            }
            Command::Processes => {
                let n = self
                    .agent()
                    .await?
                    .get_node(self.req(pb::GetNodeRequest {}))
                    .await?
                    .into_inner();
                let h = n.host.unwrap_or_default();
                if json {
                    self.json(&serde_json::Value::Array(
                        h.processes.iter().map(processes::process_json).collect(),
                    ))
                } else {
                    self.print(&processes::processes_table(&h))
                }
            }
            Command::KillProcess {
                pid,
                signal,
                escalate_after,
            } => {
                let signal = processes::signal(signal)?;
                let mut agent = self.agent().await?;
                // The start time the agent shows for this pid now: the agent refuses the kill if
                // the pid has been reused by the time the request arrives.
                let node = agent
                    .get_node(self.req(pb::GetNodeRequest {}))
                    .await?
                    .into_inner();
                let mut msg =
                    processes::kill_request(*pid, signal, *escalate_after, node.host.as_ref())?;
                msg.confirm = self.cli.yes;
                msg.dry_run = self.cli.dry_run;
                msg.idempotency_key = self.idempotency_key.clone();
                // The agent may wait out the escalation and the exit grace.
                let mut req = self.req(msg);
                req.set_timeout(
                    self.cli.timeout + escalate_after.unwrap_or_default() + Duration::from_secs(10),
                );
                let r = agent.kill_process(req).await?.into_inner();
                self.action(r)
            }
            Command::Audit {
                verify,
                file,
                tail,
                node,
            } => {
                let path = audit::default_path(file.as_deref())?;
                let mut text = audit::run(&path, *verify, *tail, json)?;
                if let Some(node) = node {
                    let n = self
                        .collector()
                        .await?
                        .get_node(self.req(pb::GetFleetNodeRequest { node: node.clone() }))
                        .await?
                        .into_inner();
                    let head = n
                        .snapshot
                        .and_then(|s| s.agent)
                        .and_then(|a| a.audit_head)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "the collector has no audit head for node {node:?} (an agent older than this check, or no report yet)"
                            )
                        })?;
                    text.push_str(&audit::check_head(&path, &head, node, json)?);
                }
                self.print(&text)
            }
            Command::Nodes => {
                let r = self
                    .collector()
                    .await?
                    .list_nodes(self.req(pb::ListNodesRequest {}))
                    .await?
                    .into_inner();
                if json {
                    self.json(&serde_json::Value::Array(
                        r.nodes.iter().map(render::node_summary_json).collect(),
                    ))
                } else {
                    self.print(&render::nodes_table(&r.nodes))
                }
            }
            Command::FleetNode { node } => {
                let n = self
                    .collector()
                    .await?
                    .get_node(self.req(pb::GetFleetNodeRequest { node: node.clone() }))
                    .await?
                    .into_inner();
                if json {
                    self.json(&render::fleet_node_json(&n))
                } else {
                    self.print(&render::fleet_node_text(&n))
                }
            }
            Command::FleetDevices { kind, state, node } => {
                let kind = match kind {
                    Some(k) => parse_enum(
                        "kind",
                        k,
                        "DEVICE_KIND_",
                        pb::DeviceKind::from_str_name,
                        "loihi2, spinnaker, photonic, analog_crossbar",
                    )? as i32,
                    None => 0,
                };
                let state = match state {
                    Some(s) => parse_enum(
                        "state",
                        s,
                        "HEALTH_STATE_",
                        pb::HealthState::from_str_name,
                        "ok, unknown, warning, critical",
                    )? as i32,
                    None => 0,
                };
                let req = self.req(pb::QueryDevicesRequest {
                    kind,
                    state,
                    node: node.clone().unwrap_or_default(),
                });
                let r = self
                    .collector()
                    .await?
                    .query_devices(req)
                    .await?
                    .into_inner();
                if json {
                    self.json(&serde_json::Value::Array(
                        r.devices.iter().map(render::fleet_device_json).collect(),
                    ))
                } else {
                    self.print(&render::fleet_devices_table(&r.devices))
                }
            }
            Command::Alerts { count } => {
                let count = *count;
                let mut stream = self
                    .collector()
                    .await?
                    .watch_alerts(pb::WatchAlertsRequest {})
                    .await?
                    .into_inner();
                let mut seen = 0u64;
                while let Some(e) = stream.message().await? {
                    if json {
                        self.json(&render::alert_json(&e))?
                    } else {
                        self.print(&render::alert_line(&e))?
                    }
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
                bail!("the collector closed the alert stream")
            }
            Command::History {
                node,
                device,
                since,
                limit,
            } => {
                let request = history::request(
                    node.as_deref(),
                    device.as_deref(),
                    *since,
                    *limit,
                    std::time::SystemTime::now(),
                );
                let req = self.req(request);
                let r = self
                    .collector()
                    .await?
                    .query_history(req)
                    .await?
                    .into_inner();
                if json {
                    self.json(&serde_json::Value::Array(
                        r.entries.iter().map(history::json).collect(),
                    ))
                } else {
                    self.print(&history::table(&r.entries))
                }
            }
        }
    }
}

/// One line for a failed call: gRPC status messages are already written for people.
fn one_line(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let code = format!("{:?}", s.code());
        return format!("{code}: {}", s.message().replace('\n', " "));
    }
    format!("{e:#}").replace('\n', " ")
}

/// Runs agent-ctl; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-ctl: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let idempotency_key = cli.idempotency_key.clone().unwrap_or_else(|| {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let mut ctl = Ctl {
        cli,
        out: std::io::stdout(),
        idempotency_key,
    };
    match rt.block_on(async {
        tokio::select! {
            r = ctl.run() => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (agent-ctl watch | head) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("agent-ctl: {}", one_line(&e).trim());
            std::process::ExitCode::FAILURE
        }
    }
}
