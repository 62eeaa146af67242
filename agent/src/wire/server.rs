//! Binding and serving the agent's gRPC surface: the `health.v1.Agent` service on a Unix
//! socket (and optionally TCP with mutual TLS), with `grpc.health.v1` and server reflection,
//! every call passing [`super::authn`] first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use health_proto::v1::agent_server::AgentServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use super::authn::Authenticated;
use super::service::AgentService;
use crate::audit::AuditLog;
use crate::auth::Policy;
use crate::config::AgentConfig;

/// Listeners bound and ready to serve. Binding is separate from serving so that readiness
/// (systemd READY=1) is signalled only once clients can actually connect.
pub struct Listeners {
    unix: UnixListener,
    pub socket: PathBuf,
    tcp: Option<tokio::net::TcpListener>,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Binds the Unix socket, refusing to steal it from a running agent, and the TCP listener.
pub async fn bind(cfg: &AgentConfig) -> anyhow::Result<Listeners> {
    let socket = cfg.socket.clone();
    if let Some(dir) = socket.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating socket directory {}", dir.display()))?;
        }
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            bail!(
                "{}: another agent is already serving on this socket",
                socket.display()
            );
        }
        // A socket file nobody listens on is left over from a crash: replace it. Anything
        // else at that path (a mistyped `socket =` pointing at a real file) is not ours.
        use std::os::unix::fs::FileTypeExt;
        let is_socket = std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
        if !is_socket {
            bail!(
                "{}: exists and is not a socket; refusing to replace it",
                socket.display()
            );
        }
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    let unix =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    set_mode(&socket, 0o660)?;
    if let Some(group) = &cfg.auth.socket_group {
        let gid = crate::auth::resolve_group("auth.socket_group", group)?;
        std::os::unix::fs::chown(&socket, None, Some(gid)).with_context(|| {
            format!("auth.socket_group: chown {} to gid {gid}", socket.display())
        })?;
    }
    // `tls.cert` alone (no tcp_listen) is the uplink's client certificate: no server TLS then.
    let tls = match cfg.tcp_listen {
        Some(_) => crate::wire::tls::server(&cfg.tls)?,
        None => None,
    };
    let tcp = match cfg.tcp_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding tcp_listen {addr}"))?,
        ),
        None => None,
    };
    Ok(Listeners {
        unix,
        socket,
        tcp,
        tls,
    })
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

/// Serves until `cancel` fires. The Agent service is mounted only behind [`Authenticated`].
pub async fn serve(
    listeners: Listeners,
    service: AgentService,
    policy: Arc<Policy>,
    audit: Arc<AuditLog>,
    max_message_bytes: usize,
    rpc: Arc<health_metrics::rpc::RpcStats>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let service = Arc::new(service);
    let make = || {
        Authenticated::new(
            AgentServer::from_arc(service.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            policy.clone(),
            audit.clone(),
        )
        .counting_denials(service.node.denied.clone())
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServer<AgentService>>()
        .await;
    // Reflection v1 for grpcurl and current clients, v1alpha for older ones (grpcio-reflection).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(health_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The descriptor set also holds the Collector service: list only what is served here.
            .with_service_name("health.v1.Agent")
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection = reflection_builder()
        .build_v1()
        .context("building the reflection service")?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .context("building the reflection service")?;

    let unix = tonic::transport::Server::builder()
        .layer(rpc.layer())
        .add_service(health_service.clone())
        .add_service(reflection.clone())
        .add_service(reflection_alpha.clone())
        .add_service(make())
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listeners.unix),
            cancel.clone().cancelled_owned(),
        );
    let mut tcp_builder = tonic::transport::Server::builder();
    if let Some(tls) = listeners.tls {
        tcp_builder = tcp_builder
            .tls_config(tls)
            .context("configuring TLS for tcp_listen")?;
    }
    let tcp = listeners.tcp.map(|l| {
        tcp_builder
            .layer(rpc.layer())
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(make())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                cancel.clone().cancelled_owned(),
            )
    });
    let result = match tcp {
        Some(tcp) => tokio::try_join!(unix, tcp).map(|_| ()),
        None => unix.await,
    };
    result.context("serving the Agent API")
}
