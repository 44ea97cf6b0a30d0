//! The admin socket: owner-only twice over. The socket file is 0600 (the kernel checks it on
//! connect), and every request is checked against the peer's credentials (`SO_PEERCRED`, taken
//! when the connection was accepted): a user other than the one the CA runs as is refused with
//! `PERMISSION_DENIED`, should the file mode ever be loosened (a `chmod`, a volume mounted with
//! other permissions) or the socket be passed on.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use tracing::{debug, warn};

/// The uid this process runs as: the credentials of one end of a socket pair are our own.
/// (`geteuid` itself would need `unsafe` or another dependency.)
pub(super) async fn own_uid() -> io::Result<u32> {
    let (ours, _theirs) = tokio::net::UnixStream::pair()?;
    Ok(ours.peer_cred()?.uid())
}

/// Binds the admin socket owner-only (0600 before anyone can reach it), replacing a stale
/// socket left by a crash but nothing else.
pub(super) fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            // A misconfigured admin_socket pointing at the database, say: never delete it.
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another halyard-ca is serving this admin socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let parent_meta = std::fs::metadata(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("its directory: {e}")))?;
    let mode = parent_meta.permissions().mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        warn!(
            directory = %parent.display(),
            mode = format_args!("{:o}", mode & 0o7777),
            "the admin socket's directory is writable by other users without the sticky bit: \
             they could replace the socket with their own"
        );
    }
    // Bound in a private (0700) directory beside it, made 0600, then moved into place: no
    // moment where the socket is reachable with the umask's mode.
    let staging = tempfile::Builder::new()
        .prefix(".admin-sock-")
        .tempdir_in(parent)?;
    let staged = staging.path().join("admin.sock");
    let listener = UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

/// Refuses requests whose peer is not `uid` (the CA's own). Clone it into an
/// [`tonic::service::InterceptorLayer`] over the whole admin server.
#[derive(Clone)]
pub(super) struct OwnerOnly {
    uid: u32,
    /// Peers already logged at warn; later refusals of the same uid go to debug.
    warned: Arc<Mutex<HashSet<Option<u32>>>>,
}

impl OwnerOnly {
    pub(super) fn new(uid: u32) -> OwnerOnly {
        OwnerOnly {
            uid,
            warned: Arc::default(),
        }
    }

    /// The interceptor.
    pub(super) fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let peer = cred.map(|c| Peer {
            uid: c.uid(),
            pid: c.pid(),
        });
        match admit(self.uid, peer) {
            Ok(()) => Ok(request),
            Err(status) => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(peer.map(|p| p.uid));
                let (uid, pid) = (peer.map(|p| p.uid), peer.and_then(|p| p.pid));
                if first {
                    warn!(
                        ?uid,
                        ?pid,
                        own_uid = self.uid,
                        "admin socket: refused another user"
                    );
                } else {
                    debug!(
                        ?uid,
                        ?pid,
                        own_uid = self.uid,
                        "admin socket: refused another user"
                    );
                }
                Err(status)
            }
        }
    }
}

/// Who is at the other end of an admin connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    uid: u32,
    pid: Option<i32>,
}

/// Whether `peer` may use the admin API of a CA running as `own_uid`: only that same user.
/// Unknown credentials are refused.
fn admit(own_uid: u32, peer: Option<Peer>) -> Result<(), Status> {
    match peer {
        Some(peer) if peer.uid == own_uid => Ok(()),
        Some(peer) => Err(Status::permission_denied(format!(
            "the admin socket serves only the user the CA runs as (uid {own_uid}); \
             this connection is from uid {}",
            peer.uid
        ))),
        None => Err(Status::permission_denied(
            "the admin socket serves only the user the CA runs as; \
             this connection's credentials are unknown",
        )),
    }
}

#[cfg(test)]
mod tests;
