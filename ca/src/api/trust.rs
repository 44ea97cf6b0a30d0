//! `TrustService.WatchTrust`: full-state snapshots pushed to a node on every change.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use halyard_proto::api::ca::trust_service_server::TrustService;
use halyard_proto::api::ca::{self, Authority, TrustSnapshot, WatchTrustRequest};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span};

use super::node::bundle_message;
use super::status::store_status;
use super::svid::authenticated_node;
use crate::server::Ca;
use crate::store::{Entry, EntryScope};

/// The trust update service.
pub struct TrustApi {
    ca: Arc<Ca>,
}

impl TrustApi {
    /// The service over `ca`.
    pub fn new(ca: Arc<Ca>) -> TrustApi {
        TrustApi { ca }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<TrustSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl TrustService for TrustApi {
    type WatchTrustStream = SnapshotStream;

    async fn watch_trust(
        &self,
        request: Request<WatchTrustRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let (node, not_after) = authenticated_node(&self.ca, &request).await?;
        self.ca.metrics().request("WatchTrust", tonic::Code::Ok);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let ca = self.ca.clone();
        let span = info_span!("watch_trust", node = %node);
        tokio::spawn(push_snapshots(ca, node, not_after, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends a snapshot at once, then one whenever trust or this node's entries change, until the
/// client goes away. Changes that pile up while a send waits collapse into one snapshot.
async fn push_snapshots(
    ca: Arc<Ca>,
    node: String,
    not_after: SystemTime,
    tx: tokio::sync::mpsc::Sender<Result<TrustSnapshot, Status>>,
) {
    // The stream lasts no longer than the node SVID that opened it.
    let expiry = tokio::time::Instant::now()
        + not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
    let mut trust = ca.watch_trust();
    let mut entries = ca.store().subscribe_entries();
    let mut version = 0u64;
    loop {
        trust.borrow_and_update();
        entries.borrow_and_update();
        version += 1;
        // A ban ends the stream (bans are announced on the entries feed).
        match ca.store().node(&node).await {
            Ok(Some(record)) if record.banned => {
                let _ = tx
                    .send(Err(Status::permission_denied(format!(
                        "node {node} is banned"
                    ))))
                    .await;
                return;
            }
            _ => {}
        }
        let snapshot = match ca.store().entries(EntryScope::ForNode(node.clone())).await {
            Ok(list) => Ok(snapshot(&ca, version, &list)),
            Err(e) => Err(store_status(&e)),
        };
        let failed = snapshot.is_err();
        if tx.send(snapshot).await.is_err() || failed {
            return;
        }
        debug!(version, "pushed trust snapshot");
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep_until(expiry) => {
                let _ = tx
                    .send(Err(Status::unauthenticated(
                        "the node SVID of this stream expired: reconnect with a renewed one",
                    )))
                    .await;
                return;
            }
            changed = trust.changed() => if changed.is_err() { return },
            changed = entries.changed() => if changed.is_err() { return },
        }
    }
}

fn snapshot(ca: &Ca, version: u64, entries: &[Entry]) -> TrustSnapshot {
    let set = ca.authority_set();
    let revocations = ca.revocation_state();
    let mut authorities: Vec<Authority> = set
        .known
        .iter()
        .map(|k| Authority {
            id: k.record.id.clone(),
            certificate: k
                .authority
                .as_ref()
                .and_then(|a| a.chain().first().cloned())
                .unwrap_or_default(),
            state: k.record.state.to_string(),
        })
        .collect();
    if !authorities.iter().any(|a| a.id == set.active.id()) {
        authorities.push(Authority {
            id: set.active.id().to_owned(),
            certificate: set.active.chain().first().cloned().unwrap_or_default(),
            state: "active".to_owned(),
        });
    }
    TrustSnapshot {
        version,
        bundle: Some(bundle_message(ca)),
        authorities,
        crls: revocations
            .crls
            .iter()
            .map(|(_, crl)| crl.clone())
            .collect(),
        revoked: revocations
            .revoked
            .iter()
            .map(|r| ca::RevokedSerial {
                serial: r.serial.clone(),
                expires_at: super::unix_secs(r.not_after),
            })
            .collect(),
        tainted_authorities: set.tainted().map(str::to_owned).collect(),
        entries: entries.iter().map(entry_message).collect(),
    }
}

/// A stored entry as the wire carries it.
pub(super) fn entry_message(entry: &Entry) -> ca::Entry {
    ca::Entry {
        id: entry.id.clone(),
        spiffe_id: entry.spiffe_id.clone(),
        node: entry.node.clone().unwrap_or_default(),
        any_node: entry.node.is_none(),
        selectors: entry
            .selectors
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                Some(ca::Selector {
                    kind: parts.next()?.to_owned(),
                    key: parts.next()?.to_owned(),
                    value: parts.next()?.to_owned(),
                })
            })
            .collect(),
        ttl_seconds: entry.ttl_seconds.unwrap_or(0),
        dns_names: entry.dns_names.clone(),
    }
}
