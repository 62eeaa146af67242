//! The collector's Unix socket (`socket`): the Collector API (behind the same `AgentGate`),
//! health and reflection, without TLS, for operators on the collector's host. Callers are
//! known by their peer credentials (`crate::operator`). Bound before READY like the TCP
//! listener; served until shutdown, then the socket file is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use health_proto::v1::collector_server::CollectorServer;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::authz::AgentGate;
use crate::config::Config;
use crate::service::CollectorService;

/// Binds `socket` (mode 0660, `auth.socket_group`): a socket a live collector answers on is
/// not taken over, a stale one (left by a crash) is replaced, and anything else at the path
/// is never removed.
pub async fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "socket: {} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "socket: {}: another collector is already serving on this socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("socket: removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("socket: cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("socket: setting mode 660 on {}", path.display()))?;
    if let Some(group) = group {
        let gid = crate::operator::resolve_group("auth.socket_group", group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("auth.socket_group: chown {} to gid {gid}", path.display()))?;
    }
    Ok((listener, path.to_path_buf()))
}

/// Binds `path` and serves on it until `shutdown`; the task removes the socket file when done.
pub async fn start(
    path: &Path,
    config: &Config,
    gate: AgentGate<CollectorServer<CollectorService>>,
    rpc: &Arc<health_metrics::rpc::RpcStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let (listener, path) = bind(path, config.auth.socket_group.as_deref()).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CollectorServer<CollectorService>>()
        .await;
    let (reflection, reflection_alpha) = crate::server::reflection_services()?;
    let served = Server::builder()
        .layer(rpc.layer())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(gate)
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        );
    Ok(tokio::spawn(async move {
        if let Err(error) = served.await {
            tracing::warn!(%error, socket = %path.display(), "Unix socket server failed");
        }
        let _ = std::fs::remove_file(&path);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_replaces_a_stale_one_and_never_a_live_one_or_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector.sock");
        let (live, _) = bind(&path, None).await.expect("bind");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        let e = bind(&path, None).await.expect_err("a live socket is kept");
        assert!(format!("{e:#}").contains("already serving"), "{e:#}");
        drop(live);
        bind(&path, None).await.expect("a stale socket is replaced");

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "data").expect("write");
        let e = bind(&file, None)
            .await
            .expect_err("a file is never replaced");
        assert!(format!("{e:#}").contains("is not a socket"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&file).expect("still there"), "data");
    }
}
