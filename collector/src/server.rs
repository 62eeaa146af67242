//! Wires the collector together and runs it until a shutdown signal.
//!
//! Order matters for operators and for systemd: bind the listener first (so a port conflict
//! fails the start with a clear error), then report READY; on shutdown, flip the gRPC health
//! status to NOT_SERVING, end every stream, stop accepting, and give open connections a bounded
//! time to close so a stuck peer cannot hold up a restart.
//!
//! With `socket` set, the same services are also served on a Unix socket without TLS, where
//! callers are known by their peer credentials (the operator role, `operator.rs`); the socket
//! is bound before READY too, and removed at shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use health_daemon::systemd;
use health_daemon::tls::PemFile;
use health_proto::v1::collector_server::CollectorServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_reflection::server::{v1, v1alpha};

use crate::alertmanager::PushStats;
use crate::alerts::{Alerts, PendingRules};
use crate::audit::AuditLog;
use crate::authz::AgentGate;
use crate::config::{Config, TlsConfig};
use crate::fleet::{Fleet, Limits};
use crate::history::{History, HistoryBackend, HistoryEvent, PgTarget};
use crate::incidents::query::IncidentBook;
use crate::leases::Leases;
use crate::operator::{OperatorPolicy, Operators};
use crate::service::CollectorService;
use crate::silences::client::SilenceClient;
use crate::silences::Silences;
use crate::trail::ReadingTrails;
use crate::web::{Access, FleetReader};
use crate::{alertmanager, shutdown, silences, sweeper, unix_socket};

/// How long open connections get to close after the streams have been ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on idle connections, so an agent whose host vanished (no FIN, no RST) is
/// noticed and its Report stream ends instead of lingering forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// History records queued for the writer thread before new ones are dropped (and counted).
const HISTORY_QUEUE: usize = 65_536;

/// Runs the collector; returns once a shutdown signal has been handled.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals =
        shutdown::on_signal(shutdown.clone()).context("cannot install signal handlers")?;

    let (history, fleet, alerts) = fleet_state(&config)?;
    let leases = Arc::new(Leases::new(config.leases.clone()));
    let (operator_policy, audit, silences) = operator_parts(&config, &alerts)?;
    let mut collector = CollectorService::new(
        Arc::clone(&fleet),
        Arc::clone(&alerts),
        Arc::clone(&leases),
        shutdown.clone(),
    )
    .with_operators(Operators::new(audit.clone()), Arc::clone(&silences));
    if let Some(history) = &history {
        collector = collector.with_history(history.reader());
        silences.keep_history(history.sink());
    }
    collector = collector.with_incidents(IncidentBook::new(
        history.as_ref().map(History::reader),
        history.as_ref().map(History::sink),
        config.incidents.close_after,
    ));
    // Before binding: an unreadable or unusable certificate fails the start, naming the key.
    let builder = server_builder(&config.tls)?;
    let push = alertmanager::spawn(&config.alerts, Arc::clone(&alerts), shutdown.clone());
    let reconciler = silences::spawn_reconciler(Arc::clone(&silences), audit, shutdown.clone());

    // Readings are kept for the page's charts only when the page is served.
    let trails = Arc::new(ReadingTrails::new(config.web.chart_step));
    if page_served(&config) {
        collector = collector.with_trails(Arc::clone(&trails));
    }

    let (incoming, local) = bind_tcp(config.listen).await?;
    let rpc = health_metrics::rpc::RpcStats::new();
    // Bound before READY too, so a taken port fails the start, naming the address.
    let metrics = crate::metrics::CollectorMetrics {
        fleet: Arc::clone(&fleet),
        alerts: Arc::clone(&alerts),
        leases: Arc::clone(&leases),
        rpc: Arc::clone(&rpc),
        silences: Arc::clone(&silences),
        history: history.as_ref().map(History::stats),
    };
    let reader = FleetReader::new(collector.clone(), alerts.maintenance(), trails);
    serve_http(&config, metrics, reader, history.is_some(), &shutdown).await?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CollectorServer<CollectorService>>()
        .await;
    let (reflection, reflection_alpha) = reflection_services()?;

    let sweeper = tokio::spawn(sweeper::run(
        Arc::clone(&fleet),
        Arc::clone(&alerts),
        config.sweep_interval,
        systemd::watchdog_ping_interval(),
        crate::config::history::name_of(&config),
        shutdown.clone(),
    ));

    let gate = AgentGate::new(
        CollectorServer::new(collector).max_decoding_message_size(config.max_message_bytes),
        &config.auth.agent_subjects,
    )
    .with_operators(operator_policy);
    // Bound before READY too: a live socket at the path fails the start.
    let unix_server = match &config.socket {
        Some(path) => Some(unix_socket::start(path, &config, gate.clone(), &rpc, &shutdown).await?),
        None => None,
    };
    let server = builder
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(rpc.layer())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(gate)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(server);

    log_serving(&config, local);
    systemd::ready();

    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown.cancelled() => {
            end_health_watches(health).await;
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; exiting anyway");
                    Ok(())
                }
            }
        }
    };
    // The server can also stop by itself (a fatal transport error): stop the rest with it.
    shutdown.cancel();
    signals.abort();
    stop_background(
        sweeper,
        push,
        history,
        unix_server.into_iter().chain(reconciler),
    )
    .await;
    served.context("gRPC server failed")?;
    tracing::info!("health-collector stopped");
    Ok(())
}

/// The fleet, its alerts and the history they write to. A history file that cannot be used
/// fails the start here, before anything is bound, naming the file.
fn fleet_state(config: &Config) -> anyhow::Result<(Option<History>, Arc<Fleet>, Arc<Alerts>)> {
    let limits = Limits {
        stale_after: config.stale_after,
        forget_after: config.forget_after,
        max_nodes: config.max_nodes,
    };
    let backend = match (&config.history_path, &config.history_url) {
        (Some(path), _) => Some(HistoryBackend::Sqlite(path.clone())),
        (None, Some(url)) => {
            let target =
                PgTarget::new(url, config.history_password_file.as_deref()).map_err(|reason| {
                    anyhow::anyhow!("{url}: cannot use the history database: {reason}")
                })?;
            Some(HistoryBackend::Postgres(Box::new(target)))
        }
        (None, None) => None,
    };
    let history = backend
        .map(|backend| {
            History::open_backend(
                &backend,
                &crate::config::history::name_of(config),
                config.history_retention,
                HISTORY_QUEUE,
            )
        })
        .transpose()?;
    let fleet = Arc::new(
        Fleet::new(limits, config.watch_buffer).with_history(history.as_ref().map(History::sink)),
    );
    if let Some(history) = &history {
        history
            .sink()
            .event(HistoryEvent::collector_started(SystemTime::now()));
    }
    let alerts = Arc::new(
        Alerts::with(
            config.watch_buffer,
            PendingRules::from_names(&config.alerts.pending_for),
            history.as_ref().map(History::sink),
        )
        .with_priorities(config.priorities.map()),
    );
    Ok((history, fleet, alerts))
}

/// Waits for the tasks that stop on the shutdown token, then closes the history, which
/// writes what is queued (the writer's batches are bounded, so this is quick).
async fn stop_background(
    sweeper: JoinHandle<()>,
    push: Option<(Vec<JoinHandle<()>>, Arc<PushStats>)>,
    history: Option<History>,
    others: impl Iterator<Item = JoinHandle<()>>,
) {
    if let Err(error) = sweeper.await {
        tracing::warn!(%error, "sweeper task ended abnormally");
    }
    for task in others {
        // The Unix socket's server drains its connections like the TCP one, bounded alike.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, task).await;
    }
    if let Some((tasks, stats)) = push {
        for task in tasks {
            let _ = task.await;
        }
        tracing::info!(
            sent = stats.sent_total.load(Ordering::Relaxed),
            failed = stats.failed_total.load(Ordering::Relaxed),
            dropped = stats.dropped_total.load(Ordering::Relaxed),
            "Alertmanager push stopped"
        );
    }
    if let Some(history) = history {
        if let Err(error) = tokio::task::spawn_blocking(move || history.close()).await {
            tracing::warn!(%error, "history writer did not stop cleanly");
        }
    }
}

fn log_serving(config: &Config, local: SocketAddr) {
    tracing::info!(
        listen = %local,
        socket = ?config.socket,
        metrics_listen = ?config.metrics_listen,
        web_listen = ?config.web.listen,
        status_page = config.web.enabled,
        stale_after = %humantime::format_duration(config.stale_after),
        sweep_interval = %humantime::format_duration(config.sweep_interval),
        forget_after = %humantime::format_duration(config.forget_after),
        max_nodes = config.max_nodes,
        lease_max_concurrent = config.leases.max_concurrent,
        lease_max_fraction = config.leases.max_fraction.get(),
        tls = config.tls.cert.is_some(),
        "health-collector serving"
    );
}

async fn bind_tcp(listen: SocketAddr) -> anyhow::Result<(TcpIncoming, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local: SocketAddr = listener
        .local_addr()
        .context("cannot read the bound listen address")?;
    Ok((TcpIncoming::from(listener).with_nodelay(Some(true)), local))
}

/// The operator role's parts: who is an operator, the audit log, and the silences (which the
/// alert book names in `silenced_by`).
type OperatorParts = (Arc<OperatorPolicy>, Option<Arc<AuditLog>>, Arc<Silences>);

fn operator_parts(config: &Config, alerts: &Alerts) -> anyhow::Result<OperatorParts> {
    let policy = Arc::new(OperatorPolicy::resolve(&config.auth)?);
    let audit = config.audit_log.as_deref().map(AuditLog::open);
    if let Some(log) = &audit {
        tracing::info!(path = %log.path().display(), seq = ?log.head().map(|h| h.0), "collector audit log open");
    }
    let client = (!config.alerts.alertmanager.is_empty())
        .then(|| SilenceClient::new(&config.alerts.alertmanager, config.alerts.push_timeout));
    let silences = Silences::new(client, alerts.maintenance());
    alerts.show_silences(Arc::clone(&silences));
    Ok((policy, audit, silences))
}

/// The gRPC server, serving mutual TLS when `[tls]` is set (the config has already checked
/// that cert, key and client_ca come together) and plain TCP otherwise.
fn server_builder(tls: &TlsConfig) -> anyhow::Result<Server> {
    let builder = Server::builder();
    let (Some(cert), Some(key), Some(client_ca)) = (&tls.cert, &tls.key, &tls.client_ca) else {
        return Ok(builder);
    };
    let tls = health_daemon::tls::server(
        PemFile::new("tls.cert", cert),
        PemFile::new("tls.key", key),
        PemFile::new("tls.client_ca", client_ca),
    )?;
    builder
        .tls_config(tls)
        .context("tls: the certificate, key or client_ca is not usable")
}

/// The status page is on, and some listener serves it.
fn page_served(config: &Config) -> bool {
    config.web.enabled && (config.metrics_listen.is_some() || config.web.listen.is_some())
}

/// Binds the HTTP listeners now (a taken port fails the start) and serves them until
/// `shutdown`: `metrics_listen` with `/metrics` and the status page, `[web] listen` with the
/// page alone (HTTPS for client certificates when `[tls]` is set). Who may read the page on
/// each is `web::Access`.
async fn serve_http(
    config: &Config,
    metrics: crate::metrics::CollectorMetrics,
    reader: FleetReader,
    history: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let web = &config.web;
    let tls = &config.tls;
    let page = page_served(config)
        .then(|| crate::web::start(reader, history, web.chart_step, shutdown.clone()));
    let plain_access = if web.allow_remote {
        Access::Anyone
    } else {
        Access::Loopback
    };
    if let Some(addr) = config.metrics_listen {
        let listener = health_metrics::http::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let mut app = health_metrics::http::streamed_metrics_routes(Arc::new(metrics));
        app = match &page {
            Some(state) => {
                let access = match (&tls.cert, web.listen) {
                    (None, _) => plain_access.clone(),
                    (Some(_), Some(web_addr)) => Access::Elsewhere(format!(
                        "this collector serves its status page over HTTPS to client certificates: open https://{}/",
                        // A wildcard bind is no address to open: name the port on this host.
                        if web_addr.ip().is_unspecified() {
                            format!("<this host>:{}", web_addr.port())
                        } else {
                            web_addr.to_string()
                        }
                    )),
                    (Some(_), None) => Access::Elsewhere(
                        "this collector has [tls]: its status page needs a client certificate, on [web] listen, which is not set".to_string(),
                    ),
                };
                app.merge(crate::web::routes(state.clone(), access))
            }
            None => app.route(
                "/",
                axum::routing::get(|| async { "Prometheus metrics are at /metrics\n" }),
            ),
        };
        tokio::spawn(health_metrics::http::serve_router(
            listener,
            app,
            None,
            shutdown.clone(),
        ));
    }
    if let (Some(addr), Some(state)) = (web.listen, page) {
        let https = match (&tls.cert, &tls.key, &tls.client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(health_daemon::tls::https_server(
                PemFile::new("tls.cert", cert),
                PemFile::new("tls.key", key),
                PemFile::new("tls.client_ca", client_ca),
            )?),
            _ => None,
        };
        let access = if https.is_some() {
            Access::Certificate
        } else {
            plain_access
        };
        let listener = health_metrics::http::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the status page on {addr} (web.listen)"))?;
        let app = crate::web::routes(state, access);
        tokio::spawn(health_metrics::http::serve_router(
            listener,
            app,
            https,
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Reflection v1 for grpcurl and current clients, v1alpha for older ones (grpcio-reflection).
pub(crate) fn reflection_services() -> anyhow::Result<(
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
)> {
    // The descriptor set also holds the Agent service, so list only what is served here.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(health_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("health.v1.Collector")
            .with_service_name("grpc.health.v1.Health")
    };
    let v1 = reflection_builder()
        .build_v1()
        .context("cannot build the reflection service")?;
    let v1alpha = reflection_builder()
        .build_v1alpha()
        .context("cannot build the reflection service")?;
    Ok((v1, v1alpha))
}

/// Tells grpc.health.v1 watchers we are going away, then ends their streams (they would
/// otherwise hold their connections open through the drain).
async fn end_health_watches(mut health: HealthReporter) {
    let collector = <CollectorServer<CollectorService> as tonic::server::NamedService>::NAME;
    for service in [collector, ""] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
        health.clear_service_status(service).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cert_means_plain_tcp() {
        assert!(server_builder(&TlsConfig::default()).is_ok());
    }

    #[test]
    fn a_bad_tls_file_names_its_collector_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let t = TlsConfig {
            cert: Some(missing.clone()),
            key: Some(missing.clone()),
            client_ca: Some(missing.clone()),
        };
        let Err(e) = server_builder(&t) else {
            panic!("missing TLS files were accepted");
        };
        let e = format!("{e:#}");
        assert!(
            e.starts_with(&format!("tls.cert: cannot read {}: ", missing.display())),
            "{e}"
        );
    }
}
