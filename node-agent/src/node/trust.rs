//! Trust snapshots from the CA's `WatchTrust`, published to the cache; reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use halyard_proto::TrustDomain;
use halyard_proto::api::ca::trust_service_client::TrustServiceClient;
use halyard_proto::api::ca::{TrustSnapshot, WatchTrustRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::NodeClient;
use crate::cache::TrustState;
use crate::cache::timing::{backoff, draw};

/// Follows `WatchTrust` and publishes every snapshot on `tx` until `shutdown`.
pub async fn watch_trust(
    client: NodeClient,
    tx: watch::Sender<Arc<TrustState>>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = follow(&client, &tx) => r,
        };
        failures += 1;
        let wait = backoff(
            failures,
            Duration::from_millis(500),
            Duration::from_secs(30),
            draw(),
        );
        match result {
            Ok(()) => debug!("WatchTrust ended; reconnecting"),
            Err(e) if failures == 1 => {
                warn!(error = %e, retry_in = ?wait, "lost WatchTrust; keeping the last trust state")
            }
            Err(e) => debug!(error = %e, retry_in = ?wait, "still cannot reach WatchTrust"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if tx.borrow().version > 0 {
            failures = failures.min(3);
        }
    }
}

async fn follow(client: &NodeClient, tx: &watch::Sender<Arc<TrustState>>) -> Result<(), String> {
    let mut stream = TrustServiceClient::new(client.channel())
        .watch_trust(WatchTrustRequest {})
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    while let Some(snapshot) = stream
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
    {
        let state = to_state(snapshot);
        if let Err(e) = client.update_bundle(&state.roots) {
            warn!(error = %e, "cannot store the new trust bundle");
        }
        info!(
            version = state.version,
            entries = state.entries.len(),
            roots = state.roots.len(),
            "trust snapshot"
        );
        tx.send_replace(Arc::new(state));
    }
    Ok(())
}

fn to_state(snapshot: TrustSnapshot) -> TrustState {
    let bundle = snapshot.bundle.unwrap_or_default();
    TrustState {
        version: snapshot.version,
        trust_domain: TrustDomain::new(&bundle.trust_domain).ok(),
        roots: bundle.roots,
        crls: snapshot.crls,
        revoked: snapshot.revoked.into_iter().map(|r| r.serial).collect(),
        tainted: snapshot.tainted_authorities,
        entries: snapshot.entries,
    }
}
