//! The command line of `agent-ctl`: global options and one subcommand each. Kept apart from
//! the code that runs the commands so that `--help`, the flag names and the exit status 2 for
//! usage errors are decided in one place, by clap, before anything connects anywhere.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{endpoint, history, incidents};

#[derive(Parser)]
#[command(
    name = "agent-ctl",
    version,
    about = "Operate a health-agent and query the health collector"
)]
pub struct Cli {
    /// Agent endpoint: unix:///path/agent.sock, http://host:port or https://host:port.
    #[arg(long, global = true, env = "HEALTH_AGENT_ENDPOINT", default_value = endpoint::DEFAULT_AGENT_ENDPOINT)]
    pub(crate) endpoint: String,
    /// Collector address (host:port or URL) for fleet commands: nodes, fleet-devices, alerts.
    #[arg(long, global = true, env = "HEALTH_COLLECTOR")]
    pub(crate) collector: Option<String>,
    /// CA certificate (PEM) to trust for https:// endpoints, instead of the system roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its subject decides the role.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// Actions: confirm a hard reset or power cycle.
    #[arg(long, global = true)]
    pub(crate) yes: bool,
    /// Actions: check everything (role, device, limits) and say what would happen; do nothing.
    #[arg(long, global = true)]
    pub(crate) dry_run: bool,
    /// Actions: the idempotency key (default: a random one per invocation, reused on
    /// agent-ctl's own retries). A script that may rerun a command passes its own.
    #[arg(long, global = true, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Give up on a call after this long (actions wait for the device's own deadline).
    #[arg(long, global = true, default_value = "90s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Clone)]
pub(crate) enum Command {
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
    /// Checked services ([[service]] rules): unit state, restarts, health URL, port,
    /// conditions with what was seen.
    Services,
    /// Restart a [[service]] rule's systemd unit (operator, audited; --dry-run checks only).
    RestartService {
        /// The [[service]] rule's name (not the unit: the agent knows which unit it is).
        name: String,
    },
    /// The remediation engine: per device its ladder (policy, mode, state, step, what blocks
    /// the next step, history), per policy its counts, and the node's pause. With a
    /// subcommand: approve, pause, resume or clear (operator), then the resulting status.
    #[command(args_conflicts_with_subcommands = true)]
    Remediation {
        /// Only this device (or remediation target, e.g. process:NAME:PID).
        #[arg(long)]
        device: Option<String>,
        #[command(subcommand)]
        control: Option<RemediationControl>,
    },
    /// Maintenance windows: while one lasts, the agent's policies leave the device (or the
    /// whole node) alone; its conditions are still read and shown. start/end: operator,
    /// audited.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Delete what a [[cleanup]] rule of the agent matches (old files, never directories or
    /// symlinks); with --dry-run, list what would go. Prints the count, bytes and paths.
    CleanFiles {
        /// The [[cleanup]] rule's name.
        rule: String,
    },
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
        /// Print the alerts active now (firing and suppressed) and exit, without following
        #[arg(long, conflicts_with = "count")]
        once: bool,
    },
    /// Fleet: silence alerts in Alertmanager through the collector (needs --collector, the
    /// operator role there, and an Alertmanager configured on it).
    Silence {
        /// Matchers: name=value, name!=value, name=~regex, name!~regex, comma-separated
        /// (labels alertname, node, subject, device, severity, code, priority)
        #[arg(long = "match", value_name = "MATCHERS", required = true)]
        matches: Vec<String>,
        /// How long, e.g. 30m, 4h
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_: std::time::Duration,
        /// Why (required; shown in Alertmanager)
        #[arg(long)]
        comment: String,
    },
    /// Fleet: the silences made through the collector, and those it holds for maintenance
    /// windows (needs --collector).
    Silences {
        /// Expired ones too
        #[arg(long)]
        all: bool,
    },
    /// Fleet: expire a silence made through the collector (needs --collector, operator role).
    Unsilence { id: String },
    /// Fleet: conditions, alert transitions, actions, escalations, maintenance, silences and
    /// restarts from the collector's history, newest first (needs --collector, and
    /// history_path set on the collector).
    History {
        #[arg(long)]
        node: Option<String>,
        /// A device id, or a subject such as "host"
        #[arg(long)]
        device: Option<String>,
        /// From when: how far back (30m, 1h, 7d) or an RFC 3339 time [default: everything kept]
        #[arg(long, value_name = "WHEN", value_parser = history::parse_when)]
        since: Option<history::When>,
        /// Up to when, exclusive: how far back (1h) or an RFC 3339 time [default: now]
        #[arg(long, value_name = "WHEN", value_parser = history::parse_when)]
        until: Option<history::When>,
        /// Oldest first (with --limit: the oldest entries)
        #[arg(long)]
        oldest_first: bool,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
    },
    /// Gather the evidence of this node into a new directory with a SHA-256 manifest: the
    /// audit log and its verification (against the collector-held head with --collector),
    /// the validated config, the node snapshot, the agent's journal, and with --collector the
    /// node's history and incidents. Parts that cannot be had are listed in NOTES.
    #[command(subcommand_negates_reqs = true)]
    Evidence {
        /// The directory to create (or an empty one).
        #[arg(long, value_name = "DIR", required = true)]
        out: Option<PathBuf>,
        /// How far back the journal, history and incidents go
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// The agent's config file [default: /etc/health-agent/agent.toml]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The audit log [default: audit_log of the config]
        #[arg(long, value_name = "FILE")]
        audit_file: Option<PathBuf>,
        /// The node's name at the collector [default: the agent's own]
        #[arg(long)]
        node: Option<String>,
        #[command(subcommand)]
        check: Option<EvidenceCheck>,
    },
    /// Fleet: incidents, newest first (needs --collector, and history on the collector).
    Incidents {
        /// Only incidents not closed yet
        #[arg(long)]
        open: bool,
        /// Incidents open at any time within this, e.g. 24h [default: everything kept]
        #[arg(long, value_name = "DURATION", value_parser = history::parse_since)]
        since: Option<std::time::Duration>,
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
    },
    /// Fleet: one incident's timeline, oldest first; `--export` writes the post-mortem
    /// skeleton; `incident ID note TEXT` adds an operator's note (needs --collector).
    Incident {
        id: String,
        /// Write the post-mortem skeleton in this format instead of the timeline
        #[arg(long, value_enum)]
        export: Option<incidents::ExportFormat>,
        /// With --export: write to this file instead of stdout
        #[arg(long, value_name = "FILE", requires = "export")]
        out: Option<PathBuf>,
        #[command(subcommand)]
        note: Option<IncidentNote>,
    },
}

/// `agent-ctl evidence verify DIR`.
#[derive(Subcommand, Clone)]
pub(crate) enum EvidenceCheck {
    /// Check DIR against its MANIFEST.sha256: exit 1 naming every file changed, missing or
    /// added.
    Verify { dir: PathBuf },
}

/// `agent-ctl incident ID note TEXT`.
#[derive(Subcommand, Clone)]
pub(crate) enum IncidentNote {
    /// Add a note to the incident (operator role on the collector; audited there).
    Note { text: String },
}

#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct ResetKindArg {
    #[arg(long)]
    pub(crate) soft: bool,
    #[arg(long)]
    pub(crate) hard: bool,
    #[arg(long)]
    pub(crate) power_cycle: bool,
}

/// `agent-ctl maintenance <command>`.
#[derive(Subcommand, Clone)]
pub(crate) enum MaintenanceCommand {
    /// Put a device or the node into maintenance (again: extend or shorten it).
    Start {
        #[command(flatten)]
        subject: MaintenanceSubject,
        /// How long, e.g. 30m, 2h (at most the agent's max_maintenance); it ends by itself.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        window_for: Duration,
        /// Why, for the audit log and whoever looks next.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// End the maintenance of a device or the node now.
    End {
        #[command(flatten)]
        subject: MaintenanceSubject,
    },
    /// Every window in force: the node's, devices' (operator or SLURM).
    List,
}

/// Exactly one of `--device ID` and `--node`.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct MaintenanceSubject {
    #[arg(long, value_name = "ID")]
    pub(crate) device: Option<String>,
    /// The whole node.
    #[arg(long)]
    pub(crate) node: bool,
}

/// `agent-ctl remediation <control>`: the operator's controls of the engine, each audited by
/// the agent.
#[derive(Subcommand, Clone)]
pub(crate) enum RemediationControl {
    /// Let the ladder of ID, waiting for approval, take its next (destructive) step.
    Approve { id: String },
    /// Stop automatic actions on one device, or on the whole node (no --device). A step
    /// already running finishes; no new step starts.
    Pause {
        #[arg(long)]
        device: Option<String>,
        /// How long, e.g. 30m, 1h [default: until resumed]
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        pause_for: Option<Duration>,
        /// Why, for the audit log and everyone who looks at the status.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// End a pause of one device, or of the whole node (no --device).
    Resume {
        #[arg(long)]
        device: Option<String>,
    },
    /// Forget the exhausted ladder of ID so that its policies may act again.
    Clear { id: String },
}
