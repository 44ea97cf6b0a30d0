//! Workload attestation: who is calling on the agent's socket, as selectors, and which
//! identities those selectors entitle it to.
//!
//! The [`Attestor`] trait is the seam: [`UnixAttestor`] reads the kernel's peer credentials;
//! a Kubernetes attestor (pod → selectors) plugs in beside it.

mod unix;

use halyard_proto::SpiffeId;
use halyard_proto::api::ca::Entry;

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
}

/// Turns a caller into selectors, e.g. `unix:uid:1000`.
pub trait Attestor: Send + Sync + 'static {
    /// The selectors that describe `workload`.
    fn selectors(&self, workload: &Workload) -> Result<Vec<String>, AttestError>;
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
