//! The agent's socket: SDS and the Workload API on one unix socket, every caller attested by
//! its peer credentials.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use halyard_proto::api::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::caller::AgentState;
use crate::sds::SdsServer;
use crate::workload_api::WorkloadApi;

/// Binds `path` (replacing a stale socket file left by a crash) and serves until `shutdown`.
pub async fn serve(
    path: &Path,
    state: AgentState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = bind(path)?;
    let result = tonic::transport::Server::builder()
        .add_service(SdsServer::new(state.clone()))
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi::new(state)))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(|e| std::io::Error::other(halyard_proto::transport::error_chain(&e)));
    let _ = std::fs::remove_file(path);
    result
}

/// Binds the socket. Anyone on the node may connect (0777, in a 0755 directory): callers are
/// told apart by their kernel credentials, not by file permissions.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another agent", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}
