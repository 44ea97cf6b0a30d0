//! `DeltaSecrets`: incremental SDS. Only resources that changed are sent; resources the caller
//! may no longer have are removed.

use std::collections::{HashMap, HashSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tonic::Streaming;
use tracing::{debug, info, warn};

use super::entitlements::Entitlements;
use super::subscriptions::{Event, Subscriptions, next_event};
use super::{SECRET_TYPE_URL, check_type_url};
use crate::caller::{AgentState, Caller};

pub(super) async fn serve(
    state: AgentState,
    caller: Caller,
    entitlements: Entitlements,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: super::Outgoing<DeltaDiscoveryResponse>,
) {
    let mut subscriptions = Subscriptions::new(state, caller, entitlements);
    let mut names: Vec<String> = Vec::new();
    // What Envoy holds, by name: the version last sent (or reported on reconnect).
    let mut held: HashMap<String, String> = HashMap::new();
    let mut started = false;
    let mut nonce = 0u64;
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
                if !request.response_nonce.is_empty() {
                    match &request.error_detail {
                        Some(error) => {
                            warn!(nonce = %request.response_nonce, error = %error.message, "Envoy rejected the secrets (NACK)")
                        }
                        None => {
                            debug!(nonce = %request.response_nonce, "Envoy accepted the secrets (ACK)")
                        }
                    }
                }
                if !started {
                    held.extend(request.initial_resource_versions.clone());
                }
                let before = names.clone();
                // Sets, not list scans: a request may name many thousands (the limit applies
                // to what stays subscribed, below).
                let mut subscribed: HashSet<&str> = names.iter().map(String::as_str).collect();
                let mut added = Vec::new();
                for name in &request.resource_names_subscribe {
                    if subscribed.insert(name) {
                        added.push(name.clone());
                    }
                }
                let unsubscribe: HashSet<&str> = request
                    .resource_names_unsubscribe
                    .iter()
                    .map(String::as_str)
                    .collect();
                names.extend(added);
                names.retain(|n| !unsubscribe.contains(n.as_str()));
                for name in &unsubscribe {
                    held.remove(*name);
                }
                if started && names == before {
                    continue;
                }
                if let Err(status) = subscriptions.set(&names).await {
                    info!(names = ?names, code = ?status.code(), message = status.message(), "refused");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                started = true;
            }
        }
        let current = match subscriptions.current().await {
            Ok(current) => current,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let changed: Vec<_> = current
            .ready
            .into_iter()
            .filter(|r| held.get(&r.name) != Some(&r.version))
            .collect();
        let removed: Vec<String> = current
            .withdrawn
            .into_iter()
            .filter(|name| held.contains_key(name))
            .collect();
        if changed.is_empty() && removed.is_empty() {
            continue;
        }
        for name in &removed {
            held.remove(name);
        }
        for resource in &changed {
            held.insert(resource.name.clone(), resource.version.clone());
        }
        nonce += 1;
        debug!(
            changed = ?changed.iter().map(|r| (&r.name, &r.version)).collect::<Vec<_>>(),
            ?removed,
            "sending secret changes"
        );
        let response = DeltaDiscoveryResponse {
            system_version_info: nonce.to_string(),
            resources: changed
                .into_iter()
                .map(|r| Resource {
                    name: r.name,
                    version: r.version,
                    resource: Some(r.secret),
                    ..Resource::default()
                })
                .collect(),
            type_url: SECRET_TYPE_URL.to_owned(),
            removed_resources: removed,
            nonce: nonce.to_string(),
            ..DeltaDiscoveryResponse::default()
        };
        if tx.send(Ok(Box::new(response))).await.is_err() {
            return;
        }
    }
}
