//! Starting and stopping the agent: the order things come up in, and the one clean shutdown.
//!
//! Listeners are bound first, so a second agent on the same socket fails before it touches any
//! device. READY=1 goes to systemd once clients can connect. Each device's supervisor gives a
//! read handle, which the node and the API share, and a [`crate::device::DeviceControl`],
//! which goes to [`Actions`] and nowhere else. On SIGTERM or SIGINT a single cancellation
//! token stops everything; supervisors finish the call in flight (each bounded by its
//! deadline), so a reset that has started either completes or times out, never vanishes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use health_daemon::systemd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::action::Actions;
use crate::config::{AgentConfig, DeviceConfig};
use crate::device::{backends, supervisor};
use crate::host;
use crate::model::UplinkStats;
use crate::node::{self, Node};
use crate::remediation::Remediation;
use crate::wire::{self, service::AgentService, uplink::Uplink};

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let listeners = wire::bind(&cfg).await?;
    // Bound before READY too, so a taken metrics port fails the start, naming the address.
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(
            health_metrics::http::bind(addr)
                .await
                .with_context(|| format!("binding metrics_listen {addr}"))?,
        ),
        None => None,
    };
    let policy = Arc::new(crate::auth::Policy::resolve(&cfg.auth)?);
    let uplink_tls = crate::wire::tls::uplink(&cfg.tls, &cfg.collectors)?;
    let audit = crate::audit::AuditLog::open(&cfg.audit_log);
    let socket = listeners.socket.clone();
    let cancel = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let devices = Devices::start(&cfg, &cancel).await?;
    let Started {
        node,
        host_task,
        uplink_stats,
        prober,
    } = start_node(&cfg, devices.handles, audit.clone(), &cancel);
    // The devices' controls go to the action path and nowhere else.
    let actions = start_actions(&cfg, node.clone(), devices.controls, audit.clone()).await;
    let (publish, reports) = watch::channel(Arc::new(node.snapshot()));
    // The remediation engine acts only through `actions`; its state comes back from the
    // audit log before it looks at any device (no replay after a restart).
    let leases = crate::wire::lease::broker(&cfg, uplink_tls.clone());
    let remediation = Remediation::new(&cfg, node.clone(), actions.clone(), leases);
    let remediation_task = remediation.start(cancel.clone()).await;
    let expiry_task = tokio::spawn(crate::maintenance::run_expiry(
        node.maintenance.clone(),
        audit.clone(),
        cancel.clone(),
    ));

    let (uplink_tx, uplink_task) = match uplink_stats {
        Some(stats) => {
            let (tx, task) = start_uplink(&cfg, stats, uplink_tls, &cancel).await?;
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let reporter = tokio::spawn(node::run_reporter(
        node.clone(),
        cfg.report_interval,
        publish,
        uplink_tx,
        cancel.clone(),
    ));

    let rpc = health_metrics::rpc::RpcStats::new();
    if let Some(listener) = metrics_listener {
        let metrics = crate::wire::metrics::AgentMetrics {
            reports: reports.clone(),
            actions: actions.clone(),
            rpc: rpc.clone(),
            remediation: remediation.clone(),
        };
        serve_metrics(listener, metrics, &cancel);
    }
    let service = AgentService {
        node: node.clone(),
        actions: actions.clone(),
        remediation: remediation.clone(),
        reports,
        prober,
    };
    let mut server = tokio::spawn(wire::serve(
        listeners,
        service,
        policy,
        audit,
        cfg.max_message_bytes,
        rpc,
        cancel.clone(),
    ));
    systemd::ready();
    tracing::info!(
        node = %cfg.node, boot_id = %node.boot_id, socket = %cfg.socket.display(),
        tcp = ?cfg.tcp_listen, tls = cfg.tls.cert.is_some(), audit_log = %cfg.audit_log.display(), metrics = ?cfg.metrics_listen, collectors = ?cfg.collectors, devices = devices.count,
        "health-agent running"
    );

    let server_result = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = int.recv() => { tracing::info!("SIGINT: shutting down"); None }
        r = &mut server => Some(r),
    };
    systemd::stopping();
    cancel.cancel();
    let server_result = match server_result {
        Some(r) => r,
        None => drain(server).await,
    };
    // Removed here, not by the server, so that it goes even when a client held the server up.
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "could not remove the socket");
    }
    let rest = async {
        let _ = remediation_task.await;
        let _ = expiry_task.await;
        for t in devices.tasks {
            let _ = t.await;
        }
        // An action the supervisor has just finished still has to be recorded by its task.
        actions.wait_idle().await;
        let _ = reporter.await;
        let _ = host_task.await;
        if let Some(t) = uplink_task {
            let _ = t.await;
        }
    };
    wait_for_tasks(devices.longest_action, rest).await;
    drop(devices.keep_alive);
    tracing::info!("health-agent stopped");
    server_result.context("API server task")?
}

/// `/metrics` on its own task until the shutdown.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: crate::wire::metrics::AgentMetrics,
    cancel: &CancellationToken,
) {
    let render = Arc::new(move || metrics.render());
    tokio::spawn(health_metrics::http::serve(
        listener,
        render,
        cancel.clone(),
    ));
}

/// The node and what feeds it besides the devices: the host monitor, the solver probe and
/// the process watchdog.
struct Started {
    node: Arc<Node>,
    host_task: JoinHandle<()>,
    uplink_stats: Option<Arc<UplinkStats>>,
    prober: Arc<crate::probe::Prober>,
}

fn start_node(
    cfg: &AgentConfig,
    handles: Vec<crate::device::DeviceHandle>,
    audit: Arc<crate::audit::AuditLog>,
    cancel: &CancellationToken,
) -> Started {
    let (host_rx, host_task) = host::spawn(cfg.host.clone(), cancel.clone());
    let uplink_stats = cfg
        .collector
        .as_ref()
        .map(|_| Arc::new(UplinkStats::default()));
    let prober = crate::probe::Prober::new(cfg.probe.clone());
    let probe_rx = crate::probe::spawn(prober.clone(), cancel.clone());
    let processes = crate::host::procwatch::spawn(
        cfg.processes.clone(),
        cfg.host.interval,
        cfg.host.deadline,
        cancel.clone(),
    );
    let services = crate::host::services::spawn(cfg.services.clone(), cancel.clone());
    let logs = crate::host::logs::spawn(
        cfg.logs.clone(),
        cfg.host.interval,
        cfg.host.deadline,
        cancel.clone(),
    );
    let node = Arc::new(
        Node::new(
            cfg.node.clone(),
            handles,
            host_rx,
            uplink_stats.clone(),
            Some(probe_rx),
        )
        .with_processes(processes)
        .with_services(services)
        .with_logs(logs)
        .with_audit(audit)
        .with_access_denied(cfg.safety.access_denied),
    );
    Started {
        node,
        host_task,
        uplink_stats,
        prober,
    }
}

/// The action path over the devices' controls, with the idempotency keys of the last minutes
/// read back from the audit log (its tail only; keys live 10 minutes) before the API serves
/// anyone, so they survive a restart.
/// How far back in the audit log maintenance windows are looked for: at 64 MiB, weeks of a
/// busy agent's entries, read line by line at start.
const MAINTENANCE_TAIL: u64 = 64 << 20;

async fn start_actions(
    cfg: &AgentConfig,
    node: Arc<Node>,
    controls: Vec<crate::device::DeviceControl>,
    audit: Arc<crate::audit::AuditLog>,
) -> Arc<Actions> {
    let actions = Arc::new(
        Actions::new(node.clone(), controls, audit, cfg.safety.clone())
            .with_cleanup(cfg.cleanup.clone()),
    );
    let audit_path = cfg.audit_log.clone();
    let recent =
        tokio::task::spawn_blocking(move || crate::audit::recent_entries(&audit_path, 4 << 20))
            .await
            .unwrap_or_default();
    actions.restore_idempotency(&recent);
    // Maintenance windows outlive the agent that started them, and may have started days
    // ago: their entries are looked for further back than the idempotency keys' tail. One
    // that ended while the agent was down is recorded as ended by the expiry task's first
    // pass.
    let audit_path = cfg.audit_log.clone();
    let windows = tokio::task::spawn_blocking(move || {
        crate::audit::entries_containing(
            &audit_path,
            MAINTENANCE_TAIL,
            crate::maintenance::ENTRY_MARK,
        )
    })
    .await
    .unwrap_or_default();
    node.maintenance.restore(&windows);
    actions
}

/// The supervised devices, started.
struct Devices {
    handles: Vec<crate::device::DeviceHandle>,
    controls: Vec<crate::device::DeviceControl>,
    tasks: Vec<JoinHandle<()>>,
    /// Simulators started for `simulator = true` devices live as long as the daemon.
    keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>>,
    count: usize,
    /// The longest action deadline plus read deadline of any device: how long a supervisor
    /// may still be busy after shutdown begins.
    longest_action: Duration,
}

impl Devices {
    /// Builds every listed and discovered device and starts its supervisor. A listed device
    /// that cannot be built is a config error; a discovered one is reported and skipped.
    async fn start(cfg: &AgentConfig, cancel: &CancellationToken) -> anyhow::Result<Devices> {
        let mut out = Devices {
            handles: Vec::new(),
            controls: Vec::new(),
            tasks: Vec::new(),
            keep_alive: Vec::new(),
            count: 0,
            longest_action: Duration::ZERO,
        };
        let discovered = crate::device::discovery::expand(&cfg.discover, &cfg.devices);
        for (i, d) in cfg.devices.iter().chain(&discovered).enumerate() {
            let built = match backends::build(d, &cfg.sysfs_root).await {
                Ok(b) => b,
                Err(e) if i < cfg.devices.len() => return Err(e),
                // The rest of the host is still watched.
                Err(e) => {
                    tracing::error!(device = %d.id, error = %format!("{e:#}"), "discovered device skipped");
                    continue;
                }
            };
            out.keep_alive.extend(built.keep_alive);
            out.add(d, built.device, cfg, cancel);
        }
        Ok(out)
    }

    fn add(
        &mut self,
        d: &DeviceConfig,
        device: Box<dyn health_hal::Device>,
        cfg: &AgentConfig,
        cancel: &CancellationToken,
    ) {
        let spawned = supervisor::spawn_with_probe(
            d.clone(),
            device,
            &cfg.probe.known_answer,
            cancel.clone(),
        );
        self.handles.push(spawned.handle);
        self.controls.push(spawned.control);
        self.tasks.push(spawned.task);
        self.count += 1;
        self.longest_action = self.longest_action.max(d.action_deadline + d.deadline);
    }
}

/// The uplink to the collector(s): its hand-off queue and its task.
async fn start_uplink(
    cfg: &AgentConfig,
    stats: Arc<UplinkStats>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    cancel: &CancellationToken,
) -> anyhow::Result<(
    mpsc::Sender<Arc<crate::model::NodeSnapshot>>,
    JoinHandle<()>,
)> {
    // The hand-off queue only decouples the main loop from the uplink task; the real buffer
    // (bounded by uplink.buffer_reports, and the spill) lives in the uplink.
    let (tx, rx) = mpsc::channel(16);
    let uplink_cfg = cfg.uplink.clone();
    let spill = tokio::task::spawn_blocking(move || Uplink::open_spill(&uplink_cfg))
        .await
        .context("opening the uplink spill")?
        .with_context(|| {
            format!(
                "uplink.spill_path {}: cannot open the spill",
                cfg.uplink
                    .spill_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })?;
    let up = Uplink::new(cfg.collectors.clone(), cfg.uplink.clone(), stats, spill).with_tls(tls);
    Ok((tx, tokio::spawn(up.run(rx, cancel.clone()))))
}

/// Waits for the API server to stop after cancellation. Streams end at shutdown; the bound is
/// for clients that stop reading (a suspended process holding its connection open must not
/// hold the agent up).
async fn drain(
    mut server: JoinHandle<anyhow::Result<()>>,
) -> Result<anyhow::Result<()>, tokio::task::JoinError> {
    match tokio::time::timeout(Duration::from_secs(2), &mut server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!("closing client connections that did not drain within 2 s");
            server.abort();
            Ok(Ok(()))
        }
    }
}

/// Waits for the supervisors (which may be finishing an action, then a fresh read) and the
/// other tasks, at most `longest_action` plus a second.
async fn wait_for_tasks(longest_action: Duration, rest: impl std::future::Future<Output = ()>) {
    // Tell systemd how long the in-flight actions may still take, so TimeoutStopSec does not
    // SIGKILL a power cycle between off and on.
    let _ = sd_notify::notify(
        false,
        &[sd_notify::NotifyState::ExtendTimeoutUsec(
            (longest_action + Duration::from_secs(5))
                .as_micros()
                .min(u128::from(u32::MAX)) as u32,
        )],
    );
    if tokio::time::timeout(longest_action + Duration::from_secs(1), rest)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop in time");
    }
}
