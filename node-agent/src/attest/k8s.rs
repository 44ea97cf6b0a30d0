//! Kubernetes pods: a caller's cgroups name its pod and container ([`super::cgroup`]); this
//! node's pods, watched on the API server, describe them as selectors:
//! `k8s:ns:<namespace>`, `k8s:sa:<service account>`, `k8s:pod-name:<name>`,
//! `k8s:pod-uid:<uid>`, `k8s:pod-label:<key>=<value>` (one per label),
//! `k8s:container-name:<name>` and `k8s:node-name:<node>`, next to the unix selectors.
//!
//! In Kubernetes mode the pod's service account also implies the identity
//! `spiffe://<td>/ns/<namespace>/sa/<service account>` with no registration entry; the CA
//! authorizes it by its own index of the node's pods.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use halyard_proto::{SpiffeId, TrustDomain};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cgroup::{self, PodContainer};
use super::unix::start_time;
use super::{AttestError, Attestor, UnixAttestor, Workload};

/// How long a caller in a pod container the agent does not know yet is held before it is
/// refused: the pod's watch event, and the kubelet's status update naming the container, can
/// arrive after the container has started and called.
pub const DEFAULT_POD_WAIT: Duration = Duration::from_secs(10);

/// The annotation a static pod's mirror carries: the kubelet's UID for the pod, which its
/// cgroups show (the API server gives the mirror a UID of its own).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// This node's pods as the attestor sees them: the seam between the API server and tests.
pub trait PodSource: Send + Sync + 'static {
    /// The pods known now.
    fn pods(&self) -> Vec<Arc<Pod>>;
    /// Marked changed whenever the pods known may have changed. Take it before looking, so
    /// that no change between the look and the wait is missed; it closes when the source stops.
    fn changes(&self) -> watch::Receiver<()>;
}

/// This node's pods, kept current by a watch on the API server (`spec.nodeName=<node>`, so the
/// agent sees only its own node's pods and needs only `list`/`watch` on pods).
#[derive(Clone)]
pub struct ApiServerPods {
    store: Store<Pod>,
    changes: watch::Receiver<()>,
}

impl ApiServerPods {
    /// Starts watching `node`'s pods through `client` until `shutdown`. The watch re-lists and
    /// retries with backoff on its own when the API server is unreachable.
    pub fn spawn(client: kube::Client, node: &str, shutdown: CancellationToken) -> ApiServerPods {
        let api: kube::Api<Pod> = kube::Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (store, writer) = reflector::store();
        let (tx, changes) = watch::channel(());
        let events = watcher(api, config).default_backoff().reflect(writer);
        let node = node.to_owned();
        tokio::spawn(async move {
            tokio::pin!(events);
            let mut failing = false;
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(_)) => {
                        failing = false;
                        tx.send_replace(());
                    }
                    Some(Err(e)) if !failing => {
                        failing = true;
                        warn!(node = %node, error = %e, "cannot watch this node's pods; retrying");
                    }
                    Some(Err(e)) => {
                        debug!(node = %node, error = %e, "still cannot watch this node's pods")
                    }
                    None => return,
                }
            }
        });
        ApiServerPods { store, changes }
    }
}

impl PodSource for ApiServerPods {
    fn pods(&self) -> Vec<Arc<Pod>> {
        self.store.state()
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.changes.clone()
    }
}

/// Attests callers by their unix credentials and, for a caller in a pod container on this node,
/// by its pod and container.
pub struct KubernetesAttestor {
    unix: UnixAttestor,
    proc_root: PathBuf,
    pods: Arc<dyn PodSource>,
    node: String,
    trust_domain: TrustDomain,
    wait: Duration,
}

impl KubernetesAttestor {
    /// An attestor for node `node` whose pods `pods` knows; pods' service accounts imply
    /// identities in `trust_domain`.
    pub fn new(
        pods: Arc<dyn PodSource>,
        node: impl Into<String>,
        trust_domain: TrustDomain,
    ) -> KubernetesAttestor {
        KubernetesAttestor {
            unix: UnixAttestor::default(),
            proc_root: PathBuf::from("/proc"),
            pods,
            node: node.into(),
            trust_domain,
            wait: DEFAULT_POD_WAIT,
        }
    }

    /// The same, reading processes under `proc_root` instead of `/proc` (for tests).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> KubernetesAttestor {
        self.proc_root = proc_root.into();
        self.unix = UnixAttestor::with_proc_root(self.proc_root.clone());
        self
    }

    /// The same, waiting at most `wait` for a pod or container it does not know yet.
    pub fn with_wait(mut self, wait: Duration) -> KubernetesAttestor {
        self.wait = wait;
        self
    }

    /// The pod container `pid` runs in, from its cgroups; `None` outside any pod.
    fn container_of(&self, pid: i32) -> Result<Option<PodContainer>, AttestError> {
        let dir = self.proc_root.join(pid.to_string());
        let changed = |reason: String| AttestError::ProcessChanged { pid, reason };
        // As for the unix selectors: a pid reused while its cgroups are read is refused.
        let before = start_time(&dir).map_err(changed)?;
        let contents = std::fs::read_to_string(dir.join("cgroup"))
            .map_err(|e| changed(format!("cannot read its cgroup file: {e}")))?;
        let after = start_time(&dir).map_err(changed)?;
        if before != after {
            return Err(changed("its start time changed: the pid was reused".into()));
        }
        cgroup::parse(&contents).map_err(|e| AttestError::Cgroup {
            pid,
            reason: e.to_string(),
        })
    }

    /// The pod and container `wanted` names, waiting for them up to the attestor's limit.
    async fn find(
        &self,
        pid: i32,
        wanted: &PodContainer,
    ) -> Result<(Arc<Pod>, String), AttestError> {
        let mut changes = self.pods.changes();
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            changes.mark_unchanged();
            let miss = match locate(&self.pods.pods(), wanted) {
                Ok(found) => return Ok(found),
                Err(miss) => miss,
            };
            let more = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(more, Ok(Ok(()))) {
                return Err(AttestError::PodUnknown {
                    pid,
                    container: wanted.to_string(),
                    node: self.node.clone(),
                    waited_secs: self.wait.as_secs(),
                    detail: miss,
                });
            }
        }
    }
}

#[tonic::async_trait]
impl Attestor for KubernetesAttestor {
    async fn selectors(&self, workload: &Workload) -> Result<Vec<String>, AttestError> {
        let mut selectors = self.unix.selectors(workload).await?;
        let Some(pid) = workload.pid else {
            return Ok(selectors);
        };
        let Some(wanted) = self.container_of(pid)? else {
            return Ok(selectors);
        };
        let (pod, container) = self.find(pid, &wanted).await?;
        selectors.extend(pod_selectors(&pod, &container, &self.node));
        Ok(selectors)
    }

    fn implied_identities(&self, selectors: &[String]) -> Vec<SpiffeId> {
        let one = |prefix: &str| {
            let mut values = selectors.iter().filter_map(|s| s.strip_prefix(prefix));
            match (values.next(), values.next()) {
                (Some(value), None) => Some(value),
                _ => None,
            }
        };
        match (one("k8s:ns:"), one("k8s:sa:")) {
            (Some(ns), Some(sa)) => {
                SpiffeId::from_segments(&self.trust_domain, &["ns", ns, "sa", sa])
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The selectors of `container` in `pod` on `node`.
pub fn pod_selectors(pod: &Pod, container: &str, node: &str) -> Vec<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let mut selectors = vec![
        format!("k8s:ns:{}", meta.namespace.as_deref().unwrap_or("default")),
        format!(
            "k8s:sa:{}",
            spec.and_then(|s| s.service_account_name.as_deref())
                .unwrap_or("default")
        ),
        format!("k8s:pod-name:{}", meta.name.as_deref().unwrap_or_default()),
        format!("k8s:pod-uid:{}", meta.uid.as_deref().unwrap_or_default()),
    ];
    for (key, value) in meta.labels.iter().flatten() {
        selectors.push(format!("k8s:pod-label:{key}={value}"));
    }
    selectors.push(format!("k8s:container-name:{container}"));
    selectors.push(format!(
        "k8s:node-name:{}",
        spec.and_then(|s| s.node_name.as_deref()).unwrap_or(node)
    ));
    selectors
}

/// The pod and container name `wanted` names among `pods`, or what was found instead.
fn locate(pods: &[Arc<Pod>], wanted: &PodContainer) -> Result<(Arc<Pod>, String), String> {
    let candidates: Vec<&Arc<Pod>> = match &wanted.pod_uid {
        Some(uid) => pods.iter().filter(|pod| has_uid(pod, uid)).collect(),
        None => pods.iter().collect(),
    };
    for pod in &candidates {
        if let Some(name) = container_name(pod, &wanted.container_id) {
            return Ok(((*pod).clone(), name));
        }
    }
    Err(match (&wanted.pod_uid, candidates.first()) {
        (Some(_), Some(pod)) => format!(
            "pod {}/{} does not list the container in its status",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        (Some(uid), None) => format!("no pod has UID {uid}"),
        (None, _) => "no pod lists the container in its status".to_owned(),
    })
}

fn has_uid(pod: &Pod, uid: &str) -> bool {
    pod.metadata.uid.as_deref() == Some(uid)
        || pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR_ANNOTATION))
            .is_some_and(|hash| hash == uid)
}

/// The name of the container (app, init or ephemeral) of `pod` whose status has container id
/// `id` (`<runtime>://<id>`).
fn container_name(pod: &Pod, id: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let lists: [&Option<Vec<ContainerStatus>>; 3] = [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ];
    lists
        .into_iter()
        .flatten()
        .flatten()
        .find(|c| {
            c.container_id
                .as_deref()
                .and_then(|full| full.split_once("://"))
                .is_some_and(|(_, cid)| cid == id)
        })
        .map(|c| c.name.clone())
}

#[cfg(test)]
mod tests;
