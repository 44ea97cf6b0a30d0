//! Workload attestation: who is calling on the agent's socket, as selectors, and which
//! identities those selectors entitle it to.
//!
//! The [`Attestor`] trait is the seam: [`UnixAttestor`] reads the kernel's peer credentials;
//! [`KubernetesAttestor`] adds the pod and container the caller runs in ([`cgroup`] finds them
//! from its cgroups, a watch on the API server describes them).

pub mod cgroup;
pub mod k8s;
mod unix;

use halyard_proto::SpiffeId;
use halyard_proto::api::ca::Entry;

pub use k8s::{ApiServerPods, KubernetesAttestor, PodSource};
pub use unix::UnixAttestor;

/// The caller at the other end of a socket connection, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Its process, when the kernel says (absent for some socket kinds).
    pub pid: Option<i32>,
    /// Its effective user.
    pub uid: u32,
    /// Its effective group.
    pub gid: u32,
}

/// Why a caller could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The connection carried no peer credentials.
    #[error("the caller's credentials are unknown: connect over the agent's unix socket")]
    NoCredentials,
    /// The calling process went away (or its pid was reused) while it was being looked at.
    #[error("process {pid} changed while it was being attested: {reason}")]
    ProcessChanged {
        /// The pid.
        pid: i32,
        /// What changed.
        reason: String,
    },
    /// The caller's cgroups place it in a container that cannot be trusted as one.
    #[error("process {pid}: {reason}")]
    Cgroup {
        /// The pid.
        pid: i32,
        /// What is wrong with its cgroups.
        reason: String,
    },
    /// The caller runs in a pod container that this node's pods do not show (yet): a pod
    /// this new may not have reached the agent, or its status may not name the container yet.
    #[error(
        "process {pid} runs in {container}, which no pod of node {node} shows after waiting {waited_secs} s: {detail}"
    )]
    PodUnknown {
        /// The pid.
        pid: i32,
        /// The container, as its cgroups name it.
        container: String,
        /// This node.
        node: String,
        /// How long the attestor waited for it.
        waited_secs: u64,
        /// What was found instead.
        detail: String,
    },
}

/// Turns a caller into selectors, e.g. `unix:uid:1000`.
#[tonic::async_trait]
pub trait Attestor: Send + Sync + 'static {
    /// The selectors that describe `workload`. May wait a little for what it needs (a pod the
    /// agent has not heard of yet).
    async fn selectors(&self, workload: &Workload) -> Result<Vec<String>, AttestError>;

    /// The identities a workload with `selectors` holds without any registration entry: none,
    /// unless the attestor says otherwise (in Kubernetes mode, its pod's service account).
    fn implied_identities(&self, selectors: &[String]) -> Vec<SpiffeId> {
        let _ = selectors;
        Vec::new()
    }
}

/// The SPIFFE IDs a workload with `selectors` may hold: those of every entry whose selectors it
/// all has, in entry order, without repeats.
pub fn entitled(entries: &[Entry], selectors: &[String]) -> Vec<SpiffeId> {
    let mut ids: Vec<SpiffeId> = Vec::new();
    for entry in entries {
        let matches = !entry.selectors.is_empty()
            && entry.selectors.iter().all(|s| {
                let wanted = format!("{}:{}:{}", s.kind, s.key, s.value);
                selectors.contains(&wanted)
            });
        if matches
            && let Ok(id) = SpiffeId::new(&entry.spiffe_id)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

#[cfg(test)]
mod tests;
