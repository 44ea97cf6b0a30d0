//! `StreamSecrets`: state-of-the-world SDS. Every response carries every requested resource
//! that the caller may have; withdrawn ones are omitted.

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::SECRET_TYPE_URL;
use super::entitlements::Entitlements;
use super::subscriptions::{Event, Subscriptions, next_event};
use crate::caller::{AgentState, Caller};

pub(super) async fn serve(
    state: AgentState,
    caller: Caller,
    entitlements: Entitlements,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut subscriptions = Subscriptions::new(state, caller, entitlements);
    let mut started = false;
    let mut version = 0u64;
    let mut last_nonce = String::new();
    let mut sent: Option<Vec<(String, String)>> = None;
    loop {
        let event = next_event(&mut requests, &mut subscriptions, started, &tx).await;
        match event {
            Event::Done => return,
            Event::Changed => {}
            Event::Request(request) => {
                if !request.response_nonce.is_empty() {
                    if request.response_nonce != last_nonce {
                        debug!(nonce = %request.response_nonce, "stale nonce; request ignored");
                        continue;
                    }
                    match &request.error_detail {
                        Some(error) => {
                            warn!(version = %request.version_info, error = %error.message, "Envoy rejected the secrets (NACK)")
                        }
                        None => {
                            debug!(version = %request.version_info, "Envoy accepted the secrets (ACK)")
                        }
                    }
                }
                if started && request.resource_names == subscriptions.names() {
                    continue;
                }
                if let Err(status) = subscriptions.set(&request.resource_names).await {
                    info!(names = ?request.resource_names, code = ?status.code(), message = status.message(), "refused");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                started = true;
                sent = None;
            }
        }
        let current = match subscriptions.current().await {
            Ok(current) => current,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        if !current.pending.is_empty() {
            continue;
        }
        let fingerprint: Vec<(String, String)> = current
            .ready
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        if sent.as_ref() == Some(&fingerprint) {
            continue;
        }
        version += 1;
        last_nonce = version.to_string();
        let response = DiscoveryResponse {
            version_info: version.to_string(),
            resources: current.ready.into_iter().map(|r| r.secret).collect(),
            type_url: SECRET_TYPE_URL.to_owned(),
            nonce: last_nonce.clone(),
            ..DiscoveryResponse::default()
        };
        debug!(version, resources = ?fingerprint, withdrawn = ?current.withdrawn, "sending secrets");
        if tx.send(Ok(response)).await.is_err() {
            return;
        }
        sent = Some(fingerprint);
    }
}
