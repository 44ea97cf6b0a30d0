//! Leader election among CA replicas: of the replicas of a Deployment, only the holder of the
//! Lease [`LEASE_NAME`] in the CA's namespace runs the controllers (the cert-manager issuer and
//! the CSR signer), so that a request is signed by one replica, not by each. Every replica serves
//! the gRPC APIs; only the controllers are elected.
//!
//! The Lease is kept by `kube-lease-manager` (server-side apply, so two candidates cannot both
//! take it): held for [`LEASE_SECONDS`], renewed [`GRACE_SECONDS`] before it runs out. A replica
//! that loses the Lease (the API server unreachable for longer than that) stops its controllers
//! at once; on shutdown it releases the Lease so that another replica takes over without
//! waiting for it to expire.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The Lease the CA's replicas elect their leader with.
pub const LEASE_NAME: &str = "halyard-ca-controllers";
/// How long a leader holds the Lease without renewing it (client-go's default).
pub const LEASE_SECONDS: u64 = 15;
/// How long before the Lease runs out its holder renews it.
pub const GRACE_SECONDS: u64 = 5;
/// How long to wait before trying again when the Lease cannot be set up.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `controllers` while this replica, `identity`, holds the Lease in `namespace`: started
/// with a token that is cancelled when leadership is lost or `shutdown` is cancelled, and started
/// again when it is regained. Returns once `shutdown` is cancelled and the controllers stopped.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    namespace: String,
    identity: String,
    shutdown: CancellationToken,
    controllers: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(namespace.clone())
            .with_identity(identity.clone())
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(error) => {
                warn!(
                    lease = %format!("{namespace}/{LEASE_NAME}"),
                    %error,
                    "leader election: cannot set up the Lease (may halyard-ca get and create \
                     leases in its namespace?); retrying"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    };
    let (mut leading, lease_task) = manager.watch().await;
    let mut running: Option<(CancellationToken, JoinHandle<()>)> = None;
    loop {
        let leader = *leading.borrow_and_update();
        match (leader, running.is_some()) {
            (true, false) => {
                info!(%identity, lease = LEASE_NAME, "leader elected: running the controllers");
                let stop = shutdown.child_token();
                running = Some((stop.clone(), tokio::spawn(controllers(stop))));
            }
            (false, true) => {
                warn!(%identity, lease = LEASE_NAME, "leadership lost: stopping the controllers");
                stop(running.take()).await;
            }
            _ => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = leading.changed() => {
                if changed.is_err() {
                    // The lease task ended: it logged why. Without it no one renews the Lease.
                    warn!("leader election ended: stopping the controllers");
                    break;
                }
            }
        }
    }
    stop(running.take()).await;
    // Dropping the receiver makes the lease task release the Lease.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => info!(lease = LEASE_NAME, "Lease released"),
        Ok(Err(error)) => warn!(lease = LEASE_NAME, %error, "Lease not released"),
        Err(error) => warn!(lease = LEASE_NAME, %error, "leader election task failed"),
    }
}

async fn stop(running: Option<(CancellationToken, JoinHandle<()>)>) {
    if let Some((token, task)) = running {
        token.cancel();
        let _ = task.await;
    }
}

/// This replica's name in the Lease: the pod's name (`HOSTNAME` in a pod), else a random one.
pub fn identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 6];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
            format!(
                "halyard-ca-{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
}

#[cfg(test)]
mod tests;
