//! `StreamSecrets`: state-of-the-world SDS. Every response carries every requested resource
//! that the caller may have; withdrawn ones are omitted.

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::entitlements::Entitlements;
use super::subscriptions::{Event, Subscriptions, next_event};
use super::{SECRET_TYPE_URL, check_type_url};
use crate::caller::{AgentState, Caller, shown};

pub(super) async fn serve(
    state: AgentState,
    caller: Caller,
    entitlements: Entitlements,
    mut requests: Streaming<DiscoveryRequest>,
    tx: super::Outgoing<DiscoveryResponse>,
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
                if let Err(status) = check_type_url(&request.type_url) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                // A nonce on the first request answers nothing this stream sent (Envoy clears
                // it on a new stream): ignoring it as stale would leave the stream unanswered.
                if !started && !request.response_nonce.is_empty() {
                    let status = Status::invalid_argument(format!(
                        "response_nonce {} answers no response: this stream has sent none, so its first request must carry no nonce",
                        shown(&request.response_nonce)
                    ));
                    let _ = tx.send(Err(status)).await;
                    return;
                }
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
        if tx.send(Ok(Box::new(response))).await.is_err() {
            return;
        }
        sent = Some(fingerprint);
    }
}
