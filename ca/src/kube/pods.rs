//! The pod index: which service accounts have pods on which node, from one cluster-wide watch
//! of every pod.
//!
//! It answers the node authorization questions of Kubernetes mode: may the agent (or ztunnel)
//! of node N obtain `spiffe://<td>/ns/<ns>/sa/<sa>`? Only while a pod of that service account
//! is scheduled on N and has not finished. A pod being deleted still counts until it is gone
//! or has finished: it still runs through its grace period, and its proxy may renew meanwhile.
//!
//! Until the first full list of pods has been applied the index is not ready and says so
//! ([`PodIndexError::NotReady`]), so that the APIs answer UNAVAILABLE instead of a wrong yes
//! or no. After that it keeps answering from what it last saw while the watch reconnects, as
//! informers do; a re-list replaces the whole index at once when it completes.
//!
//! Only a few strings per pod are kept (namespace, name, uid, node, service account), never
//! the Pod objects themselves.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use halyard_proto::{SpiffeId, TrustDomain};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::ServiceAccount;

/// Why the index could not answer, or could not name a node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodIndexError {
    /// The first full list of pods has not been seen yet.
    #[error(
        "the pod index has not yet listed the cluster's pods from the Kubernetes API server \
         (it needs list and watch on pods cluster-wide); retry shortly"
    )]
    NotReady,
    /// A token bound to a pod the index does not place on any node.
    #[error(
        "pod {pod}, to which the service-account token is bound, runs on no node the pod index knows"
    )]
    PodNotPlaced {
        /// `namespace/name`.
        pod: String,
    },
    /// A token bound to no pod (neither a node nor a pod name in the TokenReview).
    #[error(
        "the service-account token of {account} is bound to no pod: use a projected token \
         (the API server names its pod and node)"
    )]
    Unbound {
        /// `namespace/name` of the service account.
        account: String,
    },
}

/// One pod as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    uid: String,
    node: String,
    service_account: String,
}

/// `(namespace, name)`: how the API server names a pod.
type PodKey = (String, String);
/// `(namespace, service account)`.
type Account = (String, String);

#[derive(Default)]
struct State {
    /// Whether a full list has been applied.
    ready: bool,
    /// Every pod that counts: scheduled and not finished.
    pods: HashMap<PodKey, Placement>,
    /// Per node, how many counted pods of each service account run there.
    nodes: HashMap<String, HashMap<Account, usize>>,
    /// The pods of a list in progress, applied when it completes.
    relist: Option<HashMap<PodKey, Placement>>,
}

impl State {
    fn insert(&mut self, key: PodKey, placement: Placement) {
        self.remove(&key);
        *self
            .nodes
            .entry(placement.node.clone())
            .or_default()
            .entry((key.0.clone(), placement.service_account.clone()))
            .or_default() += 1;
        self.pods.insert(key, placement);
    }

    fn remove(&mut self, key: &PodKey) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        let Some(accounts) = self.nodes.get_mut(&old.node) else {
            return;
        };
        let account = (key.0.clone(), old.service_account);
        if let Some(count) = accounts.get_mut(&account) {
            *count -= 1;
            if *count == 0 {
                accounts.remove(&account);
            }
        }
        if accounts.is_empty() {
            self.nodes.remove(&old.node);
        }
    }

    fn replace(&mut self, pods: HashMap<PodKey, Placement>) {
        self.pods.clear();
        self.nodes.clear();
        for (key, placement) in pods {
            self.insert(key, placement);
        }
        self.ready = true;
    }
}

/// The pod index; cheap to share behind an `Arc`, fed by [`PodIndex::run`] (or by
/// [`PodIndex::apply`] directly).
pub struct PodIndex {
    state: RwLock<State>,
    applied: watch::Sender<u64>,
}

impl Default for PodIndex {
    fn default() -> PodIndex {
        PodIndex::new()
    }
}

impl PodIndex {
    /// An empty index, not ready until a full list has been applied.
    pub fn new() -> PodIndex {
        PodIndex {
            state: RwLock::new(State::default()),
            applied: watch::Sender::new(0),
        }
    }

    /// Watches every pod through `client` and keeps the index until `shutdown` is cancelled.
    /// API errors are retried with the watcher's backoff; the first of a run is logged at warn.
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let span = info_span!("pod_index");
        async move {
            info!("watching every pod for node authorization");
            let events = watcher::watcher(Api::<Pod>::all(client), watcher::Config::default())
                .default_backoff();
            let mut events = std::pin::pin!(events);
            let mut failures = 0u64;
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = events.next() => next,
                };
                match next {
                    None => return,
                    Some(Ok(event)) => {
                        if failures > 0 {
                            info!(failures, "pod watch restored");
                        }
                        failures = 0;
                        self.apply(event);
                    }
                    Some(Err(e)) => {
                        if failures == 0 {
                            warn!(error = %e, "pod watch failed; retrying with backoff");
                        } else {
                            debug!(error = %e, failures, "pod watch failed again");
                        }
                        failures += 1;
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Applies one watch event.
    pub fn apply(&self, event: Event<Pod>) {
        {
            let mut state = self
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match event {
                Event::Apply(pod) => {
                    if let Some(key) = key(&pod) {
                        match placement(&pod) {
                            Some(placement) => state.insert(key, placement),
                            None => state.remove(&key),
                        }
                    }
                }
                Event::Delete(pod) => {
                    if let Some(key) = key(&pod) {
                        state.remove(&key);
                    }
                }
                Event::Init => state.relist = Some(HashMap::new()),
                Event::InitApply(pod) => {
                    if let (Some(key), Some(placement)) = (key(&pod), placement(&pod)) {
                        state.relist.get_or_insert_default().insert(key, placement);
                    }
                }
                Event::InitDone => {
                    let pods = state.relist.take().unwrap_or_default();
                    let first = !state.ready;
                    state.replace(pods);
                    if first {
                        info!(
                            pods = state.pods.len(),
                            nodes = state.nodes.len(),
                            "pod index ready"
                        );
                    } else {
                        debug!(pods = state.pods.len(), "pod index re-listed");
                    }
                }
            }
        }
        self.applied.send_modify(|n| *n += 1);
    }

    /// Whether a full list has been applied.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// Whether a pod of service account `namespace/service_account` runs on `node`: scheduled
    /// there and not finished.
    pub fn may_hold(
        &self,
        node: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<bool, PodIndexError> {
        let state = self.read();
        if !state.ready {
            return Err(PodIndexError::NotReady);
        }
        let account = (namespace.to_owned(), service_account.to_owned());
        Ok(state
            .nodes
            .get(node)
            .and_then(|accounts| accounts.get(&account))
            .is_some_and(|count| *count > 0))
    }

    /// The node pod `namespace/name` runs on, if the index has it (and, when `uid` is given,
    /// it is that very pod, not a later one of the same name).
    pub fn node_of_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<String>, PodIndexError> {
        let state = self.read();
        if !state.ready {
            return Err(PodIndexError::NotReady);
        }
        Ok(state
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .filter(|placement| uid.is_none_or(|uid| placement.uid == uid))
            .map(|placement| placement.node.clone()))
    }

    /// The node of the pod a service-account token is bound to: as the TokenReview named it
    /// (Kubernetes 1.30 and later), else the node the index places the token's pod on.
    pub fn node_of(&self, account: &ServiceAccount) -> Result<String, PodIndexError> {
        if let Some(node) = &account.node_name {
            return Ok(node.clone());
        }
        let Some(pod) = &account.pod_name else {
            return Err(PodIndexError::Unbound {
                account: account.qualified_name(),
            });
        };
        self.node_of_pod(&account.namespace, pod, account.pod_uid.as_deref())?
            .ok_or_else(|| PodIndexError::PodNotPlaced {
                pod: format!("{}/{pod}", account.namespace),
            })
    }

    /// Counts the events applied so far; changes on every one (tests wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock still holds a consistent state: every update completes under it
        // without calling out.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `(namespace, service account)` of a Kubernetes workload identity of `trust_domain`,
/// `spiffe://<td>/ns/<namespace>/sa/<service account>`; `None` for any other ID.
pub fn workload_account<'a>(
    id: &'a SpiffeId,
    trust_domain: &TrustDomain,
) -> Option<(&'a str, &'a str)> {
    if !id.is_member_of(trust_domain) {
        return None;
    }
    let mut segments = id.path().strip_prefix('/')?.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("ns"), Some(namespace), Some("sa"), Some(account), None) => {
            Some((namespace, account))
        }
        _ => None,
    }
}

/// A pod's `(namespace, name)`; `None` for an object without them (the API server never sends
/// one).
fn key(pod: &Pod) -> Option<PodKey> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

/// What the index keeps of `pod`, or `None` when it does not count: not yet scheduled, or
/// finished (phase Succeeded or Failed).
fn placement(pod: &Pod) -> Option<Placement> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    // The API server fills in `default` when the pod names none; `serviceAccount` is the
    // deprecated spelling of the same field.
    let service_account = [&spec.service_account_name, &spec.service_account]
        .into_iter()
        .flatten()
        .find(|name| !name.is_empty())
        .map_or("default", String::as_str);
    Some(Placement {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: node.to_owned(),
        service_account: service_account.to_owned(),
    })
}

#[cfg(test)]
mod tests;
