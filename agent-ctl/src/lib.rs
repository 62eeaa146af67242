//! `agent-ctl`: the operator's command line for one agent (over its Unix socket by default)
//! and for the collector (`--collector ADDR`). A gRPC client like any other: it uses only the
//! public `health.v1` API, so anything it can do, a control plane can do too.
//!
//! Exit status: 0 on success; 1 with a one-line reason on stderr when the call fails or an
//! action's outcome is not SUCCEEDED; 2 for usage errors.

pub mod audit;
mod change;
mod cli;
pub mod endpoint;
mod evidence;
mod fleet;
mod history;
mod incidents;
mod inspect;
mod invocation;
pub use health_view::json;
pub mod maintenance;
pub mod processes;
pub mod remediation;
pub mod render;
pub mod services;
pub mod silences;

use clap::Parser;

use cli::{Cli, Command};
use invocation::Invocation;

/// Runs one command: what it asks, and of whom, is in its module ([`inspect`] and [`change`]
/// for the agent, [`remediation`] for its engine, [`fleet`] for the collector, [`audit`] for
/// the log file).
async fn run(ctl: &mut Invocation, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Status => inspect::status(ctl).await,
        Command::Devices => inspect::devices(ctl).await,
        Command::Device { id } => inspect::device(ctl, id).await,
        Command::Watch { count } => inspect::watch(ctl, *count).await,
        Command::Probe {
            file,
            bits,
            read_noise,
        } => inspect::probe(ctl, file, *bits, *read_noise).await,
        Command::Diagnose { id, full } => inspect::diagnose(ctl, id, *full).await,
        Command::Actions { device, limit } => {
            inspect::actions(ctl, device.as_deref(), *limit).await
        }
        Command::Processes => inspect::processes(ctl).await,
        Command::Services => inspect::services(ctl).await,
        Command::RestartService { name } => change::restart_service(ctl, name).await,
        Command::Remediation { device, control } => {
            remediation::command(ctl, device.as_deref(), control.as_ref()).await
        }
        Command::ResetDevice {
            id,
            kind,
            recalibrate,
            verify,
        } => change::reset_device(ctl, id, kind, *recalibrate, *verify).await,
        Command::Calibrate { id } => change::calibrate(ctl, id).await,
        Command::SetPowerLimit { id, watts } => change::set_power_limit(ctl, id, *watts).await,
        Command::Disable { id } => change::set_enabled(ctl, id, false).await,
        Command::Enable { id } => change::set_enabled(ctl, id, true).await,
        Command::InjectFault { id, kind } => change::inject_fault(ctl, id, kind).await,
        Command::Maintenance { command } => maintenance::command(ctl, command).await,
        Command::KillProcess {
            pid,
            signal,
            escalate_after,
        } => change::kill_process(ctl, *pid, signal, *escalate_after).await,
        Command::CleanFiles { rule } => change::clean_files(ctl, rule).await,
        Command::Audit {
            verify,
            file,
            tail,
            node,
        } => audit::command(ctl, *verify, file.as_deref(), *tail, node.as_deref()).await,
        Command::Nodes => fleet::nodes(ctl).await,
        Command::FleetNode { node } => fleet::fleet_node(ctl, node).await,
        Command::FleetDevices { kind, state, node } => {
            fleet::fleet_devices(ctl, kind.as_deref(), state.as_deref(), node.as_deref()).await
        }
        Command::Alerts { count, once } => fleet::alerts(ctl, *count, *once).await,
        Command::Silence {
            matches,
            for_,
            comment,
        } => silences::silence(ctl, matches, *for_, comment).await,
        Command::Silences { all } => silences::silences(ctl, *all).await,
        Command::Unsilence { id } => silences::unsilence(ctl, id).await,
        Command::History {
            node,
            device,
            since,
            until,
            oldest_first,
            limit,
        } => {
            let filter = history::Filter {
                node: node.as_deref(),
                device: device.as_deref(),
                since: *since,
                until: *until,
                oldest_first: *oldest_first,
                limit: *limit,
            };
            fleet::history(ctl, &filter).await
        }
        Command::Evidence {
            check: Some(cli::EvidenceCheck::Verify { dir }),
            ..
        } => evidence::verify(ctl, dir),
        Command::Evidence {
            out,
            since,
            config,
            audit_file,
            node,
            check: None,
        } => {
            let out = out.as_deref().unwrap_or(std::path::Path::new("."));
            let request = evidence::Request {
                out,
                since: *since,
                config: config.as_deref(),
                audit_file: audit_file.as_deref(),
                node: node.as_deref(),
            };
            evidence::gather(ctl, request).await
        }
        Command::Incidents {
            open,
            since,
            node,
            limit,
        } => incidents::list(ctl, *open, *since, node.as_deref(), *limit).await,
        Command::Incident {
            id,
            note: Some(cli::IncidentNote::Note { text }),
            ..
        } => incidents::note(ctl, id, text).await,
        Command::Incident {
            id, export, out, ..
        } => incidents::show(ctl, id, *export, out.as_deref()).await,
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
    let command = cli.command.clone();
    let mut ctl = Invocation::new(cli);
    match rt.block_on(async {
        tokio::select! {
            r = run(&mut ctl, &command) => r,
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
